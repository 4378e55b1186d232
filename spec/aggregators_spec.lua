-- aggregators_spec.lua — every aggregation rule against its plain-Lua reference
-- (spec/gar_reference.lua) on random inputs with ties, duplicate rows, NaN and ±inf rows,
-- n from the rule's minimum up to 64 and d not a multiple of any vector width; results
-- bit-identical for 1, 2 and 3 threads; the registry, chains, n/f checks, state and user rules.
local A = require("agt.aggregators")
local Ref = require("gar_reference")
local T = require("agt.tensor")
local Rng = require("agt.rng")
local P = require("agt.pool")
local ffi = require("ffi")
pcall(ffi.cdef, "int memcmp(const void *a, const void *b, size_t n);")

local inf, nan = math.huge, 0 / 0
local f32 = Ref.f32

-- G as Lua rows and as an engine tensor. Values: mostly multiples of 0.5 in [-2, 2] (ties;
-- exact in float32 so distances are exact), some normal rows, row 2 a copy of row 1, and,
-- when bad, a NaN row, a +inf row, a -inf row and scattered non-finite values.
local function make_G(rng, n, d, bad)
  local rows = {}
  for i = 1, n do
    local r = {}
    local normal = rng:below(4) == 0
    for k = 1, d do
      r[k] = normal and f32(rng:normal1()) or (rng:below(9) - 4) * 0.5
    end
    rows[i] = r
  end
  if n >= 3 then rows[2] = { unpack(rows[1]) } end
  if bad then
    local specials = { nan, inf, -inf }
    for q = 1, math.min(3, math.floor(n / 4)) do
      local i = rng:below(n) + 1
      for k = 1, d do rows[i][k] = specials[q] end
    end
    for _ = 1, math.floor(d / 4) do
      rows[rng:below(n) + 1][rng:below(d) + 1] = specials[rng:below(3) + 1]
    end
  end
  local G = T.new({ n, d })
  local p = G.ptr
  for i = 1, n do for k = 1, d do p[(i - 1) * d + k - 1] = rows[i][k] end end
  return rows, G
end

local function same(a, b) return a == b or (a ~= a and b ~= b) end
local function close(a, b, rtol, atol)
  if same(a, b) then return true end
  return math.abs(a - b) <= atol + rtol * math.abs(b)
end

-- compares a d-tensor (or n2×d) with a reference list; returns nil or a message
local function compare(out, want, rtol, atol, what)
  local p = out.ptr
  local flat = {}
  if type(want[1]) == "table" then
    for _, r in ipairs(want) do for _, v in ipairs(r) do flat[#flat + 1] = v end end
  else
    flat = want
  end
  if #out ~= #flat then return what .. ": size " .. #out .. " vs " .. #flat end
  for k = 1, #flat do
    local ok = rtol and close(p[k - 1], flat[k], rtol, atol) or (not rtol and same(p[k - 1], flat[k]))
    if not ok then
      return string.format("%s: value %d is %.9g, reference %.9g", what, k, p[k - 1], flat[k])
    end
  end
end

-- n values from the minimum up to 64
local function ns_from(min, cap)
  cap = cap or 64
  local t = { min, min + 1, min + 2, math.floor((min + cap) / 2), cap }
  local out, seen = {}, {}
  for _, v in ipairs(t) do if v <= cap and v >= min and not seen[v] then seen[v] = true; out[#out + 1] = v end end
  return out
end

-- each case: name, minimum n for f, largest f for n, run(rule, G, out), reference(rows, f, n)
local cases = {
  { name = "average", min = function() return 1 end, fmax = function() return 0 end,
    ref = function(G) return Ref.average(G) end },
  { name = "average-nan", min = function() return 1 end, fmax = function() return 0 end,
    ref = function(G) return Ref.average_nan(G) end },
  { name = "median", min = function(f) return 2 * f + 1 end, fmax = function(n) return math.floor((n - 1) / 2) end,
    ref = function(G) return Ref.median(G) end },
  { name = "trimmed-mean", min = function(f) return 2 * f + 1 end, fmax = function(n) return math.floor((n - 1) / 2) end,
    ref = function(G, f) return Ref.trimmed_mean(G, f) end },
  { name = "averaged-median", min = function(f) return 2 * f + 1 end, fmax = function(n) return math.floor((n - 1) / 2) end,
    ref = function(G, f, n) return Ref.meamed(G, n - f) end },
  { name = "meamed", min = function(f) return 2 * f + 1 end, fmax = function(n) return math.floor((n - 1) / 2) end,
    ref = function(G, f, n) return Ref.meamed(G, n - f) end },
  { name = "phocas", min = function(f) return 2 * f + 1 end, fmax = function(n) return math.floor((n - 1) / 2) end,
    ref = function(G, f) return Ref.phocas(G, f) end },
  { name = "krum", min = function(f) return 2 * f + 3 end, fmax = function(n) return math.floor((n - 3) / 2) end,
    ref = function(G, f) return Ref.krum(G, f) end },
  { name = "multi-krum", min = function(f) return 2 * f + 3 end, fmax = function(n) return math.floor((n - 3) / 2) end,
    ref = function(G, f, n) return Ref.multi_krum(G, f, n - f) end },
  { name = "krum-co", min = function(f) return 2 * f + 3 end, fmax = function(n) return math.floor((n - 3) / 2) end,
    ref = function(G, f, n) return Ref.multi_krum(G, f, n - f - 2) end },
  { name = "bulyan", min = function(f) return 4 * f + 3 end, fmax = function(n) return math.floor((n - 3) / 4) end,
    ref = function(G, f) return Ref.bulyan(G, f) end },
  { name = "cge", min = function(f) return 2 * f + 1 end, fmax = function(n) return math.floor((n - 1) / 2) end,
    ref = function(G, f) return Ref.cge(G, f) end },
  { name = "mda", min = function(f) return 2 * f + 1 end, fmax = function(n) return math.min(3, math.floor((n - 1) / 2)) end,
    cap = 13, ref = function(G, f) return Ref.mda(G, f) end },
  { name = "geometric-median", min = function(f) return 2 * f + 1 end, fmax = function(n) return math.floor((n - 1) / 2) end,
    args = { ["max-iter"] = 6, tol = 0 }, rtol = 2e-3, atol = 1e-3, finite_only = true,
    ref = function(G) return Ref.geometric_median(G, 1e-6, 6, 0) end },
  { name = "centered-clipping", min = function(f) return 2 * f + 1 end, fmax = function(n) return math.floor((n - 1) / 2) end,
    args = { tau = 3, iters = 2 }, rtol = 1e-4, atol = 1e-5,
    ref = function(G)
      local z = {}
      for k = 1, #G[1] do z[k] = 0 end
      return Ref.centered_clipping(G, z, 3, 2)
    end },
}

describe("aggregation rules match their plain-Lua reference", function()
  local rng = Rng.new(20261127, "aggregators_spec")
  for _, c in ipairs(cases) do
    it(c.name, function()
      local count = 0
      for _, d in ipairs({ 37, 5 }) do
        for _, n in ipairs(ns_from(c.min(0), c.cap)) do
          local fs = { 0, c.fmax(n), math.floor(c.fmax(n) / 2) }
          for fi, f in ipairs(fs) do
            if n >= c.min(f) and (fi == 1 or f ~= fs[1]) then
              local bad = not c.finite_only and (n + fi) % 2 == 0
              local rows, G = make_G(rng, n, d, bad)
              local rule = A.new(c.name, n, f, c.args)
              local out = T.new({ d })
              local info = rule:aggregate(G, out)
              local want, wsel = c.ref(rows, f, n)
              local err = compare(out, want, c.rtol, c.atol or 0,
                                  string.format("%s n=%d f=%d d=%d", c.name, n, f, d))
              assert.is_nil(err)
              if wsel then assert.are.same(wsel, info.selected) end
              count = count + 1
            end
          end
        end
      end
      assert.is_true(count >= 5)
    end)
  end
end)

describe("pre-aggregation steps match their reference", function()
  local rng = Rng.new(7, "aggregators_spec_pre")
  it("nnm", function()
    -- d = 37: the portable loop; d = 200: 64-column blocks (the lists sharing their prefix sums)
    for _, d in ipairs({ 37, 200 }) do
      for _, n in ipairs({ 2, 7, 30, 64 }) do
        local f = math.floor((n - 1) / 3)
        local rows, G = make_G(rng, n, d, n % 2 == 1)
        local rule = A.new("nnm,average", n, f)
        local O = T.new({ n, d })
        rule.elements[1].d = d
        rule.elements[1]:aggregate(G, O)
        assert.is_nil(compare(O, Ref.nnm(rows, f), nil, 0, "nnm n=" .. n .. " d=" .. d))
      end
    end
  end)
  it("bucketing with the caller's rng", function()
    local n, s = 11, 3
    local rows, G = make_G(rng, n, 37, true)
    local rule = A.new("bucketing,average", n, 2, { s = s })
    local O = T.new({ 4, 37 })
    rule.elements[1].d = 37
    local r1 = Rng.new(5, "perm")
    rule.elements[1]:aggregate(G, O, { rng = r1 })
    local perm = Rng.new(5, "perm"):permutation(n)
    local p1 = {}
    for i = 1, n do p1[i] = perm[i] + 1 end
    assert.is_nil(compare(O, Ref.bucketing(rows, s, p1), nil, 0, "bucketing"))
  end)
  it("clipping and arc", function()
    for _, n in ipairs({ 3, 10, 64 }) do
      local f = math.floor(n / 3)
      local rows, G = make_G(rng, n, 37, true)
      for _, step in ipairs({ "clipping", "arc" }) do
        local rule = A.new(step .. ",average", n, f, step == "clipping" and { c = 1.5 } or nil)
        local O = T.new({ n, 37 })
        rule.elements[1].d = 37
        rule.elements[1]:aggregate(G, O)
        local want = step == "clipping" and Ref.clipping(rows, 1.5) or Ref.arc(rows, f)
        assert.is_nil(compare(O, want, 1e-6, 1e-7, step .. " n=" .. n))
      end
    end
  end)
  it("a chain equals its steps run one after the other", function()
    local n, f, d = 20, 2, 37
    local rows, G = make_G(rng, n, d, true)
    local out = T.new({ d })
    local r = A.new("nnm,clipping,krum", n, f, { c = 3 })
    r:aggregate(G, out)
    local want = Ref.krum(Ref.clipping(Ref.nnm(rows, f), 3), f)
    assert.is_nil(compare(out, want, 1e-6, 1e-7, "nnm,clipping,krum"))
  end)
end)

describe("results do not depend on the thread count", function()
  it("every rule and step, 1 vs 2 vs 3 threads, bit for bit", function()
    local n, f, d = 25, 5, 70001
    local G = T.new({ n, d })
    Rng.new(3, "threads"):normal(G, 0, 1)
    for k = 0, d - 1, 13 do G.ptr[2 * d + k] = nan end
    ffi.copy(G.ptr + 9 * d, G.ptr + 8 * d, 4 * d)
    local specs = {}
    for _, name in ipairs(A.list()) do
      local def = A.find(name).def
      specs[#specs + 1] = def.kind == "pre" and (name .. ",average") or name
    end
    specs[#specs + 1] = "nnm,bucketing,krum"
    for _, spec in ipairs(specs) do
      local outs = {}
      for t = 1, 3 do
        P.set_threads(t)
        local rule = A.new(spec, n, f, spec == "geometric-median" and { ["max-iter"] = 4 } or nil)
        outs[t] = T.new({ d })
        rule:aggregate(G, outs[t], { rng = Rng.new(9, "bucket") })
      end
      P.set_threads(0)
      assert.are.equal(0, ffi.C.memcmp(outs[1].ptr, outs[2].ptr, 4 * d), spec .. ": 1 vs 2 threads")
      assert.are.equal(0, ffi.C.memcmp(outs[1].ptr, outs[3].ptr, 4 * d), spec .. ": 1 vs 3 threads")
    end
  end)
end)

describe("the registry", function()
  it("lists every rule and step, and help names them with their requirement", function()
    local names = A.list()
    for _, want in ipairs({ "average", "average-nan", "median", "trimmed-mean", "averaged-median",
                            "phocas", "krum", "multi-krum", "bulyan", "geometric-median",
                            "centered-clipping", "mda", "cge", "nnm", "bucketing", "clipping", "arc" }) do
      local found = false
      for _, nm in ipairs(names) do found = found or nm == want end
      assert.is_true(found, want)
    end
    local h = A.help()
    assert.truthy(h:find("bulyan (aliases: bulyan-co, bulyan-py) — needs n >= 4f+3", 1, true))
    assert.truthy(h:find("meamed", 1, true))
    assert.truthy(h:find("krum-co", 1, true))
  end)
  it("refuses n, f that a rule cannot take, naming both numbers", function()
    assert.has_error(function() A.new("bulyan", 10, 2) end, "bulyan needs n >= 4f+3, got n=10 f=2")
    assert.has_error(function() A.new("krum", 6, 2) end, "krum needs n >= 2f+3, got n=6 f=2")
    assert.has_error(function() A.new("median", 4, 2) end, "median needs n >= 2f+1, got n=4 f=2")
  end)
  it("re-checks n and f after each step, naming the step", function()
    -- bucketing with s=2 turns n=13 into 7, f stays 3: krum needs 9
    assert.has_error(function() A.new("nnm,bucketing,krum", 13, 3, { s = 2 }) end,
                     "krum (after nnm,bucketing) needs n >= 2f+3, got n=7 f=3")
    assert.has_error(function() A.new("nnm,bucketing", 10, 1) end)
    assert.has_error(function() A.new("krum,median", 10, 1) end)
    local r = A.new("nnm,bucketing,krum", 13, 1, { s = 2 })
    assert.are.equal("nnm,bucketing,krum", r.name)
  end)
  it("refuses unknown rules and unknown arguments", function()
    local ok, err = pcall(A.new, "nosuchrule", 5, 1)
    assert.is_false(ok)
    assert.truthy(err:find("unknown aggregation rule 'nosuchrule'", 1, true))
    ok, err = pcall(A.new, "krum", 9, 1, { m = 2 })
    assert.is_false(ok)
    assert.truthy(err:find("unknown key 'm'", 1, true))
    ok, err = pcall(A.new, "mda", 40, 10)
    assert.is_false(ok)
    assert.truthy(err:find("budget", 1, true))
  end)
  it("takes key:value words and step-qualified keys", function()
    local r = A.new("multi-krum", 12, 2, { "m:3" })
    assert.are.equal(3, r.args.m)
    local c = A.new("clipping,bucketing,median", 16, 2, { "bucketing.s:3", "c:0.5" })
    assert.are.equal(3, c.elements[2].args.s)
    assert.are.equal(0.5, c.elements[1].args.c)
  end)
  it("reports selected rows through steps that keep rows, not through bucketing", function()
    local rows, G = make_G(Rng.new(2, "sel"), 12, 9, false)
    local out = T.new({ 9 })
    assert.are.equal(1, #A.new("nnm,clipping,krum", 12, 2):aggregate(G, out).selected)
    assert.is_nil(A.new("bucketing,krum", 12, 1):aggregate(G, out, { rng = Rng.new(1, "b") }).selected)
  end)
  it("refuses a G or out of the wrong size", function()
    local G, out = T.new({ 11, 9 }), T.new({ 9 })
    assert.has_error(function() A.new("median", 12, 2):aggregate(G, out) end)
    assert.has_error(function() A.new("median", 11, 2):aggregate(G, T.new({ 8 })) end)
  end)
  it("krum-co is multi-krum with m = n-f-2", function()
    local rows, G = make_G(Rng.new(1, "co"), 12, 9, false)
    local out = T.new({ 9 })
    local info = A.new("krum-co", 12, 2):aggregate(G, out)
    assert.are.equal(8, #info.selected)
  end)
end)

describe("state", function()
  it("centered clipping continues exactly from a saved state", function()
    local n, d = 9, 101
    local G1, G2 = T.new({ n, d }), T.new({ n, d })
    Rng.new(1, "a"):normal(G1, 0, 1)
    Rng.new(1, "b"):normal(G2, 0, 1)
    local a, b = T.new({ d }), T.new({ d })
    local r1 = A.new("centered-clipping", n, 2)
    r1:aggregate(G1, a)
    local saved = r1:state()
    r1:aggregate(G2, a)
    local r2 = A.new("centered-clipping", n, 2)
    r2:set_state(saved)
    r2:aggregate(G2, b)
    assert.are.equal(0, ffi.C.memcmp(a.ptr, b.ptr, 4 * d))
  end)
  it("bucketing's own stream is saved and restored", function()
    local n, d = 10, 17
    local G = T.new({ n, d })
    Rng.new(2, "g"):normal(G, 0, 1)
    local r1 = A.new("bucketing,median", n, 1, { s = 2 })
    local a, b = T.new({ d }), T.new({ d })
    r1:aggregate(G, a)
    local saved = r1:state()
    r1:aggregate(G, a)
    local r2 = A.new("bucketing,median", n, 1, { s = 2 })
    r2:set_state(saved)
    r2:aggregate(G, b)
    assert.are.equal(0, ffi.C.memcmp(a.ptr, b.ptr, 4 * d))
    assert.is_nil(A.new("krum", 9, 1):state())
  end)
end)

describe("a user's rule file", function()
  it("loads by path and aggregates", function()
    local host = require("agt.host")
    local path = host.root .. "/examples/custom_rule.lua"
    local n, d = 7, 23
    local rows, G = make_G(Rng.new(4, "u"), n, d, false)
    local rule = A.new(path, n, 1)
    local out = T.new({ d })
    rule:aggregate(G, out)
    local want = Ref.trimmed_mean(rows, 1)
    assert.is_nil(compare(out, want, 1e-6, 1e-6, "custom rule"))
    assert.has_error(function() A.new(path, 2, 1) end)
  end)
end)

describe("rule state reset", function()
  it("set_state(nil) puts centered clipping back to its first-step state", function()
    local A = require("agt.aggregators")
    local T = require("agt.tensor")
    local G = require("agt.rng").new(3, 1):normal(T.new({ 5, 9 }), 0, 1)
    local fresh, used = A.new("centered-clipping", 5, 1, {}), A.new("centered-clipping", 5, 1, {})
    assert.is_nil(used:state())
    local a, b = T.new({ 9 }), T.new({ 9 })
    used:aggregate(G, b) -- now it has a previous output
    assert.is_not_nil(used:state())
    used:set_state(nil)
    assert.is_nil(used:state())
    fresh:aggregate(G, a)
    used:aggregate(G, b)
    assert.are.same(a:totable(), b:totable())
  end)
end)
