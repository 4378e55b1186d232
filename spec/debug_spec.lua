-- Specs of the debug mode (AGT_DEBUG=1): t.ptr and an attack's self:row(c, i) are checked
-- pointers whose out-of-range reads and writes are Lua errors at the user's line naming the
-- index and the tensor's size; the engine's own code keeps raw pointers. AGT_DEBUG is read
-- when agt.tensor loads, so every debug-mode case runs in a child process.
local H = require("helpers")
local host = require("agt.host")
local T = require("agt.tensor")

local tmp = H.tmpdir()
teardown(function() os.execute("rm -rf '" .. tmp .. "'") end)

local count = 0
-- Writes text to a fresh file under tmp; its path.
local function file(text, ext)
  count = count + 1
  local path = string.format("%s/f%d.%s", tmp, count, ext or "lua")
  H.write(path, text)
  return path
end

-- The line of the (only) line of text that carries the marker "-- here".
local function line_of(text)
  local i = 0
  for l in (text .. "\n"):gmatch("([^\n]*)\n") do
    i = i + 1
    if l:find("%-%- here") then return i end
  end
  error("no '-- here' marker")
end

-- Runs a Lua script with AGT_DEBUG set to value (nil: unset); exit code, stdout, stderr.
local function script(text, value)
  local path = file(text)
  local env = value and ("AGT_DEBUG=" .. value .. " ") or "env -u AGT_DEBUG "
  local rc, out, err = H.run(env .. H.shell_quote(H.agt) .. " " .. H.shell_quote(path))
  return rc, out, err, path
end

-- The script fails at its marked line with an error matching each of the plain strings.
local function fails_at(text, ...)
  local rc, out, err, path = script(text, "1")
  assert.are_not.equal(0, rc, "stdout: " .. out)
  local where = path .. ":" .. line_of(text) .. ":"
  assert.truthy(err:find(where, 1, true), "want " .. where .. " in: " .. err)
  for _, s in ipairs({ ... }) do assert.truthy(err:find(s, 1, true), "want '" .. s .. "' in: " .. err) end
  return err
end

local PRELUDE = "local T = require('agt.tensor')\nlocal t = T.new({10}); t:zero()\n"

describe("AGT_DEBUG=1: t.ptr is a checked pointer", function()
  it("reads and writes the tensor inside its bounds, as the raw pointer does", function()
    local rc, out, err = script(PRELUDE .. [[
assert(T.debug, "debug mode is on")
local p = t.ptr
for k = 0, 9 do p[k] = k * 1.5 end
assert(t[1] == 0 and t[10] == 13.5 and p[9] == 13.5)
local q = p + 4                     -- pointer arithmetic keeps the tensor's bounds
assert(q[0] == 6 and q[-4] == 0 and q[5] == 13.5)
assert(q - p == 4 and p + 4 == q and p < q and (q - 4) == p)
local i = T.new({3}, "i64"); i.ptr[2] = 7
assert(type(i.ptr[2]) == "cdata" and i.ptr[2] == 7LL, "i64 elements are int64 cdata, as raw")
local u = T.new({3}, "u8"); u.ptr[0] = 255; assert(u[1] == 255)
print("ok")
]], "1")
    assert.are.equal(0, rc, err)
    assert.are.equal("ok\n", out)
  end)

  it("refuses an index past the end, naming the index, the size and the user's line", function()
    fails_at(PRELUDE .. "local p = t.ptr\np[10] = 1 -- here\n",
             "t.ptr[10]: index out of range of a tensor of 10 f32 values (valid indices 0..9")
    fails_at(PRELUDE .. "local x = t.ptr[10] -- here\n", "t.ptr[10]: index out of range")
  end)

  it("refuses a negative index", function()
    fails_at(PRELUDE .. "t.ptr[-1] = 1 -- here\n", "t.ptr[-1]: index out of range of a tensor of 10")
    fails_at(PRELUDE .. "return t.ptr[-1] -- here\n", "t.ptr[-1]: index out of range")
  end)

  it("refuses fractional, NaN, infinite and non-number indices", function()
    fails_at(PRELUDE .. "t.ptr[1.5] = 1 -- here\n", "t.ptr[1.5]: the index is not an integer")
    fails_at(PRELUDE .. "t.ptr[0/0] = 1 -- here\n", "the index is not an integer")
    fails_at(PRELUDE .. "return t.ptr[1/0] -- here\n", "t.ptr[inf]: the index is not an integer")
    fails_at(PRELUDE .. "return t.ptr.x -- here\n", "t.ptr[x]: a pointer is indexed by a number, got string")
    fails_at(PRELUDE .. "t.ptr[0] = 'seven' -- here\n", "a value must be a number")
  end)

  it("checks a moved pointer against the tensor, naming the element", function()
    fails_at(PRELUDE .. "local q = t.ptr + 5\nq[5] = 1 -- here\n",
             "(t.ptr + 5)[5]: element 10, out of range of a tensor of 10 f32 values (valid indices here -5..4")
    fails_at(PRELUDE .. "local q = t.ptr + 5\nreturn q[-6] -- here\n", "(t.ptr + 5)[-6]: element -1")
    fails_at(PRELUDE .. "local q = t.ptr - 1\nreturn q[0] -- here\n", "(t.ptr - 1)[0]: element -1")
    fails_at(PRELUDE .. "return t.ptr + 0.5 -- here\n", "a pointer moves by an integer")
    fails_at(PRELUDE .. "return (t.ptr + 1) - T.new({3}).ptr -- here\n", "both must point into one tensor")
  end)

  it("is never converted to an address silently: C and ffi.copy refuse it", function()
    local rc, _, err = script(PRELUDE .. "require('ffi').copy(t.ptr, 'abcd', 4)\n", "1")
    assert.are_not.equal(0, rc)
    assert.truthy(err:find("cannot convert 'table'", 1, true), err)
  end)

  it("is taken by T.wrap, which checks the shape fits", function()
    fails_at(PRELUDE .. "local w = T.wrap(t.ptr + 4, {7}) -- here\n",
             "T.wrap: a shape of 7 values over a pointer that reaches 6")
    local rc, out, err = script(PRELUDE .. "t:fill(2)\nprint(T.wrap(t.ptr + 4, {6}):sum())\n", "1")
    assert.are.equal(0, rc, err)
    assert.are.equal("12\n", out)
  end)

  it("is the raw pointer when AGT_DEBUG is unset or 0, and t.raw never checks", function()
    for _, v in ipairs({ false, "0", "" }) do
      local rc, out, err = script(PRELUDE .. [[
print(T.debug, type(t.ptr), tostring(require('ffi').typeof(t.ptr)))
]], v or nil)
      assert.are.equal(0, rc, err)
      assert.are.equal("false\tcdata\tctype<float *>\n", out)
    end
    local rc, out, err = script(PRELUDE .. "print(type(t.raw), type(t.ptr))\n", "1")
    assert.are.equal(0, rc, err)
    assert.are.equal("cdata\ttable\n", out)
    -- in this process: the raw pointer, unchanged, unless the specs run under AGT_DEBUG=1
    local t = T.new({ 3 })
    local env = os.getenv("AGT_DEBUG") or ""
    if env ~= "" and env ~= "0" then
      assert.is_true(T.debug)
      assert.is_true(T.is_checked(t.ptr))
      assert.are.equal(t.raw, (T.unchecked(t.ptr)))
      assert.is_true(T.is_checked(T.checked(t.raw, 3, "p", "a tensor")))
    else
      assert.is_false(T.debug)
      assert.are.equal("cdata", type(t.ptr))
      assert.are.equal(t.ptr, (T.unchecked(t.ptr)))
      assert.are.equal(t.ptr, T.checked(t.ptr, 3, "p", "a tensor"))
    end
  end)
end)

describe("AGT_DEBUG=1 in attacks and rules", function()
  it("gives attacks a self:row(c, i) checked over the row, and self:write checks what it reads", function()
    local prelude = [[
local T, AT = require('agt.tensor'), require('agt.attacks')
local a = AT.new({ name = "probe", apply = function() end }, {}, { n = 5, f = 1 })
local c = { G = T.new({ 5, 4 }), d = 4, byz = { 5 }, honest = { 1, 2, 3, 4 } }
c.G:zero()
]]
    fails_at(prelude .. "a:row(c, 2)[4] = 1 -- here\n",
             "self:row(c, 2)[4]: index out of range of c.G's row 2 of 4 f32 values (valid indices 0..3")
    fails_at(prelude .. "return a:row(c, 2)[-1] -- here\n", "self:row(c, 2)[-1]: index out of range")
    fails_at(prelude .. "a:write(c, T.new({6}).ptr + 3) -- here\n",
             "attack probe: self:write(c, v): v reaches 3 values, d = 4 are read")
    fails_at(prelude .. "a:write(c, T.new({6}).ptr + 7) -- here\n",
             "attack probe: self:write(c, v): the pointer is 1 elements past the end of a tensor of 6 values")
    local rc, out, err = script(prelude .. [[
local r = a:row(c, 2)
for j = 0, 3 do r[j] = j + 1 end
a:write(c, a:row(c, 2))                       -- a checked pointer is taken
local v = T.from_table({ 9, 8, 7, 6, 5 })
a:write(c, v.ptr + 1)
print(table.concat(c.G:row(2):totable(), ","), table.concat(c.G:row(5):totable(), ","))
]], "1")
    assert.are.equal(0, rc, err)
    assert.are.equal("1,2,3,4\t8,7,6,5\n", out)
  end)

  it("lets a rule pass G.ptr and out.ptr to self:kernel, refusing a pointer outside its tensor", function()
    local rule = file([[
return {
  name = "ptr-median",
  requires = { text = "n >= 1", check = function(n, f) return n >= 1 end },
  aggregate = function(self, G, out, ctx)
    self:kernel("median", G.ptr + (ctx.shift or 0), self.n, self.d, out.ptr) -- here
    return {}
  end,
}
]])
    local prelude = "local T, A = require('agt.tensor'), require('agt.aggregators')\n"
      .. "local rule = A.new(" .. string.format("%q", rule) .. ", 3, 1)\n"
      .. "local G = T.from_table({ { 1, 5 }, { 2, 7 }, { 3, 6 } })\n"
    local rc, out, err = script(prelude .. "print(table.concat(rule:aggregate(G):totable(), ','))\n", "1")
    assert.are.equal(0, rc, err)
    assert.are.equal("2,6\n", out)
    rc, _, err = script(prelude .. "rule:aggregate(G, T.new({2}), { shift = 7 })\n", "1")
    assert.are_not.equal(0, rc)
    assert.truthy(err:find(rule .. ":" .. line_of(H.read(rule)) .. ":", 1, true), err)
    assert.truthy(err:find("kernel 'median', argument 1: the pointer is 1 elements past the end of a tensor of 6 values", 1, true), err)
  end)
end)

describe("AGT_DEBUG=1 through agt run", function()
  local RUN = "run --experiment fashion-mnist --max-step 2 --evaluation-period -1 "
    .. "--checkpoint-period -1 --summary-period -1 --experiment-args batch-size:8 eval-size:100 --quiet "

  local function agt_run(debug, args)
    local env = debug and "AGT_DEBUG=1 " or "env -u AGT_DEBUG "
    if not args:find("%-%-nb%-workers") then args = args .. " --nb-workers 3" end
    return H.run(env .. H.shell_quote(H.agt) .. " " .. RUN .. args)
  end

  local BAD = [[
-- an average that writes one value past out
return {
  name = "off-by-one",
  requires = { text = "n >= 1", check = function(n, f) return n >= 1 end },
  aggregate = function(self, G, out, ctx)
    local g, o = G.ptr, out.ptr
    for k = 0, self.d - 1 do
      local s = 0
      for i = 0, self.n - 1 do s = s + g[i * self.d + k] end
      o[k] = s / self.n
    end
    o[self.d] = 0 -- here
    return {}
  end,
}
]]

  it("stops a rule file writing past out at its line, naming the index and out's size", function()
    local path = file(BAD)
    local rc, out, err = agt_run(true, "--aggregator " .. H.shell_quote(path))
    assert.are_not.equal(0, rc, out)
    local d = 79510   -- fashion-mnist's model
    local want = string.format("%s:%d: t.ptr[%d]: index out of range of a tensor of %d f32 values",
                               path, line_of(BAD), d, d)
    assert.truthy(err:find(want, 1, true), "want " .. want .. " in: " .. err)
  end)

  it("runs the same rule file without AGT_DEBUG (the write is not checked then)", function()
    local rc, out, err = agt_run(false, "--aggregator " .. H.shell_quote(file(BAD)))
    assert.are.equal(0, rc, out .. err)
  end)

  it("stops an attack file writing past its row at its line", function()
    local text = [[
return {
  name = "row-overrun",
  apply = function(self, c)
    for _, i in ipairs(c.byz) do
      local r = self:row(c, i)
      for j = 0, c.d do r[j] = 0 end -- here
    end
  end,
}
]]
    local path = file(text)
    local rc, _, err = agt_run(true, "--attack " .. H.shell_quote(path) .. " --nb-real-byz-workers 1 "
                                 .. "--nb-decl-byz-workers 1 --aggregator median")
    assert.are_not.equal(0, rc)
    local want = string.format("%s:%d: self:row(c, 3)[79510]: index out of range of c.G's row 3 of 79510 f32 values",
                               path, line_of(text))
    assert.truthy(err:find(want, 1, true), "want " .. want .. " in: " .. err)
  end)

  it("runs the examples and the engine's rules and attacks unchanged", function()
    local ex = host.root .. "/examples/"
    local cases = {
      "--aggregator " .. ex .. "custom_rule.lua --nb-decl-byz-workers 1",
      "--aggregator median --nb-decl-byz-workers 1 --nb-real-byz-workers 1 --attack " .. ex .. "custom_attack.lua",
      "--aggregator krum --nb-workers 5 --nb-decl-byz-workers 1 --nb-real-byz-workers 1 --attack fang",
      "--aggregator bucketing,trimmed-mean --nb-workers 5 --nb-decl-byz-workers 1 --nb-real-byz-workers 1 --attack minmax",
      "--aggregator centered-clipping --nb-decl-byz-workers 1 --nb-real-byz-workers 1 --attack mimic",
      "--aggregator median --nb-decl-byz-workers 1 --nb-real-byz-workers 1 --attack drop",
      "--aggregator average --nb-decl-byz-workers 1 --nb-real-byz-workers 1 --attack optimal-lie --attack-args evals:4",
    }
    for _, args in ipairs(cases) do
      local rc, out, err = agt_run(true, args)
      assert.are.equal(0, rc, args .. ": " .. out .. err)
    end
  end)
end)

describe("AGT_DEBUG=1 guard pages", function()
  -- Under AddressSanitizer (make asan-agt) agt_alloc leaves guard pages to ASan, whose report
  -- replaces agt's message; agt_alloc poisons its rounding slack there, so one value past a
  -- buffer is reported all the same. Either way a write past the end ends the process.
  local guards
  local function caught(rc, out, err)
    if guards == nil then
      local _, o = script("print(require('agt.ffi').C.agt_mem_guarded())\n", "1")
      guards = o == "1\n"
    end
    if guards then
      assert.are.equal(139, rc, out .. err)   -- SIGSEGV
      assert.truthy(err:find("agt: segmentation fault at address 0x%x+ %(AGT_DEBUG%): engine buffers end at an "
                             .. "inaccessible page"), err)
    else
      assert.are_not.equal(0, rc, out .. err)
      -- past the slack: a heap-buffer-overflow; in it: a use-after-poison (agt_alloc's poison)
      assert.truthy(err:find("AddressSanitizer: heap%-buffer%-overflow")
                    or err:find("AddressSanitizer: use%-after%-poison"), err)
    end
  end

  it("end every engine buffer, so a C function running past one faults there, said on stderr", function()
    local rc, out, err = script([[
local T, C = require('agt.tensor'), require('agt.ffi').C
local t = T.new({10})
C.agt_vec_fill(t.raw, 10, 1)   -- the whole tensor: fine
io.stdout:write(t:sum(), "\n"); io.stdout:flush()
C.agt_vec_fill(t.raw, 11, 1)   -- one float past its end
print("not reached")
]], "1")
    caught(rc, out, err)
    assert.are.equal("10\n", out)
  end)

  it("catch a rule whose kernel is given a size past out", function()
    local path = file([[
return {
  name = "wrong-d",
  requires = { text = "n >= 1", check = function(n, f) return n >= 1 end },
  aggregate = function(self, G, out, ctx)
    self:kernel("average", self:ptr(G), 1, self.d + 1, self:ptr(out))
    return {}
  end,
}
]])
    local code = "local T, A = require('agt.tensor'), require('agt.aggregators')\n"
      .. "local G, out = T.new({3, 1000}), T.new({1000})\n"
      .. "A.new(" .. string.format("%q", path) .. ", 3, 1):aggregate(G, out)\nprint('not reached')\n"
    local rc, out, err = script(code, "1")
    caught(rc, out, err)
    if guards then                                 -- without AGT_DEBUG the write goes unseen
      rc, out, err = script(code, nil)
      assert.are.equal(0, rc, err)
      assert.are.equal("not reached\n", out)
    end
  end)

  it("are off without AGT_DEBUG", function()
    local rc, out, err = script("print(require('agt.ffi').C.agt_mem_guarded())\n", nil)
    assert.are.equal(0, rc, err)
    assert.are.equal("0\n", out)
  end)
end)

describe("engine code and t.ptr", function()
  -- Engine code hands pointers to C, which a checked pointer cannot reach: it reads t.raw
  -- (and an attack's self:raw_row), so that AGT_DEBUG=1 checks only the user's code.
  it("reads t.raw, never t.ptr, in lua/ and bindings/", function()
    local files = H.sh("cd " .. H.shell_quote(host.root) .. " && find lua bindings -name '*.lua' | sort")
    local bad = {}
    for path in files:gmatch("[^\n]+") do
      local n = 0
      for l in (H.read(host.root .. "/" .. path) .. "\n"):gmatch("([^\n]*)\n") do
        n = n + 1
        local code = l:gsub("%-%-.*$", "")
        if (code:find("%.ptr%f[^%w_]") and not code:find('"t%.ptr"') and not code:find("getters%.ptr"))
           or (path:find("^lua/attacks/") and code:find("self:row%(")) then
          bad[#bad + 1] = path .. ":" .. n .. ": " .. l
        end
      end
    end
    assert.are.same({}, bad)
  end)
end)
