-- Specs of agt.attacks: every attack against its definition on small hand-made inputs, the
-- Byzantine selection, argument parsing, the search attacks' objective, and state resume.
local K = require("agt.attacks")
local T = require("agt.tensor")
local R = require("agt.rng")
local host = require("agt.host")
local A = require("agt.aggregators")

local function mat(rows)
  return T.from_table(rows)
end

local function row(G, i)
  local d = G:size(2)
  local out = {}
  for j = 1, d do out[j] = G[(i - 1) * d + j] end
  return out
end

local function near(a, b, tol)
  tol = tol or 1e-5
  assert.are.equal(#a, #b)
  for j = 1, #a do
    if math.abs(a[j] - b[j]) > tol * math.max(1, math.abs(b[j])) then
      error(string.format("coordinate %d: %.9g vs expected %.9g", j, a[j], b[j]), 2)
    end
  end
end

-- Six workers, the last two Byzantine (fixed selection). Honest mean (2, 2, 2); population
-- std (1, sqrt 2, 1). Rows 5 and 6 start as their own honest gradients.
local HONEST = { { 1, 2, 3 }, { 3, 2, 1 }, { 1, 0, 1 }, { 3, 4, 3 } }
local function six()
  return mat({ HONEST[1], HONEST[2], HONEST[3], HONEST[4], { 10, 20, 30 }, { -5, 7, 9 } })
end

local function quiet() end

local function run(name, args, G, opts)
  opts = opts or {}
  local atk = K.new(name, args, { n = G:size(1), f = opts.f or 2, r = opts.r, seed = opts.seed or 7,
                                  rule = opts.rule, warn = quiet })
  local byz = opts.byz or atk:byzantine(opts.step or 1)
  local info = atk:apply({ G = G, byz = byz, honest = atk:honest(byz), step = opts.step or 1,
                           rule = opts.rule, rng = opts.rng })
  return atk, info, byz
end

local function honest_unchanged(G)
  for i = 1, 4 do near(row(G, i), HONEST[i], 0) end
end

describe("attack registry", function()
  it("lists every attack of the library and documents each", function()
    local names = K.list()
    local want = { "random", "gaussian", "zero", "nan", "inf", "reverse", "drop", "lie", "empire",
      "mimic", "label-flip", "poison-data", "optimal-lie", "optimal-empire", "minmax", "minsum", "fang" }
    local have = {}
    for _, n in ipairs(names) do have[n] = true end
    for _, n in ipairs(want) do
      assert.is_true(have[n], n)
      local def = K.load(n)
      assert.are.equal(n, def.name)
      assert.is_string(def.doc)
      assert.is_string(def.paper)
      for _, s in ipairs(def.args) do assert.is_string(s.doc, n .. ":" .. s.name) end
    end
    local help = K.help()
    for _, n in ipairs(want) do assert.truthy(help:find("\n" .. n .. " (", 1, true), n) end
  end)

  it("refuses unknown names and arguments, naming what is known", function()
    local ok, err = pcall(K.new, "nope", {}, { n = 5, f = 1 })
    assert.is_false(ok)
    assert.truthy(err:find("unknown attack 'nope'", 1, true))
    assert.truthy(err:find("reverse", 1, true))
    ok, err = pcall(K.new, "reverse", { "factr:2" }, { n = 5, f = 1 })
    assert.is_false(ok)
    assert.truthy(err:find("unknown key 'factr'", 1, true))
    assert.truthy(err:find("factor", 1, true))
    ok, err = pcall(K.new, "reverse", { "factor:big" }, { n = 5, f = 1 })
    assert.is_false(ok)
    assert.truthy(err:find("'factor' expects a number", 1, true))
    ok, err = pcall(K.new, "reverse", {}, { n = 5, f = 1, r = 6 })
    assert.is_false(ok)
    assert.truthy(err:find("r=6 n=5", 1, true))
    ok, err = pcall(K.new, "drop", { "fraction:1.5" }, { n = 5, f = 1 })
    assert.is_false(ok)
    assert.truthy(err:find("fraction=1.5", 1, true))
  end)

  it("takes arguments as key:value words or as a table", function()
    local a = K.new("lie", { "z:1.25", "ddof:1" }, { n = 5, f = 1 })
    assert.are.equal(1.25, a.args.z)
    assert.are.equal(1, a.args.ddof)
    local b = K.new("optimal-lie", { evals = "4", delta = 2 }, { n = 5, f = 1 })
    assert.are.equal(4, b.args.evals)
    assert.are.equal(2, b.args.delta)
    assert.are.equal("fixed", b.selection)
  end)

  it("warns when more workers attack than the rule is told about", function()
    local msgs = {}
    K.new("zero", {}, { n = 7, f = 1, r = 3, warn = function(m) msgs[#msgs + 1] = m end })
    assert.are.equal(1, #msgs)
    assert.truthy(msgs[1]:find("3 real Byzantine workers exceed the 1", 1, true))
    local none = {}
    K.new("zero", {}, { n = 7, f = 3, r = 3, warn = function(m) none[#none + 1] = m end })
    assert.are.equal(0, #none)
  end)

  it("loads a user's attack by path", function()
    local path = host.root .. "/examples/custom_attack.lua"
    local G = six()
    local atk = run(path, { "scale:3" }, G)
    assert.are.equal("sign-push", atk.name)
    near(row(G, 5), { -1, -1, -1 })
    near(row(G, 6), { -1, -1, -1 })
    honest_unchanged(G)
  end)

  it("registers an attack defined in Lua", function()
    K.register({ name = "spec-constant", doc = "7s", args = {}, apply = function(self, c)
      for _, i in ipairs(c.byz) do require("agt.ffi").C.agt_vec_fill(self:row(c, i), c.d, 7) end
    end })
    local G = six()
    run("spec-constant", {}, G)
    near(row(G, 6), { 7, 7, 7 })
  end)
end)

describe("Byzantine selection", function()
  it("is the last r workers when fixed", function()
    local atk = K.new("zero", {}, { n = 11, f = 3, r = 2, warn = quiet })
    assert.are.same({ 10, 11 }, atk:byzantine(1))
    assert.are.same({ 10, 11 }, atk:byzantine(99))
    assert.are.same({ 1, 2, 3, 4, 5, 6, 7, 8, 9 }, atk:honest({ 10, 11 }))
    assert.are.same({}, K.new("zero", {}, { n = 11, f = 3, r = 0 }):byzantine(1))
  end)

  it("is drawn anew each step from the seed when random", function()
    local a = K.new("zero", { "selection:random" }, { n = 11, f = 3, seed = 42 })
    local b = K.new("zero", { "selection:random" }, { n = 11, f = 3, seed = 42 })
    local c = K.new("zero", { "selection:random" }, { n = 11, f = 3, seed = 43 })
    local distinct_sets, differs_from_other_seed = {}, false
    for step = 1, 20 do
      local s = a:byzantine(step)
      assert.are.same(s, b:byzantine(step))          -- same seed, same step: same set
      assert.are.same(s, a:byzantine(step))          -- and independent of call order
      assert.are.equal(3, #s)
      for k = 1, 3 do
        assert.is_true(s[k] >= 1 and s[k] <= 11)
        if k > 1 then assert.is_true(s[k] > s[k - 1]) end
      end
      distinct_sets[table.concat(s, ",")] = true
      if table.concat(s, ",") ~= table.concat(c:byzantine(step), ",") then differs_from_other_seed = true end
    end
    local count = 0
    for _ in pairs(distinct_sets) do count = count + 1 end
    assert.is_true(count > 5)
    assert.is_true(differs_from_other_seed)
  end)

  it("attacks the step's own Byzantine rows when the context names none", function()
    local atk = K.new("zero", { "selection:random" }, { n = 6, f = 2, seed = 3 })
    local G = six()
    atk:apply({ G = G, step = 5 })
    local byz = atk:byzantine(5)
    local is_byz = {}
    for _, i in ipairs(byz) do is_byz[i] = true; near(row(G, i), { 0, 0, 0 }, 0) end
    local src = six()
    for i = 1, 6 do if not is_byz[i] then near(row(G, i), row(src, i), 0) end end
  end)

  it("keeps data attacks on fixed workers", function()
    assert.has_error(function() K.new("label-flip", { "selection:random" }, { n = 5, f = 1 }) end)
  end)
end)

describe("attacks against their definitions", function()
  it("zero, nan and inf", function()
    local G = six(); run("zero", {}, G); near(row(G, 5), { 0, 0, 0 }, 0); near(row(G, 6), { 0, 0, 0 }, 0)
    honest_unchanged(G)
    G = six(); run("nan", {}, G)
    for j = 13, 18 do assert.is_true(G[j] ~= G[j]) end
    honest_unchanged(G)
    G = six(); run("inf", {}, G)
    for j = 13, 18 do assert.are.equal(math.huge, G[j]) end
    G = six(); run("inf", { "sign:-1" }, G)
    for j = 13, 18 do assert.are.equal(-math.huge, G[j]) end
  end)

  it("random draws each attacker's own vector in [lo, hi)", function()
    local G = six()
    run("random", { "lo:-2", "hi:-1" }, G)
    for j = 13, 18 do assert.is_true(G[j] >= -2 and G[j] < -1) end
    assert.are_not.same(row(G, 5), row(G, 6))
    honest_unchanged(G)
    local H = six()
    run("random", { "lo:-2", "hi:-1" }, H)    -- same seed and step: same draw
    near(row(H, 5), row(G, 5), 0)
    assert.has_error(function() K.new("random", { "lo:1", "hi:1" }, { n = 6, f = 2 }) end)
  end)

  it("gaussian draws N(mean, std) per coordinate", function()
    local G = six()
    run("gaussian", { "mean:5", "std:0" }, G)
    near(row(G, 5), { 5, 5, 5 }, 0)
    local d = 20000
    local B = T.new({ 3, d })
    local atk = K.new("gaussian", { "mean:1", "std:2" }, { n = 3, f = 1, seed = 1 })
    atk:apply({ G = B, byz = { 3 }, honest = { 1, 2 }, step = 0 })
    local v = B:row(3)
    local m = v:mean()
    local var = 0
    for j = 1, d do var = var + (v[j] - m) ^ 2 end
    var = var / d
    assert.is_true(math.abs(m - 1) < 0.06, "mean " .. m)
    assert.is_true(math.abs(math.sqrt(var) - 2) < 0.06, "std " .. math.sqrt(var))
    assert.are.equal(0, B:row(1):norm())
  end)

  it("reverse sends -factor times the honest mean, or its own gradient", function()
    local G = six(); run("reverse", {}, G)
    near(row(G, 5), { -2, -2, -2 }); near(row(G, 6), { -2, -2, -2 })
    honest_unchanged(G)
    G = six(); run("reverse", { "factor:100" }, G)
    near(row(G, 6), { -200, -200, -200 })
    G = six(); run("reverse", { "factor:2", "of:own" }, G)
    near(row(G, 5), { -20, -40, -60 }); near(row(G, 6), { 10, -14, -18 })
  end)

  it("drop really zeroes a fraction of the attacker's own coordinates", function()
    local G = six(); run("drop", { "fraction:0" }, G)
    near(row(G, 5), { 10, 20, 30 }, 0)
    G = six(); run("drop", { "fraction:1" }, G)
    near(row(G, 5), { 0, 0, 0 }, 0); near(row(G, 6), { 0, 0, 0 }, 0)
    local d = 10000
    local B = T.new({ 3, d })
    for j = 1, 3 * d do B[j] = 1 + (j % 7) end
    local atk = K.new("drop", { "fraction:0.3" }, { n = 3, f = 1, seed = 2 })
    local info = atk:apply({ G = B, byz = { 3 }, honest = { 1, 2 }, step = 4 })
    local zeros = 0
    for j = 2 * d + 1, 3 * d do
      if B[j] == 0 then zeros = zeros + 1 else assert.are.equal(1 + (j % 7), B[j]) end
    end
    assert.are.equal(zeros, info.dropped)
    assert.is_true(math.abs(zeros / d - 0.3) < 0.02, "dropped " .. zeros / d)
    for j = 1, 2 * d do assert.is_true(B[j] ~= 0) end
  end)

  it("lie sends mu + z sigma, z derived from n and m as in the paper", function()
    local G = six(); run("lie", { "z:1.5" }, G)
    near(row(G, 5), { 3.5, 2 + 1.5 * math.sqrt(2), 3.5 })
    near(row(G, 6), { 3.5, 2 + 1.5 * math.sqrt(2), 3.5 })
    honest_unchanged(G)
    G = six(); run("lie", { "z:-1", "ddof:1" }, G)
    local s1 = math.sqrt(4 / 3)
    near(row(G, 5), { 2 - s1, 2 - math.sqrt(8 / 3), 2 - s1 })
    -- n = 6, m = 2: s = floor(6/2 + 1) - 2 = 2, z = Phi^-1(4/6) = 0.4307273.
    local atk, info = run("lie", {}, six())
    assert.is_true(math.abs(info.z - 0.4307273) < 1e-6, info.z)
    assert.is_true(math.abs(K.normal_quantile(0.975) - 1.959964) < 1e-6)
    assert.is_true(math.abs(K.normal_cdf(-1) - 0.1586553) < 1e-7)
    assert.is_true(math.abs(K.normal_cdf(4.5) - 0.9999966) < 1e-7)
    -- n = 50, m = 24: s = 2, z = Phi^-1(0.96) = 1.750686.
    assert.is_true(math.abs(K.lie_z(50, 24) - 1.750686) < 1e-6)
    assert.are.equal(atk.z, info.z)
  end)

  it("empire sends -epsilon mu", function()
    local G = six(); run("empire", {}, G)
    near(row(G, 5), { -0.2, -0.2, -0.2 })
    G = six(); run("empire", { "epsilon:0.5" }, G)
    near(row(G, 6), { -1, -1, -1 })
    honest_unchanged(G)
  end)

  it("mimic copies a fixed honest worker", function()
    local G = six(); local _, info = run("mimic", { "target:2" }, G)
    near(row(G, 5), HONEST[2], 0); near(row(G, 6), HONEST[2], 0)
    assert.are.equal(2, info.target)
    G = six(); run("mimic", {}, G)
    near(row(G, 6), HONEST[1], 0)
    assert.has_error(function() run("mimic", { "target:5" }, six()) end)
  end)

  it("label-flip and poison-data are data-level: the experiment poisons, G is left alone", function()
    for _, name in ipairs({ "label-flip", "poison-data" }) do
      local G = six()
      local atk = run(name, {}, G)
      assert.are.equal("data", atk.kind)
      assert.are.equal(name, atk.poison)
      near(row(G, 5), { 10, 20, 30 }, 0)
    end
  end)
end)

-- The honest rows of a larger, random problem: n workers, the last r Byzantine.
local function random_problem(n, r, d, seed, shift)
  local G = T.new({ n, d })
  local g = R.new(seed, 1)
  g:normal(G, 0, 1)
  for i = 1, n do
    for j = 1, d do G[(i - 1) * d + j] = G[(i - 1) * d + j] + (shift or 0.5) end
  end
  local byz, honest = {}, {}
  for i = 1, n - r do honest[#honest + 1] = i end
  for i = n - r + 1, n do byz[#byz + 1] = i end
  return G, honest, byz
end

local function honest_stats(G, honest)
  local d = G:size(2)
  local mu = {}
  for j = 1, d do
    local s = 0
    for _, i in ipairs(honest) do s = s + G[(i - 1) * d + j] end
    mu[j] = s / #honest
  end
  return mu
end

local function dist(G, i, v)
  local d, s = G:size(2), 0
  for j = 1, d do s = s + (G[(i - 1) * d + j] - v[j]) ^ 2 end
  return s
end

describe("minmax and minsum", function()
  for _, pert in ipairs({ "std", "unit", "sign" }) do
    it("take the largest gamma the honest spread allows (" .. pert .. ")", function()
      local n, r, d = 9, 3, 40
      local G, honest, byz = random_problem(n, r, d, 11)
      local mu = honest_stats(G, honest)
      local maxpair = 0
      for _, i in ipairs(honest) do
        local sum = 0
        for _, j in ipairs(honest) do
          local hj = row(G, j)
          maxpair = math.max(maxpair, dist(G, i, hj))
          sum = sum + dist(G, i, hj)
        end
      end
      local maxsum = 0
      for _, i in ipairs(honest) do
        local sum = 0
        for _, j in ipairs(honest) do sum = sum + dist(G, i, row(G, j)) end
        maxsum = math.max(maxsum, sum)
      end
      -- minmax: the farthest honest row is exactly as far as the widest honest pair.
      local M = G:clone()
      local atk, info = nil, nil
      atk = K.new("minmax", { "perturbation:" .. pert }, { n = n, f = r, seed = 1 })
      info = atk:apply({ G = M, honest = honest, byz = byz, step = 1 })
      assert.is_true(info.gamma > 0)
      local g = row(M, n)
      near(row(M, n - 1), g, 0)
      local far = 0
      for _, i in ipairs(honest) do far = math.max(far, dist(M, i, g)) end
      assert.is_true(math.abs(far - maxpair) <= 1e-4 * maxpair, far .. " vs " .. maxpair)
      -- and g = mu + gamma p with p the chosen perturbation (checked through its direction)
      local sigma = {}
      for j = 1, d do
        local s = 0
        for _, i in ipairs(honest) do s = s + (G[(i - 1) * d + j] - mu[j]) ^ 2 end
        sigma[j] = math.sqrt(s / #honest)
      end
      local munorm = 0
      for j = 1, d do munorm = munorm + mu[j] ^ 2 end
      munorm = math.sqrt(munorm)
      for j = 1, d do
        local p
        if pert == "std" then p = -sigma[j]
        elseif pert == "unit" then p = -mu[j] / munorm
        else p = mu[j] > 0 and -1 or 1 end
        assert.is_true(math.abs(g[j] - (mu[j] + info.gamma * p)) < 1e-4 * (1 + math.abs(g[j])))
      end
      -- minsum: the sum of squared distances reaches the largest honest one.
      local S = G:clone()
      local atk2 = K.new("minsum", { "perturbation:" .. pert }, { n = n, f = r, seed = 1 })
      local info2 = atk2:apply({ G = S, honest = honest, byz = byz, step = 1 })
      local gs = row(S, n)
      local sum = 0
      for _, i in ipairs(honest) do sum = sum + dist(S, i, gs) end
      assert.is_true(math.abs(sum - maxsum) <= 1e-4 * maxsum, sum .. " vs " .. maxsum)
      assert.is_true(info2.gamma > 0)
    end)
  end
end)

describe("fang", function()
  it("trim attack: beyond the honest extremes, against the mean's sign", function()
    -- honest mean (2, -2, 0); min (1, -3, -1); max (3, -1, 1)
    local G = mat({ { 1, -3, 1 }, { 3, -1, -1 }, { 2, -2, 0.5 }, { 2, -2, -0.5 }, { 0, 0, 0 }, { 0, 0, 0 } })
    local atk, info = run("fang", { "mode:trim" }, G)
    assert.are.equal("trim", info.mode)
    for i = 5, 6 do
      local v = row(G, i)
      assert.is_true(v[1] >= 0.5 and v[1] <= 1, v[1])     -- [min/b, min], min > 0
      assert.is_true(v[2] >= -1 and v[2] <= -0.5, v[2])   -- [max, max/b], max <= 0
      assert.are.equal(0, v[3])                           -- mu = 0: left at mu
    end
    assert.are_not.equal(G[13], G[16])                    -- each attacker draws its own
    G = mat({ { -1, 3, 1 }, { -3, 1, 1 }, { -2, 2, 1 }, { -2, 2, 1 }, { 0, 0, 0 }, { 0, 0, 0 } })
    run("fang", { "mode:trim", "b:3" }, G)
    local v = row(G, 5)
    assert.is_true(v[1] >= -1 and v[1] <= -1 / 3, v[1])  -- mu < 0, max = -1 <= 0: [max, max/b]
    assert.is_true(v[2] >= 1 / 3 and v[2] <= 1, v[2])    -- mu > 0, min = 1 > 0: [min/b, min]
    assert.is_true(v[3] >= 1 / 3 and v[3] <= 1, v[3])
    G = mat({ { -1, 3 }, { 1, -3 }, { 2, 2 }, { 0, 0 } })   -- mu = (2/3, 2/3): min -1 and -3 <= 0
    run("fang", { "mode:trim" }, G, { f = 1 })
    v = row(G, 4)
    assert.is_true(v[1] >= -2 and v[1] <= -1, v[1])
    assert.is_true(v[2] >= -6 and v[2] <= -3, v[2])
  end)

  it("trim attack pulls the trimmed mean and the median against the honest mean", function()
    local n, r, d = 11, 2, 50
    for _, name in ipairs({ "trimmed-mean", "median" }) do
      local G, honest, byz = random_problem(n, r, d, 8, 0.3)
      local rule = A.new(name, n, r, {})
      local mu = T.new({ d })
      T.rows_mean(G:narrow(1, n - r), mu)
      local clean, attacked = T.new({ d }), T.new({ d })
      local M = G:clone()
      K.new("zero", {}, { n = n, f = r }):apply({ G = M, honest = honest, byz = byz, step = 1 })
      rule:aggregate(M, clean, { step = 1 })
      local _, info = run("fang", {}, G, { f = r, rule = rule })
      assert.are.equal("trim", info.mode)
      rule:aggregate(G, attacked, { step = 1 })
      assert.is_true(attacked:dot(mu) < clean:dot(mu), name)
    end
  end)

  it("krum attack: -lambda sign(mu), lambda halved until Krum selects it", function()
    local n, r, d = 11, 2, 30
    local G, honest, byz = random_problem(n, r, d, 5)
    local rule = A.new("krum", n, r, {})
    local atk = K.new("fang", {}, { n = n, f = r, rule = rule, seed = 1 })
    local info = atk:apply({ G = G, honest = honest, byz = byz, step = 1, rule = rule })
    assert.are.equal("krum", info.mode)
    assert.is_true(info.selected)
    assert.is_true(info.lambda > 0)
    local mu = honest_stats(G, honest)
    local g = row(G, n)
    for j = 1, d do
      local s = mu[j] > 0 and 1 or -1
      assert.is_true(math.abs(g[j] + info.lambda * s) < 1e-5 * (1 + info.lambda))
    end
    near(row(G, n - 1), g, 0)
    local out = T.new({ d })
    local rinfo = rule:aggregate(G, out, { step = 1, rng = R.new(1, 1) })
    local picked = {}
    for _, i in ipairs(rinfo.selected) do picked[i] = true end
    assert.is_true(picked[n] or picked[n - 1])
  end)
end)

describe("search attacks", function()
  local function median_rule()
    return A.new("median", 9, 3, {})
  end

  for _, name in ipairs({ "optimal-lie", "optimal-empire" }) do
    it(name .. " moves the rule's output farther from the honest mean than its start", function()
      local n, r, d = 9, 3, 25
      local G, honest, byz = random_problem(n, r, d, 3)
      local rule = median_rule()
      local atk = K.new(name, { "evals:12" }, { n = n, f = r, rule = rule, seed = 1 })
      -- the distance at the start of the search (tau = epsilon = 0)
      local S = G:clone()
      local atk0 = K.new(name, { "evals:1" }, { n = n, f = r, rule = rule, seed = 1 })
      local info0 = atk0:apply({ G = S, honest = honest, byz = byz, step = 1, rule = rule })
      assert.are.equal(0, info0.tau or info0.epsilon)
      local calls = 0
      local counted = setmetatable({ name = rule.name, aggregate = function(_, ...)
        calls = calls + 1; return rule:aggregate(...) end,
        state = function() return rule:state() end, set_state = function(_, s) return rule:set_state(s) end }, {})
      local info = atk:apply({ G = G, honest = honest, byz = byz, step = 1, rule = counted })
      assert.is_true(calls <= 12, "evaluations " .. calls)
      assert.are.equal(calls, info.evals)
      assert.is_true(info.distance > info0.distance * 1.5, info.distance .. " vs " .. info0.distance)
      -- the rows really hold the attack the search chose, and give that distance
      local out = T.new({ d })
      rule:aggregate(G, out, { step = 1 })
      local mu = honest_stats(G, honest)
      local dd = 0
      for j = 1, d do dd = dd + (out[j] - mu[j]) ^ 2 end
      assert.is_true(math.abs(math.sqrt(dd) - info.distance) < 1e-4 * info.distance)
    end)
  end

  it("searches against the plain average when the run names no rule", function()
    local n, r, d = 7, 2, 10
    local G, honest, byz = random_problem(n, r, d, 9)
    local atk = K.new("optimal-empire", { "evals:8" }, { n = n, f = r, seed = 1 })
    local info = atk:apply({ G = G, honest = honest, byz = byz, step = 1 })
    assert.is_true(info.epsilon > 1)
  end)

  it("leaves a stateful rule as it found it", function()
    local n, r, d = 7, 2, 10
    local G, honest, byz = random_problem(n, r, d, 9)
    local rule = { name = "stateful", calls = 0 }
    function rule:aggregate(M, out) self.calls = self.calls + 1; T.rows_mean(M, out); return {} end
    function rule:state() return tostring(self.calls) end
    function rule:set_state(s) self.calls = tonumber(s) end
    local atk = K.new("optimal-lie", { "evals:6" }, { n = n, f = r, seed = 1, rule = rule })
    atk:apply({ G = G, honest = honest, byz = byz, step = 1, rule = rule })
    assert.are.equal(0, rule.calls)
  end)

  it("puts a stateful rule's state back after searching against it", function()
    local n, r, d = 7, 2, 10
    local G, honest, byz = random_problem(n, r, d, 9)
    local rule = A.new("centered-clipping", n, r, {})
    local out = T.new({ d })
    rule:aggregate(G:clone(), out, { step = 0 })      -- gives the rule a previous output
    local before = rule:state()
    assert.is_string(before)
    local atk = K.new("optimal-lie", { "evals:6" }, { n = n, f = r, seed = 1, rule = rule })
    local info = atk:apply({ G = G, honest = honest, byz = byz, step = 1, rule = rule })
    assert.are.equal(6, info.evals)
    assert.are.equal(before, rule:state())
  end)

  it("searches through a whole pipeline", function()
    local n, r, d = 11, 2, 20
    local G, honest, byz = random_problem(n, r, d, 4)
    local rule = A.new("nnm,median", n, r, {})
    local S = G:clone()
    local info0 = K.new("optimal-lie", { "evals:1" }, { n = n, f = r, seed = 1, rule = rule })
      :apply({ G = S, honest = honest, byz = byz, step = 1, rule = rule })
    local info = K.new("optimal-lie", {}, { n = n, f = r, seed = 1, rule = rule })
      :apply({ G = G, honest = honest, byz = byz, step = 1, rule = rule })
    assert.is_true(info.distance > 1.5 * info0.distance, info.distance .. " vs " .. info0.distance)
  end)

  it("line_maximize finds the top of a concave function within its budget", function()
    local calls = 0
    local x, y, used = K.line_maximize(function(t) calls = calls + 1; return -(t - 3.3) ^ 2 end,
      { evals = 30, start = 0, delta = 1, ratio = 0.7 })
    assert.are.equal(30, calls)
    assert.are.equal(30, used)
    assert.is_true(math.abs(x - 3.3) < 0.05, x)
    assert.is_true(y <= 0)
    -- a maximum on the negative side is found too
    x = K.line_maximize(function(t) return -(t + 2) ^ 2 end, { evals = 30 })
    assert.is_true(math.abs(x + 2) < 0.05, x)
  end)
end)

describe("attack state", function()
  it("mimic's principal variant resumes exactly from its saved state", function()
    local n, r, d = 8, 2, 12
    local function step_matrix(step)
      -- honest rows spread along the first coordinate, the spread growing with the worker
      local G = T.new({ n, d })
      local g = R.new(100 + step, 0)
      g:normal(G, 0, 0.1)
      for i = 1, n do G[(i - 1) * d + 1] = G[(i - 1) * d + 1] + (i - 3.5) * 2 end
      return G
    end
    local honest, byz = { 1, 2, 3, 4, 5, 6 }, { 7, 8 }
    local args = { "variant:principal", "warmup:4" }
    local a = K.new("mimic", args, { n = n, f = r, seed = 5 })
    for step = 1, 2 do a:apply({ G = step_matrix(step), honest = honest, byz = byz, step = step }) end
    local saved = a:state()
    assert.is_string(saved)
    local b = K.new("mimic", args, { n = n, f = r, seed = 5 })
    b:set_state(saved)
    local targets = {}
    for step = 3, 8 do
      local Ga, Gb = step_matrix(step), step_matrix(step)
      local ia = a:apply({ G = Ga, honest = honest, byz = byz, step = step })
      local ib = b:apply({ G = Gb, honest = honest, byz = byz, step = step })
      assert.are.equal(ia.target, ib.target)
      near(row(Ga, 7), row(Gb, 7), 0)
      targets[#targets + 1] = ia.target
    end
    -- the direction found is the first coordinate: the target is an extreme worker along it
    assert.is_true(targets[#targets] == 1 or targets[#targets] == 6, tostring(targets[#targets]))
    -- after the warm-up the target no longer changes
    for k = 3, #targets do assert.are.equal(targets[2], targets[k]) end
    assert.are.equal(a:state(), b:state())
    assert.is_nil(K.new("mimic", {}, { n = n, f = r }):state())
    assert.has_error(function() b:set_state("garbage") end)
  end)
end)
