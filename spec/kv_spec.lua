-- agt.kv: the one key:value parser — types from the spec or the default, choices, auto, checks,
-- defaults as functions of n and f, '_' for '-', words or tables, and refusals that name the
-- key and what it expects.
local kv = require("agt.kv")

local function refused(fn, pattern)
  local ok, err = pcall(fn)
  assert.is_false(ok)
  assert.truthy(tostring(err):find(pattern, 1, true), tostring(err))
end

describe("agt.kv", function()
  local spec = {
    { name = "batch-size", default = 32, check = function(v) return v >= 1, "must be >= 1" end },
    { name = "rate", default = 0.5 },
    { name = "scale", default = 1, type = "number" },
    { name = "name", default = "x" },
    { name = "on", default = false },
    { name = "mode", default = "fixed", choices = { "fixed", "random", "other" } },
    { name = "z", default = "auto", type = "number", auto = true },
    { name = "f-times", default = function(n, f) return 2 * (f or 0) + (n or 0) end, doc = "2f + n" },
  }

  it("fills defaults, evaluating functions of n and f", function()
    local a = kv.parse(nil, spec, "test", { n = 7, f = 2 })
    assert.are.same({ ["batch-size"] = 32, rate = 0.5, scale = 1, name = "x", on = false,
                      mode = "fixed", z = "auto", ["f-times"] = 11 }, a)
  end)

  it("converts words and tables to each key's type", function()
    local a = kv.parse({ "batch-size:64", "rate:0.25", "scale:3", "name:12", "on:yes", "mode:random",
                         "z:1.5", "f-times:4" }, spec, "test", { n = 1, f = 0 })
    assert.are.equal(64, a["batch-size"])
    assert.are.equal(0.25, a.rate)
    assert.are.equal(3, a.scale)
    assert.are.equal("12", a.name)
    assert.is_true(a.on)
    assert.are.equal("random", a.mode)
    assert.are.equal(1.5, a.z)
    assert.are.equal(4, a["f-times"])   -- a function default's type is its value's: integer
    local b = kv.parse({ batch_size = "8", scale = 2.5, on = true, z = "auto" }, spec, "test")
    assert.are.equal(8, b["batch-size"])
    assert.are.equal(2.5, b.scale)
    assert.is_true(b.on)
    assert.are.equal("auto", b.z)
    for _, w in ipairs({ "true", "1", "on", "yes", "TRUE" }) do assert.is_true(kv.parse({ "on:" .. w }, spec).on) end
    for _, w in ipairs({ "false", "0", "off", "no" }) do assert.is_false(kv.parse({ "on:" .. w }, spec).on) end
  end)

  it("refuses what does not fit, naming the key and what it expects", function()
    refused(function() kv.parse({ "batch-size:1.5" }, spec, "w") end, "w: 'batch-size' expects an integer, got '1.5'")
    refused(function() kv.parse({ "batch-size:inf" }, spec, "w") end, "'batch-size' expects an integer")
    refused(function() kv.parse({ "rate:fast" }, spec, "w") end, "w: 'rate' expects a number, got 'fast'")
    refused(function() kv.parse({ "rate:nan" }, spec, "w") end, "'rate' expects a number")
    refused(function() kv.parse({ "z:big" }, spec, "w") end, "'z' expects a number or 'auto', got 'big'")
    refused(function() kv.parse({ "on:maybe" }, spec, "w") end, "'on' expects true or false, got 'maybe'")
    refused(function() kv.parse({ "mode:x" }, spec, "w") end, "'mode' expects fixed, random or other, got 'x'")
    refused(function() kv.parse({ "batch-size:0" }, spec, "w") end, "w: 'batch-size' must be >= 1, got 0")
    refused(function() kv.parse({ "bogus:1" }, spec, "w") end, "w: unknown key 'bogus' (known: batch-size, rate")
    refused(function() kv.parse({ "nocolon" }, spec, "w") end, "w: expected key:value, got 'nocolon'")
    refused(function() kv.parse({ "x:1" }, {}, "w") end, "unknown key 'x' (known: none)")
    refused(function() kv.parse("rate:1", spec, "w") end, "w: expected a list of key:value words or a table")
  end)

  it("converts single values the way the flags need them", function()
    assert.are.equal(3, kv.convert({ type = "integer" }, "3"))
    assert.are.same({ nil, "expects an integer, got 'three'" }, { kv.convert({ type = "integer" }, "three") })
    assert.are.same({ nil, "expects a string, got table" }, { kv.convert({ type = "string" }, {}) })
    assert.are.equal("a, b or c", kv.either({ "a", "b", "c" }))
  end)

  it("turns words into a table, and prints one help line per key", function()
    assert.are.same({ a = "1", b = "x:y" }, kv.words({ "a:1", "b:x:y" }, "w"))
    assert.are.same({}, kv.words(nil, "w"))
    local t = { a = 1 }
    assert.are.equal(t, kv.words(t, "w"))
    local help = kv.help(spec, "  ")
    assert.truthy(help:find("  batch-size:32  \n", 1, true) or help:find("  batch-size:32  ", 1, true))
    assert.truthy(help:find("  f-times:depends on n, f  2f + n", 1, true))
    assert.are.equal(#spec, select(2, help:gsub("\n", "")) + 1)
  end)
end)
