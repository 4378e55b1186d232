-- Specs of agt.check / agt check: the shipped examples pass; each way a user's rule or attack
-- can be wrong (a typo'd field, a number returned for the info, 0-based selected rows, an
-- order-dependent output, NaN let through, a requirement refused without naming n and f, an
-- attack writing an honest row) is reported by name, and the exit status says so.
local H = require("helpers")
local host = require("agt.host")
local CK = require("agt.check")

local dir
setup(function() dir = H.tmpdir() end)
teardown(function() os.execute("rm -rf " .. H.shell_quote(dir)) end)

local function file(name, text)
  local p = dir .. "/" .. name
  H.write(p, text)
  return p
end

-- name -> {ok, detail} of a report (names without their "(n=.. f=.. d=..)" suffix, the worst kept)
local function by_name(report)
  local out = {}
  for _, c in ipairs(report.checks) do
    local k = c.name:gsub(" %(n=.*$", "")
    if not out[k] or not c.ok then out[k] = c end
  end
  return out
end

local RULE = [[
return {
  name = "%s",
  requires = { text = "n >= 2f+1", check = function(n, f) return n >= 2 * f + 1 end },
  aggregate = function(self, G, out)
    local n, d = self.n, self.d
    for k = 0, d - 1 do
      %s
    end
    return %s
  end,
}
]]

local MEAN = "local s = 0; for i = 0, n - 1 do s = s + G.ptr[i * d + k] end; out.ptr[k] = s / n"
local MEDIAN = [[local c = {}; for i = 0, n - 1 do local x = G.ptr[i * d + k]; c[#c + 1] = x == x and x or math.huge end
      table.sort(c); out.ptr[k] = (n % 2 == 1) and c[(n + 1) / 2] or (c[n / 2] + c[n / 2 + 1]) / 2]]

describe("agt check", function()
  it("passes the shipped example rule against its reference, and the example attack", function()
    local r = CK.file(host.root .. "/examples/custom_rule.lua", { reference = "trimmed-mean" })
    assert.are.equal("rule", r.kind)
    assert.are.equal(0, r.failed)
    assert.is_true(by_name(r)["agrees with trimmed-mean"].ok)
    r = CK.file(host.root .. "/examples/custom_attack.lua")
    assert.are.equal("attack", r.kind)
    assert.are.equal(0, r.failed)
  end)

  it("names a typo'd field and stops there", function()
    local p = file("typo.lua", (RULE:format("typo", MEDIAN, "{}"):gsub("requires =", "require =")))
    local r = CK.file(p)
    assert.are.equal(1, r.failed)
    assert.matches("require: is not a field of a rule %(did you mean 'requires'%?%)", r.checks[1].detail)
  end)

  it("finds a number returned for the info, and 0-based selected rows", function()
    local r = by_name(CK.file(file("num.lua", RULE:format("num", MEDIAN, "0.5"))))
    assert.is_false(r["finite output and valid info"].ok)
    assert.matches("returns its info as a table", r["finite output and valid info"].detail)
    r = by_name(CK.file(file("zero.lua", RULE:format("zero", MEDIAN, "{ selected = { 0 } }"))))
    assert.matches("got 0", r["finite output and valid info"].detail)
  end)

  it("finds an order-dependent rule, NaN let through, and a disagreement with the reference", function()
    local first = "out.ptr[k] = G.ptr[k]"
    local r = by_name(CK.file(file("first.lua", RULE:format("first", first, "{}"))))
    assert.is_false(r["permutation invariant"].ok)
    assert.is_true(r["deterministic"].ok)
    r = by_name(CK.file(file("mean.lua", RULE:format("mean", MEAN, "{}")), { reference = "median" }))
    assert.is_true(r["permutation invariant"].ok)
    assert.is_false(r["finite with 1 NaN rows"].ok)
    assert.matches("out%[1%] = nan", r["finite with 1 NaN rows"].detail)
    assert.is_false(r["agrees with median"].ok)
    r = by_name(CK.file(file("med.lua", RULE:format("med", MEDIAN, "{}")), { reference = "median" }))
    assert.is_true(r["agrees with median"].ok)
    assert.is_true(r["finite with 2 +inf rows"].ok)
  end)

  it("finds a requirement refused without naming n and f", function()
    local p = file("req.lua", RULE:format("req", MEDIAN, "{}"):gsub("aggregate = function",
      "init = function(self) if self.n < 2 * self.f + 1 then error('too few', 0) end end,\n  aggregate = function")
      :gsub("requires = {[^\n]*\n", ""))
    local r = by_name(CK.file(p))
    assert.is_false(r["requirement at f=1"].ok)
    assert.matches("without naming n and f: too few", r["requirement at f=1"].detail)
  end)

  it("finds an attack that writes an honest row", function()
    local p = file("leak.lua", [[
return { name = "leak", apply = function(self, c)
  for _, i in ipairs(c.byz) do c.G:row(i):fill(1) end
  c.G:row(c.honest[1]):fill(0)
end }]])
    local r = by_name(CK.file(p))
    assert.is_false(r["leaves the honest rows untouched"].ok)
    assert.matches("wrote honest row%(s%) 1", r["leaves the honest rows untouched"].detail)
    assert.is_true(r["writes the Byzantine rows"].ok)
  end)

  it("exits 0 when every check passes, 1 when one fails, 2 on a bad command", function()
    local rc, out = H.agt_run("check " .. H.shell_quote(host.root .. "/examples/custom_rule.lua"))
    assert.are.equal(0, rc)
    assert.matches("0 failed", out)
    rc, out = H.agt_run("check " .. H.shell_quote(host.root .. "/lua/aggregators/average.lua"))
    assert.are.equal(1, rc)
    assert.matches("FAIL finite with 1 NaN rows", out)
    rc = H.agt_run("check")
    assert.are.equal(2, rc)
  end)
end)
