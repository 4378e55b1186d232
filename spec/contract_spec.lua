-- Specs of agt.contract: every shipped rule, attack and experiment meets its contract, and each
-- way a user's table can be wrong (a typo'd field, a wrong type, a bad argument entry, an
-- unknown default key, a rule's info with rows out of range, 0-based or repeated, a number
-- returned for a table) is refused with a message naming the file and the field.
local host = require("agt.host")
local C = require("agt.contract")

local function files(kind)
  local out = {}
  for f in io.popen("ls " .. host.root .. "/lua/" .. kind):lines() do
    out[#out + 1] = host.root .. "/lua/" .. kind .. "/" .. f
  end
  return out
end

local COMMON = { "batch-size", "eval-batch-size", "eval-size", "data-dir", "shard", "noniid-alpha" }

local function refused(fn, ...)
  local ok, e = pcall(fn, ...)
  assert.is_false(ok, "accepted")
  return e
end

local agg = function() return {} end
local function rule(extra)
  local t = { name = "r", requires = { text = "n >= 1", check = function() return true end }, aggregate = agg }
  for k, v in pairs(extra or {}) do t[k] = v end
  return t
end

describe("agt.contract", function()
  it("accepts every shipped rule, attack and experiment and the examples", function()
    for _, p in ipairs(files("aggregators")) do C.rule(dofile(p), p) end
    for _, p in ipairs(files("attacks")) do C.attack(dofile(p), p) end
    for _, p in ipairs(files("experiments")) do C.experiment(dofile(p), p, COMMON) end
    C.rule(dofile(host.root .. "/examples/custom_rule.lua"), "custom_rule.lua")
    C.attack(dofile(host.root .. "/examples/custom_attack.lua"), "custom_attack.lua")
    C.experiment(dofile(host.root .. "/examples/custom_experiment.lua"), "custom_experiment.lua", COMMON)
  end)

  it("names a typo'd field and the field it meant", function()
    local t = rule()
    t.require, t.requires = t.requires, nil
    local e = refused(C.rule, t, "my_rule.lua")
    assert.matches("^my_rule.lua: require: is not a field of a rule %(did you mean 'requires'%?%)", e)
    assert.matches("did you mean 'aggregate'", refused(C.rule, rule({ agregate = agg }), "x.lua"))
    assert.matches("did you mean 'apply'", refused(C.attack, { name = "a", apply = agg, aply = agg }, "a.lua"))
    assert.matches("^e.lua: modle: .*did you mean 'model'", refused(C.experiment,
      { name = "e", shape = { 1 }, classes = 2, data = agg, model = agg, modle = agg }, "e.lua"))
  end)

  it("refuses wrong types and missing functions, naming the field", function()
    assert.matches("^x.lua: aggregate: a rule needs aggregate", refused(C.rule, { name = "r" }, "x.lua"))
    assert.matches("^x.lua: requires.check:", refused(C.rule, rule({ requires = { text = "n >= 1" } }), "x.lua"))
    assert.matches("^x.lua: requires.text:", refused(C.rule, rule({ requires = { check = agg } }), "x.lua"))
    assert.matches("^x.lua: kind: expects 'rule' or 'pre', got string 'post'", refused(C.rule, rule({ kind = "post" }), "x.lua"))
    assert.matches("^x.lua: output:", refused(C.rule, rule({ kind = "pre" }), "x.lua"))
    assert.matches("^x.lua: summary: expects a string, got number", refused(C.rule, rule({ summary = 3 }), "x.lua"))
    assert.matches("^a.lua: apply:", refused(C.attack, { name = "a" }, "a.lua"))
    assert.matches("^a.lua: poison:", refused(C.attack, { name = "a", kind = "data" }, "a.lua"))
    assert.matches("^e.lua: classes:", refused(C.experiment,
      { name = "e", shape = { 1 }, classes = 1, data = agg, model = agg }, "e.lua"))
    assert.matches("^x.lua: a rule file returns a table, got number", refused(C.rule, 3, "x.lua"))
  end)

  it("checks each argument entry", function()
    assert.matches("^x.lua: args%[2%].name:", refused(C.rule, rule({ args = { { name = "a", default = 1 }, { default = 2 } } }), "x.lua"))
    assert.matches("^x.lua: args%[1%]: 'a' needs a default or a type", refused(C.rule, rule({ args = { { name = "a" } } }), "x.lua"))
    assert.matches("^x.lua: args%[1%]: dflt: .*did you mean 'default'", refused(C.rule, rule({ args = { { name = "a", dflt = 1 } } }), "x.lua"))
    assert.matches("^x.lua: args%[2%].name: 'a' is given twice", refused(C.rule,
      rule({ args = { { name = "a", default = 1 }, { name = "a", default = 2 } } }), "x.lua"))
    assert.matches("^x.lua: args%[1%]: type:", refused(C.rule, rule({ args = { { name = "a", type = "float" } } }), "x.lua"))
  end)

  it("refuses an experiment default for a key nobody takes", function()
    local t = { name = "e", shape = { 1, 2, 2 }, classes = 2, data = agg, model = agg,
                defaults = { ["batch-size"] = 8, ["bach-size"] = 8 } }
    assert.matches("^e.lua: defaults: bach%-size: .*did you mean 'batch%-size'", refused(C.experiment, t, "e.lua", COMMON))
    t.defaults = { ["batch-size"] = 8, own = 1 }
    t.args = { { name = "own", default = 0 } }
    C.experiment(t, "e.lua", COMMON)
  end)

  it("holds a rule's info to 1-based distinct rows within 1..n", function()
    assert.is_nil(C.rule_info(nil, 5, "x"))
    C.rule_info({ selected = { 1, 5, 3 } }, 5, "x")
    C.rule_info({}, 5, "x")
    assert.matches("^x.lua: aggregate: selected: holds rows 1..5 %(1%-based%), got 0", refused(C.rule_info, { selected = { 0, 1 } }, 5, "x.lua"))
    assert.matches("got 99", refused(C.rule_info, { selected = { 99 } }, 5, "x.lua"))
    assert.matches("got 1.5", refused(C.rule_info, { selected = { 1.5 } }, 5, "x.lua"))
    assert.matches("row 2 twice", refused(C.rule_info, { selected = { 2, 2 } }, 5, "x.lua"))
    assert.matches("^x.lua: aggregate: returns its info as a table %(or nothing%), got number '0.5'", refused(C.rule_info, 0.5, 5, "x.lua"))
  end)

  it("suggests only near names", function()
    assert.are.equal("requires", C.nearest("require", { "requires", "aggregate" }))
    assert.are.equal("doc", C.nearest("docs", { "doc", "name" }))
    assert.is_nil(C.nearest("zzzzzz", { "doc", "name" }))
  end)
end)

describe("the loaders hold plugins to their contracts", function()
  local H = require("helpers")
  local A = require("agt.aggregators")
  local K = require("agt.attacks")
  local E = require("agt.experiments")
  local T = require("agt.tensor")
  local dir
  setup(function() dir = H.tmpdir() end)
  teardown(function() os.execute("rm -rf " .. H.shell_quote(dir)) end)
  local function file(name, text)
    H.write(dir .. "/" .. name, text)
    return dir .. "/" .. name
  end
  local REQ = 'requires = { text = "n >= 1", check = function() return true end }'

  it("refuses a rule, an attack or an experiment file with a typo'd field, naming file and field", function()
    local p = file("r.lua", 'return { name = "r", require = { text = "n >= 3", check = function(n) return n >= 3 end }, aggregate = function() end }')
    assert.matches("r.lua: require: is not a field of a rule %(did you mean 'requires'%?%)", refused(A.new, p, 1, 0))
    p = file("a.lua", 'return { name = "a", apply = function() end, args = { { name = "x", defualt = 1 } } }')
    assert.matches("a.lua: args%[1%]: defualt: .*did you mean 'default'", refused(K.new, p, {}, { n = 3, f = 0 }))
    p = file("e.lua", 'return { name = "e", shape = {1}, classes = 2, data = function() end, model = function() end, defaults = { ["batch-sise"] = 4 } }')
    assert.matches("e.lua: defaults: batch%-sise: .*did you mean 'batch%-size'", refused(E.load, p))
  end)

  it("gives a rule's init self.d when the rule is built for a known d (as agt run does)", function()
    local p = file("d.lua", "return { name = 'd', " .. REQ .. ", init = function(self) D_SEEN = self.d end, aggregate = function() end }")
    A.new(p, 3, 0, nil, { d = 7 })
    assert.are.equal(7, rawget(_G, "D_SEEN"))
    rawset(_G, "D_SEEN", nil)
  end)

  it("refuses a rule's info that is not a table or holds rows out of range, naming the rule", function()
    local p = file("n.lua", "return { name = 'n', " .. REQ .. ", aggregate = function() return 0.5 end }")
    local r = A.new(p, 3, 0)
    assert.matches("^n: aggregate: returns its info as a table", refused(r.aggregate, r, T.new({ 3, 2 }), T.new({ 2 })))
    p = file("z.lua", "return { name = 'z', " .. REQ .. ", aggregate = function() return { selected = { 0 } } end }")
    r = A.new(p, 3, 0)
    assert.matches("aggregate: selected: holds rows 1..3 %(1%-based%), got 0", refused(r.aggregate, r, T.new({ 3, 2 }), T.new({ 2 })))
  end)

  it("names the kernel and its signature when a rule calls it with the wrong arguments", function()
    local p = file("k.lua", "return { name = 'k', " .. REQ .. ", aggregate = function(self, G, out) self:kernel('median', self:ptr(G), self.n, self:ptr(out)) end }")
    local r = A.new(p, 3, 0)
    local e = refused(r.aggregate, r, T.new({ 3, 2 }), T.new({ 2 }))
    assert.matches("k: kernel 'median' called with 3 argument%(s%) it cannot take", e)
    assert.matches("agt_status agt_gar_median%(const float %*G, size_t n, size_t d, float %*out%)", e)
  end)
end)
