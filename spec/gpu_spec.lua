-- gpu_spec — every aggregation rule and pre-aggregation step on the GPU against the CPU kernels
-- (src/gar.h), on random inputs with ties, NaN rows and +-inf entries, n from the smallest the
-- rule allows to past 64 (the general paths), d not a multiple of any vector width.
--
-- Tolerances: per-coordinate rules, row choices, averages of chosen rows, NNM and bucketing are
-- bit-identical to the CPU (NaN equals NaN; +0 and -0 are equal); the CPU and the GPU compute
-- distances differently, so clipping and ARC agree to 1e-6 (a scale factor may differ in its last
-- bit), and the iterative rules (exact iterates on the GPU, float iterates
-- on the CPU) to 1e-4 relative, the geometric median's iteration count to within one.
--
-- Device memory is agt.tensor's (T.new(shape, "f32", "cuda"), t:to("cuda")); kernels take
-- t:pointer(). Tagged #gpu. With no device (CI), it prints the reason and every test is
-- pending, not passed.
local gpu = require("agt.gpu")
local A = require("agt.aggregators")
local T = require("agt.tensor")
local R = require("agt.rng")
local F = require("agt.ffi")
local ffi, C = F.ffi, F.C

local ok, why = gpu.available()
if not ok then
  io.write("gpu_spec: GPU tests pending: " .. tostring(why) .. "\n")
end

local function test(name, fn)
  if ok then it(name, fn) else pending(name .. " (no GPU: " .. tostring(why) .. ")") end
end

local D = 4099   -- columns: not a multiple of 4, 8, 16 or 32

-- n x d: normal values; quantized (ties) if asked; NaN row, +inf / -inf entries if asked.
local function input(seed, n, d, opts)
  opts = opts or {}
  local G = T.new({ n, d })
  R.new(seed, "gpu_spec"):normal(G, 0, 1)
  local p = G.ptr
  if opts.ties then
    for e = 0, n * d - 1 do p[e] = math.floor(p[e] * 2) / 2 end
  end
  if opts.special and n >= 4 then
    for c = 0, d - 1 do p[(n - 1) * d + c] = 0 / 0 end            -- a NaN row
    for c = 0, d - 1, 3 do p[(n - 2) * d + c] = math.huge end      -- +inf entries
    for c = 1, d - 1, 5 do p[(n - 3) * d + c] = -math.huge end     -- -inf entries
  end
  return G
end

local function bits_equal(a, b)   -- NaN = NaN, inf = inf, -0 = +0
  return C.agt_vec_allclose(a.ptr, b.ptr, a:numel(), 0, 0) == 1
end

local function close(a, b, rtol, atol)
  return C.agt_vec_allclose(a.ptr, b.ptr, a:numel(), rtol, atol or rtol) == 1
end

local function first_diff(a, b)
  local pa, pb = a.ptr, b.ptr
  for i = 0, a:numel() - 1 do
    local x, y = pa[i], pb[i]
    if not (x == y or (x ~= x and y ~= y)) then
      return string.format("first difference at %d: gpu %.9g cpu %.9g", i, x, y)
    end
  end
  return "no difference"
end

local function dev(shape) return T.new(shape, "f32", "cuda") end

-- Runs fn_gpu(Gd pointer, out_d pointer) and fn_cpu(G ptr, out ptr) and compares.
local function compare(G, rows_out, fn_cpu, fn_gpu, tol, what)
  local n, d = G:size(1), G:size(2)
  local shape = rows_out and { rows_out, d } or { d }
  local cpu, back = T.new(shape), T.new(shape)
  local Gd, outd = G:to("cuda"), dev(shape)
  F.check(fn_cpu(G.ptr, cpu.ptr))
  F.check(fn_gpu(Gd:pointer(), outd:pointer()))
  back:copy(outd)
  Gd:free(); outd:free()
  if tol then
    assert.is_true(close(back, cpu, tol), what .. ": " .. first_diff(back, cpu))
  else
    assert.is_true(bits_equal(back, cpu), what .. ": " .. first_diff(back, cpu))
  end
end

describe("gpu #gpu", function()
  if ok then
    it("names the device", function()
      local name = gpu.describe()
      assert.is_string(name)
      io.write("\n  device: ", name, "\n")
    end)
  end

  local coord_cases = {
    { "average", function(n, f) return C.agt_gar_average, C.agt_gpu_gar_average, {} end },
    { "average-nan", function(n, f) return C.agt_gar_average_nan, C.agt_gpu_gar_average_nan, {} end },
    { "median", function(n, f) return C.agt_gar_median, C.agt_gpu_gar_median, {} end },
    { "trimmed-mean", function(n, f) return C.agt_gar_trimmed_mean, C.agt_gpu_gar_trimmed_mean, { f } end },
    { "meamed", function(n, f) return C.agt_gar_meamed, C.agt_gpu_gar_meamed, { n - f } end },
    { "phocas", function(n, f) return C.agt_gar_phocas, C.agt_gpu_gar_phocas, { f } end },
  }
  for _, case in ipairs(coord_cases) do
    local name, get = case[1], case[2]
    test(name .. " is bit-identical to the CPU (ties, NaN, +-inf; n = 1 .. 70)", function()
      local seed = 1
      for _, n in ipairs({ 1, 2, 3, 5, 8, 11, 16, 17, 25, 32, 33, 51, 64, 70 }) do
        local f = math.max(0, math.floor((n - 1) / 2) - (n % 3))
        for _, opts in ipairs({ { ties = true }, { special = true }, { ties = true, special = true } }) do
          seed = seed + 1
          local G = input(seed, n, D, opts)
          local cpu, gpuf, extra = get(n, f)
          local function call(fn, g, o)
            local a = { g, n, D }
            for _, x in ipairs(extra) do a[#a + 1] = x end
            a[#a + 1] = o
            return fn(unpack(a, 1, #a))
          end
          compare(G, nil,
            function(g, o) return call(cpu, g, o) end,
            function(g, o) return call(gpuf, g, o) end,
            nil, string.format("%s n=%d f=%d ties=%s special=%s", name, n, f,
                               tostring(opts.ties), tostring(opts.special)))
        end
      end
    end)
  end

  test("rows-meamed (Bulyan's last stage) is bit-identical to the CPU", function()
    local n = 20
    local G = input(77, n, D, { ties = true, special = true })
    local rows = ffi.new("int64_t[7]", { 3, 19, 0, 7, 18, 11, 5 })
    compare(G, nil,
      function(g, o) return C.agt_gar_rows_meamed(g, D, rows, 7, 3, o) end,
      function(g, o) return C.agt_gpu_gar_rows_meamed(g, D, rows, 7, 3, o) end, nil, "rows-meamed")
  end)

  -- Row-choosing rules: the same rows, then the same output bits; d = D (4-byte copies in the
  -- distance pass) and D + 1 (a multiple of 4: the 16-byte copy path).
  local function choose_case(name, minn, k_of, cpu_call, gpu_call, dims)
    test(name .. " chooses the CPU's rows and matches its output bits", function()
      local seed = 100
      for _, d in ipairs(dims or { D }) do
        for _, n in ipairs({ minn, minn + 1, 11, 25, 40, 51, 64 }) do
          for _, f in ipairs({ 0, 1, 2, 5, 12 }) do
            if n >= minn and ((name ~= "bulyan" and n >= f + 3) or n >= 4 * f + 3)
               and not (name == "mda" and f > 2) then
              seed = seed + 1
              local G = input(seed, n, d, { special = (seed % 2 == 0) and n >= 8 })
              local k = k_of(n, f)
              local sc, sg = ffi.new("int64_t[?]", k), ffi.new("int64_t[?]", k)
              compare(G, nil,
                function(g, o) return cpu_call(g, n, f, o, sc, d) end,
                function(g, o) return gpu_call(g, n, f, o, sg, d) end, nil,
                string.format("%s n=%d f=%d d=%d", name, n, f, d))
              for i = 0, k - 1 do
                assert.are.equal(tonumber(sc[i]), tonumber(sg[i]),
                                 string.format("%s n=%d f=%d d=%d: choice %d", name, n, f, d, i + 1))
              end
            end
          end
        end
      end
    end)
  end
  choose_case("krum", 3, function() return 1 end,
    function(g, n, f, o, s, d) return C.agt_gar_multi_krum(g, n, d, f, 1, o, s) end,
    function(g, n, f, o, s, d) return C.agt_gpu_gar_multi_krum(g, n, d, f, 1, o, s) end, { D, D + 1 })
  choose_case("multi-krum", 3, function(n, f) return n - f end,
    function(g, n, f, o, s, d) return C.agt_gar_multi_krum(g, n, d, f, n - f, o, s) end,
    function(g, n, f, o, s, d) return C.agt_gpu_gar_multi_krum(g, n, d, f, n - f, o, s) end, { D, D + 1 })
  choose_case("bulyan", 3, function(n, f) return n - 2 * f end,
    function(g, n, f, o, s, d) return C.agt_gar_bulyan(g, n, d, f, o, s) end,
    function(g, n, f, o, s, d) return C.agt_gpu_gar_bulyan(g, n, d, f, o, s) end, { D, D + 1 })
  choose_case("cge", 3, function(n, f) return n - f end,
    function(g, n, f, o, s, d) return C.agt_gar_cge(g, n, d, f, o, s) end,
    function(g, n, f, o, s, d) return C.agt_gpu_gar_cge(g, n, d, f, o, s) end)
  choose_case("mda", 3, function(n, f) return n - f end,
    function(g, n, f, o, s, d) return C.agt_gar_mda(g, n, d, f, 1e6, o, s) end,
    function(g, n, f, o, s, d) return C.agt_gpu_gar_mda(g, n, d, f, 1e6, o, s) end)

  test("sqdist agrees with the CPU's distances (d = D and D + 1)", function()
    for _, d in ipairs({ D, D + 1 }) do
      for _, n in ipairs({ 1, 2, 9, 10, 11, 25, 33, 40, 45, 51, 64, 70 }) do
        local G = input(300 + n, n, d)
        if n >= 3 then   -- the last two rows 1e-3 apart: a close pair, recomputed exactly
          local p = G.ptr
          for c = 0, d - 1 do p[(n - 1) * d + c] = p[(n - 2) * d + c] + 1e-3 * math.sin(c) end
        end
        local a, b = ffi.new("double[?]", n * n), ffi.new("double[?]", n * n)
        F.check(C.agt_gar_sqdist(G.ptr, n, d, a))
        local Gd = G:to("cuda")
        F.check(C.agt_gpu_gar_sqdist(Gd:pointer(), n, d, b))
        Gd:free()
        for e = 0, n * n - 1 do
          assert.is_true(math.abs(a[e] - b[e]) <= 1e-5 * math.max(1, a[e]),
                         string.format("n=%d d=%d entry %d: cpu %.10g gpu %.10g", n, d, e, a[e], b[e]))
        end
      end
    end
  end)

  -- The Gram pass (17 to 64 rows) against sums of squared differences in double: d large enough
  -- that every warp of the fixed grid takes several chunks (d = 300000: 16-byte copies; 300001:
  -- 4-byte copies), rows sharing a common offset (the centring on row 0 must cancel it), an
  -- identical pair (recomputed exactly: 0), non-finite entries (+inf for their pairs, the other
  -- pairs exact), and two calls giving the same bits.
  test("sqdist of 17-64 rows: a naive double reference, NaN and +-inf, the same bits twice", function()
    local function naive(p, n, d)
      local ref = {}
      for i = 0, n - 1 do
        for j = i + 1, n - 1 do
          local s, a, b = 0, i * d, j * d
          for c = 0, d - 1 do
            local v = p[a + c] - p[b + c]
            s = s + v * v
          end
          ref[i * n + j] = s
        end
      end
      return ref
    end
    for _, case in ipairs({ { 51, 300000 }, { 33, 300001 }, { 64, 70000 }, { 17, 4100 },
                            { 51, 300000, true }, { 40, 70001, true } }) do
      local n, d, special = case[1], case[2], case[3]
      local G = input(1000 + n + d % 7, n, d, { special = special })
      local p = G.ptr
      for e = 0, n * d - 1 do
        if p[e] == p[e] and p[e] > -math.huge and p[e] < math.huge then p[e] = p[e] + 3 end
      end
      for c = 0, d - 1 do p[5 * d + c] = p[2 * d + c] end   -- rows 2 and 5 identical
      local ref = naive(p, n, d)
      local Gd = G:to("cuda")
      local a, b = ffi.new("double[?]", n * n), ffi.new("double[?]", n * n)
      F.check(C.agt_gpu_gar_sqdist(Gd:pointer(), n, d, a))
      F.check(C.agt_gpu_gar_sqdist(Gd:pointer(), n, d, b))
      Gd:free()
      local what = string.format("n=%d d=%d special=%s", n, d, tostring(special))
      for i = 0, n - 1 do
        assert.are.equal(0, a[i * n + i], what .. ": diagonal")
        for j = i + 1, n - 1 do
          local r, g = ref[i * n + j], a[i * n + j]
          local at = string.format("%s (%d, %d): naive %.10g gpu %.10g", what, i, j, r, g)
          assert.are.equal(g, a[j * n + i], at .. ": symmetric")
          assert.is_true(g == b[i * n + j], at .. ": second call " .. tostring(b[i * n + j]))
          if r ~= r or r == math.huge then
            assert.are.equal(math.huge, g, at)
          else
            assert.is_true(math.abs(g - r) <= 1e-5 * math.max(1, r), at)
          end
        end
      end
      assert.are.equal(0, a[2 * n + 5], what .. ": identical rows")
    end
  end)

  test("nnm is bit-identical to the CPU (finite rows, and exact lists where one is not)", function()
    for _, d in ipairs({ D, D + 1 }) do   -- one coordinate per thread, and pairs (8-byte loads)
      for _, n in ipairs({ 1, 4, 11, 25, 51, 64, 70 }) do
        for _, special in ipairs({ false, true }) do
          local f = math.floor(n / 4)
          local G = input(400 + n, n, d, { special = special })
          compare(G, n,
            function(g, o) return C.agt_gar_nnm(g, n, d, f, o) end,
            function(g, o) return C.agt_gpu_gar_nnm(g, n, d, f, o) end,
            nil, string.format("nnm n=%d f=%d d=%d special=%s", n, f, d, tostring(special)))
        end
      end
    end
  end)

  test("bucketing is bit-identical to the CPU", function()
    for _, n in ipairs({ 1, 7, 25, 64 }) do
      for _, s in ipairs({ 1, 2, 3 }) do
        local G = input(500 + n, n, D, { special = n >= 4 })
        local perm = R.new(n * 10 + s, "perm"):permutation(n)
        local nb = math.ceil(n / s)
        compare(G, nb,
          function(g, o) return C.agt_gar_bucketing(g, n, D, s, perm.ptr, o) end,
          function(g, o) return C.agt_gpu_gar_bucketing(g, n, D, s, perm.ptr, o) end,
          nil, string.format("bucketing n=%d s=%d", n, s))
      end
    end
  end)

  test("clipping and arc agree with the CPU (1e-6)", function()
    for _, n in ipairs({ 1, 5, 25, 64 }) do
      local G = input(600 + n, n, D, { special = n >= 4 })
      for _, c in ipairs({ 0, 1, 50, 1e9 }) do
        compare(G, n,
          function(g, o) return C.agt_gar_clipping(g, n, D, c, o) end,
          function(g, o) return C.agt_gpu_gar_clipping(g, n, D, c, o) end,
          1e-6, string.format("clipping n=%d c=%g", n, c))
      end
      for _, f in ipairs({ 0, math.floor(n / 4), math.floor(n / 2) }) do
        compare(G, n,
          function(g, o) return C.agt_gar_arc(g, n, D, f, o) end,
          function(g, o) return C.agt_gpu_gar_arc(g, n, D, f, o) end,
          1e-6, string.format("arc n=%d f=%d", n, f))
      end
    end
  end)

  test("geometric-median agrees with the CPU (1e-4 relative), iterations within one", function()
    for _, n in ipairs({ 1, 3, 11, 25, 62, 64 }) do
      for _, special in ipairs({ false, true }) do
        local G = input(700 + n, n, D, { special = special and n >= 4 })
        local ic, ig = ffi.new("int64_t[1]"), ffi.new("int64_t[1]")
        compare(G, nil,
          function(g, o) return C.agt_gar_geometric_median(g, n, D, 0.1, 8, 1e-6, o, ic) end,
          function(g, o) return C.agt_gpu_gar_geometric_median(g, n, D, 0.1, 8, 1e-6, o, ig) end,
          1e-4, string.format("geometric-median n=%d special=%s", n, tostring(special)))
        -- the CPU's float iterate can stop moving a step before the exact one meets the tolerance
        assert.is_true(math.abs(tonumber(ic[0]) - tonumber(ig[0])) <= 1,
                       string.format("iterations: cpu %d gpu %d", tonumber(ic[0]), tonumber(ig[0])))
      end
    end
  end)

  test("centered-clipping agrees with the CPU (1e-4 relative), centre updated in place", function()
    for _, n in ipairs({ 1, 7, 25, 63 }) do
      for _, tau in ipairs({ 0.5, 10, 1e6 }) do
        local G = input(800 + n, n, D, { special = n >= 4 })
        local v0 = T.new({ D })
        R.new(n, "centre"):normal(v0, 0, 0.5)
        local vc = v0:clone()
        F.check(C.agt_gar_centered_clipping(G.ptr, n, D, tau, 3, vc.ptr))
        local Gd, vd = G:to("cuda"), v0:to("cuda")
        F.check(C.agt_gpu_gar_centered_clipping(Gd:pointer(), n, D, tau, 3, vd:pointer()))
        local vg = vd:to("cpu")
        Gd:free(); vd:free()
        assert.is_true(close(vg, vc, 1e-4), string.format("centered-clipping n=%d tau=%g: %s",
                                                          n, tau, first_diff(vg, vc)))
      end
    end
  end)

  test("the pipelined upload gives the device-resident result, bit for bit", function()
    local n = 25
    local G = input(900, n, 300001, { ties = true, special = true })
    for _, name in ipairs({ "average", "median", "trimmed-mean", "phocas", "krum" }) do
      local r = A.new(name, n, 5, {}, { backend = "cuda" })
      local a, b = T.new({ 300001 }), T.new({ 300001 })
      r:aggregate(G, a)                       -- host G: the pipelined upload
      local Gd, od = G:to("cuda"), dev({ 300001 })
      r:aggregate(Gd, od)                     -- device-resident G
      b:copy(od)
      Gd:free(); od:free(); r:free()
      assert.is_true(bits_equal(a, b), name .. ": " .. first_diff(a, b))
    end
  end)

  test("nnm over several coordinate pairs a thread is bit-identical to the CPU", function()
    -- d / 2 pairs over at most 16 blocks of 128 threads per SM: ~3.7 pairs a thread on a
    -- 132-SM card, more on smaller ones (the cases above give a thread one pair at most).
    local d = 2000002
    for _, n in ipairs({ 20, 51 }) do
      local f = n == 20 and 3 or 12
      local G = input(900 + n, n, d, {})
      compare(G, n,
        function(g, o) return C.agt_gar_nnm(g, n, d, f, o) end,
        function(g, o) return C.agt_gpu_gar_nnm(g, n, d, f, o) end,
        nil, string.format("nnm n=%d f=%d d=%d", n, f, d))
    end
  end)

  test("a pipeline nnm,bucketing,krum runs and refuses misuse", function()
    local n, f = 25, 2
    local G = input(901, n, D)
    local r = A.new("nnm,bucketing,krum", n, f, { s = 2 }, { backend = "gpu" })
    local c = A.new("nnm,bucketing,krum", n, f, { s = 2 })
    local out, ref = T.new({ D }), T.new({ D })
    r:aggregate(G, out, { rng = R.new(1, "bucketing") })
    c:aggregate(G, ref, { rng = R.new(1, "bucketing") })
    assert.is_true(close(out, ref, 1e-5), first_diff(out, ref))
    assert.has_error(function() A.new("krum,nnm", n, f, nil, { backend = "cuda" }) end)
    assert.has_error(function() A.new("no-such-rule", n, f, nil, { backend = "cuda" }) end)
    r:free()
  end)

  test("every rule and step through agt.aggregators: the gpu backend gives the CPU's result", function()
    local n, f = 25, 5
    local G = input(950, n, D, {})
    local tol = { ["geometric-median"] = 1e-4, ["centered-clipping"] = 1e-4,
                  clipping = 1e-6, arc = 1e-6 }
    local ran = 0
    for _, name in ipairs(A.list()) do
      local def = A.find(name).def
      local spec = def.kind == "pre" and (name .. ",average") or name
      local okc, cpu = pcall(A.new, spec, n, f, {})
      if okc then
        local out_c, out_g = T.new({ D }), T.new({ D })
        local ic = cpu:aggregate(G, out_c, {}) or {}
        local r = A.new(spec, n, f, {}, { backend = "cuda" })
        local ig = r:aggregate(G, out_g, {}) or {}
        local t = tol[name]
        if t then
          assert.is_true(close(out_g, out_c, t), spec .. ": " .. first_diff(out_g, out_c))
        else
          assert.is_true(bits_equal(out_g, out_c), spec .. ": " .. first_diff(out_g, out_c))
        end
        assert.are.same(ic.selected, ig.selected, spec .. ": selected rows")
        r:free()
        ran = ran + 1
      end
    end
    assert.is_true(ran >= 17, "rules run: " .. ran)
  end)

  -- The bug of two rule objects on one host tensor: the second registered G's memory again
  -- (cudaErrorHostMemoryAlreadyRegistered), and the error, never cleared, failed every later
  -- launch. Page-locking now belongs to G's storage, and an error is cleared where it is met.
  test("several rules aggregate the same host tensor one after the other", function()
    local n, f = 11, 2
    local G = input(960, n, D, { special = true })
    local names = { "median", "krum", "trimmed-mean", "bulyan", "average", "multi-krum", "median" }
    for round = 1, 2 do
      for _, name in ipairs(names) do
        local r = A.new(name, n, f, nil, { backend = round == 1 and "gpu" or "cuda" })
        local out, ref = T.new({ D }), T.new({ D })
        local ig = r:aggregate(G, out) or {}
        local ic = A.new(name, n, f):aggregate(G, ref) or {}
        assert.is_true(bits_equal(out, ref), name .. " (round " .. round .. "): " .. first_diff(out, ref))
        assert.are.same(ic.selected, ig.selected, name .. ": selected rows")
        r:free()
      end
    end
    assert.is_true(G.pinned, "G's storage is page-locked once, by the first rule")
    -- a view of G shares the storage, and so its lock
    assert.is_true(G:narrow(2, 3).pinned)
  end)

  test("a CUDA error is reported where it happens and does not poison later calls", function()
    local h = T.new({ 4096 })
    assert.is_true(h:pin())
    assert.is_true(h:pin())   -- once per storage: a second pin is a no-op
    local okc, msg = F.try(C.agt_gpu_host_register(h.data, 4096 * 4))   -- by hand: refused
    assert.is_nil(okc)
    assert.matches("already page%-locked", msg)
    -- the next launches run: the error was cleared where it was reported
    local G = input(961, 5, D)
    local out, ref = T.new({ D }), T.new({ D })
    A.new("median", 5, 1, nil, { backend = "cuda" }):aggregate(G, out)
    A.new("median", 5, 1):aggregate(G, ref)
    assert.is_true(bits_equal(out, ref), first_diff(out, ref))
    assert.is_true((gpu.available()))
  end)

  test("device tensors: explicit copies, the device in their name, host access refused", function()
    local h = input(962, 3, 1000, { special = true })
    local g = h:to("cuda")
    assert.are.equal("cuda:0", g.device)
    assert.are.same({ 3, 1000 }, g.shape)
    assert.truthy(tostring(g):find("3x1000, cuda:0", 1, true), tostring(g))
    assert.has_error(function() return g[1] end, 'element access needs host memory, but the tensor is on cuda:0: call :to("cpu") first')
    assert.has_error(function() return g.ptr end)
    assert.has_error(function() local t = g:totable(); return t end, 'totable needs host memory, but the tensor is on cuda:0: call :to("cpu") first')
    -- the vector reductions run on the device: the CPU's value (both sum in double), NaN for NaN
    local sd, sh = g:sum(), h:sum()
    assert.is_true(math.abs(sd - sh) <= 1e-12 * math.max(1, math.abs(sh)), string.format("sum: device %.17g cpu %.17g", sd, sh))
    local hn = input(963, 4, 1000, { special = true })
    local sn = hn:to("cuda"):sum()
    assert.is_true(sn ~= sn and hn:sum() ~= hn:sum(), "sum with a NaN row: device " .. tostring(sn))
    assert.has_error(function() h:add(g) end, "vec.add: tensors on two devices (cpu and cuda:0); copy one with :to()")
    local back = g:to("cpu")
    assert.are.equal("cpu", back.device)
    assert.is_true(bits_equal(back, h))
    local g2 = g:clone()
    assert.are.equal("cuda:0", g2.device)
    local row = g2:row(2)   -- a view on the device
    local r2 = T.new({ 1000 }):copy(row)
    assert.is_true(bits_equal(r2, h:row(2)))
    local s = A.new("median", 3, 1)
    assert.has_error(function() s:aggregate(g, T.new({ 1000 })) end,
                     "median: G and out are on two devices (cuda:0 and cpu)")
  end)

  test("a user's rule file runs on the GPU only if it declares it can", function()
    local base = os.tmpname()
    local path = base .. ".lua"
    local function write(devices)
      local fh = assert(io.open(path, "w"))
      fh:write("return { name = 'my-median', ", devices,
               " aggregate = function(self, G, out) ",
               "self:kernel('median', self:ptr(G), self.n, self.d, self:ptr(out)) end }\n")
      fh:close()
    end
    write("")
    assert.has_error(function() A.new(path, 5, 1, nil, { backend = "cuda" }) end)
    local G = input(963, 5, D)
    assert.has_error(function() A.new(path, 5, 1):aggregate(G:to("cuda"), dev({ D })) end)
    write("devices = { 'cpu', 'cuda' },")
    local out, ref = T.new({ D }), T.new({ D })
    A.new(path, 5, 1, nil, { backend = "cuda" }):aggregate(G, out)
    A.new("median", 5, 1):aggregate(G, ref)
    os.remove(path); os.remove(base)
    assert.is_true(bits_equal(out, ref), first_diff(out, ref))
  end)

  test("--use-gpu's rule (the session's rule part) gives the CPU rule's result and rows", function()
    local SR = require("agt.session.rule")
    local n, f = 11, 2
    local G = input(964, n, D, { special = true })
    local o = { aggregator = "bulyan", aggregator_args = {}, seed = 1 }
    local cpu = SR.new(o, n, f, error)
    o.use_gpu = true
    local g = SR.new(o, n, f, function(msg) error("unexpected warning: " .. msg) end)
    assert.are.equal("cuda", g.rule.backend.name)
    local out, ref = T.new({ D }), T.new({ D })
    local ig, ic = g:aggregate(G, out, 1), cpu:aggregate(G, ref, 1)
    assert.is_true(bits_equal(out, ref), first_diff(out, ref))
    assert.are.same(ic.selected, ig.selected)
  end)

  test("the MDA search stops on the interrupt flag (Ctrl-C), as on the CPU", function()
    -- 40 points on a line, C(40,14) subsets: far more visits than the 65536 between two polls
    local n, f = 40, 14
    local G = T.new({ n, 1 })
    local rng = R.new(1000, "mda-interrupt")
    for i = 0, n - 1 do G.ptr[i] = rng:below(1000) end
    local Gd, od = G:to("cuda"), T.new({ 1 }, "f32", "cuda")
    C.agt_interrupt_set(1)
    local okc, msg = F.try(C.agt_gpu_gar_mda(Gd:pointer(), n, 1, f, 1e12, od:pointer(), nil))
    C.agt_interrupt_set(0)
    Gd:free(); od:free()
    assert.is_nil(okc)
    assert.matches("mda: interrupted", msg)
  end)

  test("errors come back as messages, not crashes", function()
    local Gd, od = dev({ 6, 10 }), dev({ 10 })
    local okc, msg = F.try(C.agt_gpu_gar_bulyan(Gd:pointer(), 6, 10, 1, od:pointer(), nil))
    assert.is_nil(okc)
    assert.matches("bulyan needs n >= 4f%+3, got n=6 f=1", msg)
    okc, msg = F.try(C.agt_gpu_gar_mda(Gd:pointer(), 6, 10, 3, 1, od:pointer(), nil))
    assert.is_nil(okc)
    assert.matches("exceed the budget", msg)
    Gd:free(); od:free()
  end)
end)
