-- Tensors against plain Lua references, NaN and ±inf included.
local T = require("agt.tensor")
local R = require("agt.rng")

local inf, nan = math.huge, 0 / 0

local function f32(x) -- round a Lua number to float32 as the engine stores it
  local t = T.new({ 1 })
  t[1] = x
  return t[1]
end

local function random_values(r, n, specials)
  local v = {}
  for i = 1, n do
    local u = r:double()
    if specials and u < 0.05 then v[i] = nan
    elseif specials and u < 0.08 then v[i] = inf
    elseif specials and u < 0.11 then v[i] = -inf
    else v[i] = f32((r:double() - 0.5) * 200) end
  end
  return v
end

local function same(a, b)
  if a ~= a then return b ~= b end
  return a == b
end

local function close(a, b, rel)
  if a ~= a or b ~= b then return a ~= a and b ~= b end
  if a == b then return true end
  return math.abs(a - b) <= (rel or 1e-9) * math.max(1, math.abs(a), math.abs(b))
end

describe("agt.tensor", function()
  local r = R.new(42, "tensor-spec")

  it("creates zeroed tensors of each dtype with shape and numel", function()
    for _, dt in ipairs({ "f32", "i32", "u8", "i64" }) do
      local t = T.new({ 3, 4, 5 }, dt)
      assert.are.equal(dt, t.dtype)
      assert.are.same({ 3, 4, 5 }, t.shape)
      assert.are.equal(60, t:numel())
      assert.are.equal(60, #t)
      assert.are.equal(3, t:dim())
      for i = 1, 60 do assert.are.equal(0, t[i]) end
    end
  end)

  it("refuses bad shapes and dtypes with a clear error", function()
    assert.has_error(function() T.new({ -1 }) end, "dimension 1 must be a non-negative integer, got -1")
    assert.has_error(function() T.new({ 2 }, "f16") end)
    assert.has_error(function() T.new({ 1, 1, 1, 1, 1, 1, 1, 1, 1 }) end)
  end)

  it("indexes 1-based and checks bounds", function()
    local t = T.from_table({ { 1, 2, 3 }, { 4, 5, 6 } })
    assert.are.same({ 2, 3 }, t.shape)
    assert.are.equal(5, t[5])
    t[5] = 50
    assert.are.equal(50, t[5])
    assert.has_error(function() return t[7] end)
    assert.has_error(function() t[0] = 1 end)
  end)

  it("gives row views that share storage", function()
    local t = T.from_table({ { 1, 2, 3 }, { 4, 5, 6 } })
    local row = t:row(2)
    assert.are.same({ 3 }, row.shape)
    assert.are.same({ 4, 5, 6 }, row:totable())
    row[1] = 40
    assert.are.equal(40, t[4])
    t:free() -- the view keeps the storage alive
    assert.are.same({ 40, 5, 6 }, row:totable())
    local g = T.new({ 5, 2 })
    for i = 1, 10 do g[i] = i end
    assert.are.same({ 3, 4, 5, 6 }, g:narrow(2, 2):totable())
    assert.are.same({ 2, 5 }, g:reshape({ 2, 5 }).shape)
    assert.has_error(function() g:row(6) end)
    assert.has_error(function() g:narrow(5, 2) end)
  end)

  it("sums, means, norms and dots like a plain Lua reference (finite values)", function()
    for _, n in ipairs({ 1, 7, 33, 1000, 70001 }) do
      local v = random_values(r, n, false)
      local w = random_values(r, n, false)
      local t, u = T.from_table(v), T.from_table(w)
      local s, sq, s1, dot, mx, mn = 0, 0, 0, 0, -inf, inf
      for i = 1, n do
        s = s + v[i]; sq = sq + v[i] * v[i]; s1 = s1 + math.abs(v[i]); dot = dot + v[i] * w[i]
        mx = math.max(mx, v[i]); mn = math.min(mn, v[i])
      end
      assert.is_true(close(t:sum(), s, 1e-9))
      assert.is_true(close(t:mean(), s / n, 1e-9))
      assert.is_true(close(t:norm(), math.sqrt(sq), 1e-9))
      assert.is_true(close(t:norm(1), s1, 1e-9))
      assert.is_true(close(t:dot(u), dot, 1e-9))
      assert.are.equal(mx, t:max())
      assert.are.equal(mn, t:min())
    end
  end)

  it("propagates NaN and ±inf through reductions as IEEE arithmetic does", function()
    for _ = 1, 20 do
      local n = 1 + r:below(300)
      local v = random_values(r, n, true)
      local t = T.from_table(v)
      local s, sq, has_nan = 0, 0, false
      for i = 1, n do s = s + v[i]; sq = sq + v[i] * v[i]; if v[i] ~= v[i] then has_nan = true end end
      assert.is_true(same(t:sum(), s) or close(t:sum(), s, 1e-9))
      assert.is_true(same(t:norm(), math.sqrt(sq)) or close(t:norm(), math.sqrt(sq), 1e-9))
      if has_nan then
        assert.is_true(t:max() ~= t:max())
        assert.is_true(t:min() ~= t:min())
      end
    end
  end)

  it("does element-wise ops like a plain Lua reference, specials included", function()
    for _, n in ipairs({ 5, 63, 4097 }) do
      local v, w = random_values(r, n, true), random_values(r, n, true)
      local a, b = T.from_table(v), T.from_table(w)
      local c = a:clone():add(b)
      local d = a:clone():sub(b)
      local e = a:clone():mul(b)
      local g = a:clone():axpy(0.5, b)
      local h = a:clone():scale(-3)
      for i = 1, n do
        assert.is_true(same(c[i], f32(v[i] + w[i])))
        assert.is_true(same(d[i], f32(v[i] - w[i])))
        assert.is_true(same(e[i], f32(v[i] * w[i])))
        assert.is_true(same(g[i], f32(v[i] + f32(0.5 * w[i]))))
        assert.is_true(same(h[i], f32(v[i] * -3)))
      end
    end
  end)

  it("fills, copies and compares with tolerance", function()
    local a = T.new({ 100 }):fill(2.5)
    assert.are.equal(250, a:sum())
    local b = T.new({ 100 }):copy(a)
    assert.is_true(b:allclose(a))
    b[7] = 2.5 + 1e-3
    assert.is_false(b:allclose(a, 1e-5, 1e-8))
    assert.is_true(b:allclose(a, 1e-3, 0))
    a[3], b[3] = nan, nan
    b[7] = 2.5
    assert.is_true(b:allclose(a))
    a[4], b[4] = inf, -inf
    assert.is_false(b:allclose(a))
    b[4] = inf
    assert.is_true(b:allclose(a))
    assert.has_error(function() a:copy(T.new({ 99 })) end)
  end)

  it("multiplies matrices through BLAS like the naive triple loop", function()
    for _, dims in ipairs({ { 3, 4, 5 }, { 17, 1, 9 }, { 32, 33, 31 } }) do
      local m, k, n = dims[1], dims[2], dims[3]
      for _, ta in ipairs({ false, true }) do
        for _, tb in ipairs({ false, true }) do
          local A = r:uniform(T.new(ta and { k, m } or { m, k }), -1, 1)
          local B = r:uniform(T.new(tb and { n, k } or { k, n }), -1, 1)
          local Cm = r:uniform(T.new({ m, n }), -1, 1)
          local C0 = Cm:clone()
          T.gemm(ta, tb, 1.5, A, B, 0.5, Cm)
          for i = 1, m do
            for j = 1, n do
              local s = 0
              for l = 1, k do
                local aij = ta and A[(l - 1) * m + i] or A[(i - 1) * k + l]
                local blj = tb and B[(j - 1) * k + l] or B[(l - 1) * n + j]
                s = s + aij * blj
              end
              local want = 1.5 * s + 0.5 * C0[(i - 1) * n + j]
              assert.is_true(math.abs(Cm[(i - 1) * n + j] - want) < 1e-4 * (1 + math.abs(want)))
            end
          end
        end
      end
    end
    assert.has_error(function() T.gemm(false, false, 1, T.new({ 2, 3 }), T.new({ 2, 3 }), 0, T.new({ 2, 3 })) end)
  end)

  it("computes row means and standard deviations like the reference", function()
    local n, d = 7, 1500
    local G = r:normal(T.new({ n, d }), 1, 3)
    local mean, std = T.new({ d }), T.new({ d })
    T.rows_mean(G, mean)
    T.rows_std(G, mean, 1, std)
    for j = 1, d, 37 do
      local s = 0
      for i = 1, n do s = s + G[(i - 1) * d + j] end
      local mu = s / n
      local v = 0
      for i = 1, n do v = v + (G[(i - 1) * d + j] - mu) ^ 2 end
      assert.is_true(close(mean[j], f32(mu), 1e-6))
      assert.is_true(close(std[j], f32(math.sqrt(v / (n - 1))), 1e-5))
    end
  end)

  it("gives the same sums whatever the thread count", function()
    local P = require("agt.pool")
    local t = r:normal(T.new({ 3000001 }), 0, 1)
    local sums = {}
    for _, th in ipairs({ 1, 2, 3, 5 }) do
      P.set_threads(th)
      sums[#sums + 1] = t:sum()
      assert.are.equal(th, P.threads())
    end
    P.set_threads(0)
    for i = 2, #sums do assert.are.equal(sums[1], sums[i]) end
  end)

  it("prints a readable summary", function()
    local t = T.from_table({ 1, 2, 3 })
    local s = tostring(t)
    assert.truthy(s:find("f32", 1, true))
    assert.truthy(s:find("[1, 2, 3]", 1, true))
    t[2] = nan
    assert.truthy(tostring(t):find("1 non-finite", 1, true))
  end)

  it("knows its device: cpu by default, explicit copies with :to, the device in its name", function()
    local t = T.from_table({ { 1, nan, 3 }, { inf, -inf, 6 } })
    assert.are.equal("cpu", t.device)
    assert.truthy(tostring(t):find("2x3, cpu", 1, true), tostring(t))
    local c = t:to("cpu")        -- a copy, even on the same device
    assert.are.equal("cpu", c.device)
    assert.are.same({ 2, 3 }, c.shape)
    c[1] = 10
    assert.are.equal(1, t[1])
    for i = 2, 6 do assert.is_true(same(c[i], t[i])) end
    assert.are.equal("cpu", T.new({ 2 }, "f32", "cpu").device)
    assert.has_error(function() T.new({ 2 }, "f32", "tpu") end, "unknown device 'tpu' (known: cpu, cuda, cuda:0, gpu)")
    assert.has_error(function() t:to("tpu") end)
  end)

  -- The Lua side's refusals, checked with a stand-in that only says it is on cuda:0 (no
  -- engine handle, no memory: every path below must refuse before touching either).
  it("refuses host access and ops its device lacks on a CUDA tensor, and ops across devices", function()
    local ffi = require("ffi")
    local g = ffi.new("agt_lua_tensor")
    g.dev, g.dix, g.n, g.nd, g.dims[0], g.dt = 1, 0, 3, 1, 3, 0
    assert.are.equal("cuda:0", g.device)
    local host = 'needs host memory, but the tensor is on cuda:0: call :to("cpu") first'
    assert.has_error(function() return g[1] end, "element access " .. host)
    assert.has_error(function() g[1] = 2 end, "element access " .. host)
    assert.has_error(function() return g.ptr end, "t.ptr " .. host)
    assert.has_error(function() return g.data end, "t.data " .. host)
    assert.has_error(function() g:totable() end, "totable " .. host)
    assert.has_error(function() g:pin() end, "pin " .. host)
    -- an op the device lacks is refused by name, with the ones it has
    local ok, err = pcall(function() return g:max() end)
    assert.is_false(ok)
    assert.truthy(tostring(err):find('vec.max has no kernel on cuda (vec there: ', 1, true), tostring(err))
    assert.truthy(tostring(err):find('copy the tensors with :to("cpu")', 1, true), tostring(err))
    local t = T.from_table({ 1, 2, 3 })
    assert.has_error(function() t:add(g) end, "vec.add: tensors on two devices (cpu and cuda:0); copy one with :to()")
    assert.has_error(function() g:dot(t) end, "vec.dot: tensors on two devices (cuda:0 and cpu); copy one with :to()")
    assert.has_error(function() T.rows_mean(T.new({ 1, 3 }), g) end,
                     "rows_mean: tensors on two devices (cpu and cuda:0); copy one with :to()")
    local O = require("agt.optim").new("adam", {}, 3)
    -- the step moves its slots to theta's device: with no device that copy fails, with one the
    -- kernel refuses the stand-in's null pointer (spec/backend_spec.lua runs a real one)
    assert.has_error(function() O:step(g, g, 0.1) end)
    assert.has_error(function() O:step(t, g, 0.1) end, "optimizer step: theta and g on two devices (cpu and cuda:0)")
    assert.are.same({ 1, 2, 3 }, t:totable())
  end)

  it("without a GPU, refuses device tensors and pins with the reason, and leaves the host tensor whole", function()
    local ok, why = require("agt.gpu").available()
    if ok then
      pending("a GPU is present: spec/gpu_spec.lua tests device tensors")
      return
    end
    why = why:gsub("^[^:]*:%d+: ", "")   -- the reason, without the file:line that said it
    local okn, msg = pcall(T.new, { 4 }, "f32", "cuda")
    assert.is_false(okn)
    assert.truthy(msg:find(why, 1, true), msg)
    local t = T.from_table({ 1, 2, 3 })
    assert.has_error(function() t:to("cuda") end)
    local pinned, perr = t:pin()
    assert.is_nil(pinned)
    assert.truthy(perr:find(why, 1, true), perr)
    assert.is_false(t.pinned)
    assert.are.same({ 1, 2, 3 }, t:totable())
  end)

  it("accounts engine memory and frees it", function()
    local M = require("agt.mem")
    collectgarbage(); collectgarbage()
    local before = M.in_use()
    local t = T.new({ 1000, 1000 })
    assert.is_true(M.in_use() >= before + 4e6)
    t:free()
    assert.are.equal(before, M.in_use())
    t:free() -- twice is harmless
  end)

  it("wraps memory it does not own: shared both ways, never freed, views keep working", function()
    local ffi = require("ffi")
    local buf = ffi.new("float[6]", { 1, 2, 3, 4, 5, 6 })
    local M = require("agt.mem")
    local before = M.in_use()
    local t = T.wrap(buf, { 2, 3 })
    assert.are.equal(6, #t)
    assert.are.equal("cpu", t.device)
    assert.are.equal(before, M.in_use())     -- no engine memory taken
    t[2] = 20
    assert.are.equal(20, buf[1])
    buf[5] = 60
    assert.are.equal(60, t[6])
    local r = t:row(2)
    t:free()
    assert.are.same({ 4, 5, 60 }, r:totable())
    r:free()
    assert.are.equal(3, buf[2])              -- the caller's bytes are still there
    assert.has_error(function() T.wrap(nil, { 3 }) end)
    assert.has_error(function() T.wrap(buf, { -1 }) end)
  end)
end)
