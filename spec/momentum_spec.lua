-- Specs of momentum and local steps (agt.session.momentum, agt.session.workers): each
-- placement against a plain-Lua reference (float32 rounding emulated with an ffi float), exact
-- resume with their state, local steps against plain SGD, the flags' refusals, and the honest
-- rows' variance ratio in the telemetry.
local ffi = require("ffi")
local T = require("agt.tensor")
local R = require("agt.rng")
local S = require("agt.session")
local K = require("agt.checkpoint")
local FL = require("agt.cli.run.flags")
local fs = require("agt.fs")
local Momentum = require("agt.session.momentum")
local Workers = require("agt.session.workers")
local H = require("helpers")

-- Rounds a double to float32 (what a float32 store does).
local f32box = ffi.new("float[1]")
local function f32(x) f32box[0] = x; return f32box[0] end

local function totable(t)
  local out = {}
  for j = 0, t.n - 1 do out[j + 1] = t.ptr[j] end
  return out
end
local function fromtable(t, tbl) for j = 1, #tbl do t.ptr[j - 1] = tbl[j] end end
local function same_bits(a, b)
  if #a ~= #b then return false end
  for j = 1, #a do
    if ffi.string(ffi.new("float[1]", a[j]), 4) ~= ffi.string(ffi.new("float[1]", b[j]), 4) then
      return false, j
    end
  end
  return true
end

local D, N = 6, 5

-- A least-squares experiment whose workers draw from their own seeded streams.
local function toy_experiment()
  local truth = T.new({ D })
  R.new(99, 7):normal(truth, 0, 1)
  local exp = { name = "toy", d = D }
  function exp:init_params(theta, rng) rng:normal(theta, 0, 0.1) end
  function exp:worker(i, opts)
    local rng = R.new(opts.seed, R.stream_id("toy-data", i))
    local x = T.new({ D })
    local w = {}
    function w:gradient(theta, grad)
      grad:zero()
      local loss = 0
      for _ = 1, 3 do
        rng:normal(x, 0, 1)
        local e = x:dot(theta) - (x:dot(truth) + 0.1 * rng:normal1())
        loss = loss + e * e / 6
        grad:axpy(e / 3, x)
      end
      return loss
    end
    function w:state() return rng:state() end
    function w:set_state(s) rng:set_state(s) end
    return w
  end
  function exp:evaluate(theta)
    local diff = theta:clone():sub(truth)
    return { { "top1-X-acc", 1 / (1 + diff:dot(diff)) } }
  end
  return exp
end

-- Plain-Lua parts, used by the session and by the reference alike: the coordinate-wise mean of
-- the rows but the one of largest |first value|; an attack that sends −2 × the honest mean
-- (it reads the honest rows); SGD θ ← θ − lr·v.
local function rule_ref(rows)
  local worst, wv = 1, -1
  for i, r in ipairs(rows) do
    local v = math.abs(r[1])
    if v ~= v then v = math.huge end
    if v > wv then worst, wv = i, v end
  end
  local out = {}
  for j = 1, #rows[1] do
    local s = 0
    for i, r in ipairs(rows) do if i ~= worst then s = s + r[j] end end
    out[j] = f32(s / (#rows - 1))
  end
  return out
end
local function attack_ref(rows, honest)
  local out = {}
  for j = 1, #rows[1] do
    local s = 0
    for _, i in ipairs(honest) do s = s + rows[i][j] end
    out[j] = f32(-2 * s / #honest)
  end
  return out
end
local LR = 0.05

local function parts()
  local rule = { name = "ref-rule" }
  function rule:aggregate(G, out)
    local rows = {}
    for i = 1, G:size(1) do rows[i] = totable(G:row(i)) end
    fromtable(out, rule_ref(rows))
  end
  local atk = { name = "ref-attack", kind = "gradient" }
  function atk:byzantine() return { N } end
  function atk:apply(c)
    local rows = {}
    for i = 1, c.G:size(1) do rows[i] = totable(c.G:row(i)) end
    fromtable(c.G:row(N), attack_ref(rows, c.honest))
  end
  local opt = { name = "ref-sgd" }
  function opt:step(theta, g, lr)
    for j = 0, theta.n - 1 do theta.ptr[j] = f32(theta.ptr[j] - f32(lr * g.ptr[j])) end
  end
  function opt:state() return "" end
  function opt:set_state() end
  return rule, atk, opt
end

local function opts(extra)
  local rule, atk, opt = parts()
  local o = { experiment = toy_experiment(), aggregator = rule, attack = atk, optimizer = opt,
              nb_workers = N, nb_decl_byz_workers = 1, nb_real_byz_workers = 1, quiet = true,
              evaluation_period = -1, checkpoint_period = -1, summary_period = -1,
              evaluation_file = "-", summary_dir = "-" }
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

-- The reference run: the same workers (fresh, same seeds), every operation in plain Lua.
local function reference(at, beta, steps)
  local exp = toy_experiment()
  local theta = T.new({ D })
  exp:init_params(theta, R.new(1, R.stream_id("init", 0)))
  local ws, g = {}, T.new({ D })
  for i = 1, N do ws[i] = exp:worker(i, { seed = 1 }) end
  local bf = f32(beta)
  local mw, ms = {}, {}
  for j = 1, D do ms[j] = 0 end
  for i = 1, N do mw[i] = {}; for j = 1, D do mw[i][j] = 0 end end
  local honest = {}
  for i = 1, N - 1 do honest[i] = i end
  for _ = 1, steps do
    local rows = {}
    for i = 1, N do
      ws[i]:gradient(theta, g)
      rows[i] = totable(g)
      if at == "worker" then
        for j = 1, D do mw[i][j] = f32(f32(bf * mw[i][j]) + rows[i][j]) end
        rows[i] = { unpack(mw[i]) }
      elseif at == "server" then
        for j = 1, D do rows[i][j] = f32(rows[i][j] + f32(bf * ms[j])) end
      end
    end
    rows[N] = attack_ref(rows, honest)
    local agg = rule_ref(rows)
    local v = agg
    if at == "server" then
      ms = agg
    elseif at == "update" then
      for j = 1, D do ms[j] = f32(f32(bf * ms[j]) + agg[j]) end
      v = ms
    end
    for j = 1, D do theta.ptr[j - 1] = f32(theta.ptr[j - 1] - f32(LR * v[j])) end
  end
  return totable(theta)
end

local function run(o, steps)
  o.learning_rate_args = { "initial-rate:" .. LR }
  local s = S.new(o)
  s:run(steps)
  s:close()
  return s
end

local tmpdir = H.tmpdir()
local function dir(name) return tmpdir .. "/" .. name end
teardown(function() os.execute("rm -rf '" .. tmpdir .. "'") end)

describe("momentum", function()
  it("accumulates m <- beta m + x in float32, as a plain-Lua reference, NaN and inf included", function()
    local rng = R.new(5, 1)
    for _, beta in ipairs({ 0, 0.5, 0.9, 0.99 }) do
      local d = 37
      local m, x = T.new({ d }), T.new({ d })
      m:zero()
      local ref = {}
      for j = 1, d do ref[j] = 0 end
      for step = 1, 12 do
        rng:normal(x, 0, 3)
        -- non-finite values at some coordinates and steps
        if step % 3 == 0 then x.ptr[step] = 0 / 0 end
        if step % 4 == 0 then x.ptr[step + 5] = math.huge end
        if step % 5 == 0 then x.ptr[step + 9] = -math.huge end
        local xt = totable(x)
        Momentum.accumulate(m, x, beta)
        for j = 1, d do ref[j] = f32(f32(f32(beta) * ref[j]) + xt[j]) end
        local ok, at = same_bits(totable(m), ref)
        assert.is_true(ok, string.format("beta %g step %d coordinate %s", beta, step, tostring(at)))
      end
      -- the values that met NaN or inf stay non-finite; the others stay finite
      local got = totable(m)
      assert.is_true(got[4] ~= got[4])              -- NaN at step 3, coordinate 4
      assert.is_true(got[1] == got[1] and got[1] < math.huge)
    end
  end)

  for _, at in ipairs({ "worker", "server", "update" }) do
    it("at the " .. at .. " gives the plain-Lua reference's parameters bit for bit", function()
      local s = run(opts({ momentum_at = at, momentum = 0.9 }), 25)
      local ok, j = same_bits(totable(s.theta), reference(at, 0.9, 25))
      assert.is_true(ok, "coordinate " .. tostring(j))
      -- and the reference tells the placements apart (the check is not vacuous)
      assert.is_false(same_bits(totable(s.theta), reference("none", 0.9, 25)))
    end)
  end

  it("none is the plain step, and beta = 0 at the workers is the same run", function()
    local a = run(opts(), 25)
    assert.is_true(same_bits(totable(a.theta), reference("none", 0, 25)))
    local b = run(opts({ momentum_at = "worker", momentum = 0 }), 25)
    assert.is_true(same_bits(totable(a.theta), totable(b.theta)))
  end)

  it("at the update with sgd is sgd's own momentum:beta; at the server, with the median of an odd n, the same", function()
    local function plain(extra)
      local o = { experiment = toy_experiment(), aggregator = "median", optimizer = "sgd", nb_workers = 5,
                  quiet = true, evaluation_file = "-", summary_dir = "-", evaluation_period = -1 }
      for k, v in pairs(extra) do o[k] = v end
      return o
    end
    local a = run(plain({ momentum_at = "update", momentum = 0.9 }), 30)
    local b = run(plain({ optimizer_args = { "momentum:0.9" } }), 30)
    local c = run(plain({ momentum_at = "server", momentum = 0.9 }), 30)
    local d = run(plain({}), 30)
    assert.is_true(same_bits(totable(a.theta), totable(b.theta)))
    -- median(x_i + βm) = median(x_i) + βm when rounding keeps the order: the same recurrence
    assert.is_true(same_bits(totable(a.theta), totable(c.theta)))
    assert.is_false(same_bits(totable(a.theta), totable(d.theta)))
  end)

  it("lets the attack read the honest momenta", function()
    -- the attack row is -2 x the honest rows' mean: with worker momentum, of the momenta
    local s = S.new(opts({ momentum_at = "worker", momentum = 0.9, learning_rate_args = { "initial-rate:" .. LR } }))
    s:step(); s:step()
    local mean = T.new({ D })
    mean:zero()
    for i = 1, N - 1 do mean:axpy(1 / (N - 1), s.source.m[i]) end
    local row = totable(s.G:row(N))
    local ref = attack_ref({ totable(s.source.m[1]), totable(s.source.m[2]), totable(s.source.m[3]),
                             totable(s.source.m[4]) }, { 1, 2, 3, 4 })
    assert.is_true(same_bits(row, ref))
    s:close()
  end)

  for _, c in ipairs({ { "worker" }, { "server" }, { "update" }, { "worker", 3 } }) do
    local at, k = c[1], c[2] or 1
    it(string.format("at the %s%s resumes bit for bit from a checkpoint", at,
                     k > 1 and ", with local steps" or ""), function()
      local function o(extra)
        local x = opts({ momentum_at = at, momentum = 0.9, local_steps = k })
        if k > 1 then x.optimizer = "sgd" end
        for kk, v in pairs(extra or {}) do x[kk] = v end
        return x
      end
      local a = run(o(), 40)
      local cdir = dir("resume-" .. at .. k)
      local b1 = run(o({ checkpoint_dir = cdir }), 20)
      local map = assert(K.load(K.list(cdir)[1].path))
      if at == "worker" then
        assert.are.equal(D * 4, #map["worker.1.momentum"])
        assert.is_nil(map.momentum)
      else
        assert.are.equal(D * 4, #map.momentum)
        assert.is_nil(map["worker.1.momentum"])
      end
      local b2 = run(o({ checkpoint_dir = cdir }), 20)
      assert.are.equal(20, b2.start_step)
      assert.are.equal(ffi.string(a.theta.ptr, D * 4), ffi.string(b2.theta.ptr, D * 4))
      assert.are_not.equal(ffi.string(b1.theta.ptr, D * 4), ffi.string(b2.theta.ptr, D * 4))
      -- a run without momentum cannot continue it, nor can another placement
      local plain = o({ checkpoint_dir = cdir })
      plain.momentum_at, plain.momentum = nil, nil
      local ok, err = pcall(S.new, plain)
      assert.is_false(ok)
      assert.truthy(err:find("--momentum-at: the checkpoint was made with '" .. at .. "'", 1, true), err)
    end)
  end

  it("refuses to resume a checkpoint without the momentum state it needs", function()
    local cdir = dir("nomomentum")
    run(opts({ checkpoint_dir = cdir }), 5)
    -- an older checkpoint (no momentum settings recorded) with no momentum entries
    local path = K.list(cdir)[1].path
    local map = assert(K.load(path))
    map["config.momentum-at"], map["config.momentum"] = nil, nil
    os.remove(path)
    assert(K.save(cdir, 5, map, 3))
    for _, at in ipairs({ "worker", "server" }) do
      local ok, err = pcall(S.new, opts({ checkpoint_dir = cdir, momentum_at = at }))
      assert.is_false(ok)
      assert.truthy(err:find("^%-%-momentum%-at: the checkpoint has no"), err)
    end
  end)
end)

describe("local steps", function()
  it("K = 1 gives lr times the gradient as the model difference", function()
    local exp = toy_experiment()
    local theta, g, out, tk, gs = T.new({ D }), T.new({ D }), T.new({ D }), T.new({ D }), T.new({ D })
    R.new(3, 3):normal(theta, 0, 1)
    local a, b = exp:worker(2, { seed = 4 }), exp:worker(2, { seed = 4 })
    local la = a:gradient(theta, g)
    local lb = Workers.local_steps(b, theta, 1, 0.1, out, tk, gs)
    assert.are.equal(la, lb)
    for j = 0, D - 1 do
      local want = 0.1 * g.ptr[j]
      -- θ − (θ − lr·g): exact up to the rounding of θ − lr·g
      assert.is_true(math.abs(out.ptr[j] - want) <= 2 ^ -23 * (math.abs(theta.ptr[j]) + math.abs(want)) * 2,
        string.format("coordinate %d: %g vs %g", j + 1, out.ptr[j], want))
    end
  end)

  it("K > 1 takes K SGD steps on K minibatches and sends theta - theta_K", function()
    local exp = toy_experiment()
    local theta, out, tk, gs = T.new({ D }), T.new({ D }), T.new({ D }), T.new({ D })
    R.new(3, 4):normal(theta, 0, 1)
    local a, b = exp:worker(1, { seed = 9 }), exp:worker(1, { seed = 9 })
    local loss = Workers.local_steps(a, theta, 4, 0.05, out, tk, gs)
    -- reference: plain Lua, float32 rounding
    local th, g = totable(theta), T.new({ D })
    local cur, first = T.new({ D }), nil
    fromtable(cur, th)
    for _ = 1, 4 do
      local l = b:gradient(cur, g)
      first = first or l
      for j = 0, D - 1 do cur.ptr[j] = f32(cur.ptr[j] - f32(f32(0.05) * g.ptr[j])) end
    end
    local want = {}
    for j = 1, D do want[j] = f32(th[j] - cur.ptr[j - 1]) end
    assert.is_true(same_bits(totable(out), want))
    assert.are.equal(first, loss)
  end)

  it("in a run: rows are model differences and the server applies them at rate 1 (FedAvg)", function()
    -- one step with the plain average: θ_1 = θ_0 − mean_i(θ_0 − θ_K,i)
    local o = { experiment = toy_experiment(), aggregator = "average", optimizer = "sgd",
                nb_workers = 3, local_steps = 3, learning_rate_args = { "initial-rate:0.05" },
                quiet = true, evaluation_file = "-", summary_dir = "-", evaluation_period = -1 }
    local s = S.new(o)
    local theta0 = totable(s.theta)
    s:step()
    local exp = toy_experiment()
    local out, tk, gs = T.new({ D }), T.new({ D }), T.new({ D })
    local th = T.new({ D })
    fromtable(th, theta0)
    local mean = {}
    for j = 1, D do mean[j] = 0 end
    for i = 1, 3 do
      Workers.local_steps(exp:worker(i, { seed = 1 }), th, 3, 0.05, out, tk, gs)
      for j = 1, D do mean[j] = mean[j] + out.ptr[j - 1] / 3 end
    end
    for j = 1, D do
      assert.is_true(math.abs(s.theta.ptr[j - 1] - (theta0[j] - mean[j])) < 1e-6, "coordinate " .. j)
    end
    s:close()
  end)
end)

describe("momentum and local-step flags", function()
  local base = { experiment = "x", aggregator = "average", nb_workers = 3 }
  local function refused(extra, pattern)
    local o = {}
    for k, v in pairs(base) do o[k] = v end
    for k, v in pairs(extra) do o[k] = v end
    local ok, err = pcall(FL.check, o)
    assert.is_false(ok)
    assert.truthy(tostring(err):find(pattern, 1, true), err)
  end
  it("checks their values and combinations, naming the flag", function()
    refused({ momentum = 0.5 }, "--momentum: needs --momentum-at")
    refused({ momentum_at = "worker", momentum = 1 }, "--momentum: must be in [0, 1)")
    refused({ momentum_at = "worker", momentum = -0.1 }, "--momentum: must be in [0, 1)")
    refused({ momentum_at = "client" }, "--momentum-at: expects")
    refused({ local_steps = 0 }, "--local-steps: must be >= 1")
    refused({ local_steps = 2, optimizer = "adam" }, "--local-steps: K=2 sends model differences")
    local o = FL.check({ experiment = "x", aggregator = "average", nb_workers = 3 })
    assert.are.same({ "none", 0.9, 1 }, { o.momentum_at, o.momentum, o.local_steps })
  end)
  it("are in agt run --help", function()
    local help = FL.help()
    for _, f in ipairs({ "--momentum-at STRING", "--momentum NUMBER", "--local-steps INTEGER" }) do
      assert.truthy(help:find(f, 1, true), f)
    end
    local rc, out = H.agt_run("run --help")
    assert.are.equal(0, rc)
    assert.truthy(out:find("--momentum-at", 1, true))
  end)
end)

describe("the honest rows' variance ratio", function()
  it("is sum |h_i - mu|^2 / (h - 1) / |mu|^2 over the honest rows, in the telemetry and summaries", function()
    local s = S.new(opts({ learning_rate_args = { "initial-rate:" .. LR } }))
    local tel = s:step()
    local rows = {}
    for i = 1, N - 1 do rows[i] = totable(s.G:row(i)) end
    local mu, var, mn = {}, 0, 0
    for j = 1, D do
      local m = 0
      for i = 1, N - 1 do m = m + rows[i][j] end
      mu[j] = m / (N - 1)
      mn = mn + mu[j] * mu[j]
    end
    for i = 1, N - 1 do for j = 1, D do var = var + (rows[i][j] - mu[j]) ^ 2 end end
    local want = var / (N - 2) / mn
    assert.is_true(math.abs(tel.variance_ratio - want) <= 1e-5 * want, tel.variance_ratio .. " vs " .. want)
    s:close()
    -- one honest row: no ratio
    local o = opts({ nb_workers = 2, nb_decl_byz_workers = 0, aggregator = "average" })
    o.attack = { name = "zero-last", kind = "gradient", byzantine = function() return { 2 } end,
                 apply = function(_, c) c.G:row(2):zero() end }
    local s1 = S.new(o)
    assert.is_nil(s1:step().variance_ratio)
    s1:close()
    -- and it is written to the summaries
    local sdir = dir("sum")
    run(opts({ summary_dir = sdir, summary_delta = 5 }), 10)
    local csv = H.read(sdir .. "/summary.csv")
    assert.truthy(csv:find("robust/honest_variance_ratio", 1, true))
  end)
end)

describe("examples/momentum_grid.lua", function()
  it("runs its cells as parallel child runs into a CSV, skips finished cells, and reports", function()
    local gdir = dir("grid")
    local args = "examples/momentum_grid.lua --steps 2 --jobs 2 --dir " .. H.shell_quote(gdir)
      .. " --rules median,nnm+krum --attacks none,nan --data iid --momenta none,worker"
    local rc, out, err = H.run("cd " .. H.shell_quote(require("agt.host").root) .. " && "
      .. H.shell_quote(H.agt) .. " " .. args)
    assert.are.equal(0, rc, err)
    assert.truthy(out:find("10 cells, 0 done, 10 to run", 1, true), out)
    local lines = {}
    for l in H.read(gdir .. "/grid.csv"):gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.are.equal("data,momentum,rule,attack,steps,status,accuracy,seconds,final,evals", lines[1])
    assert.are.equal(11, #lines)
    local seen = {}
    for k = 2, #lines do
      local data, mom, rule, atk, steps, status, acc = lines[k]:match(
        '^(%w+),(%w+),"([^"]+)",([%w/:-]+),(%d+),(%w+),([%d.]+),')
      assert.truthy(data, lines[k])
      assert.are.same({ "iid", "2", "ok" }, { data, steps, status })
      assert.is_true(tonumber(acc) > 0 and tonumber(acc) < 1)
      seen[mom .. " " .. rule .. " " .. atk] = true
    end
    assert.truthy(seen["worker nnm,krum nan"])
    assert.truthy(seen["none average none"])
    -- a second run has nothing left to do; the report reads the CSV and draws the heat map
    rc, out = H.run("cd " .. H.shell_quote(require("agt.host").root) .. " && "
      .. H.shell_quote(H.agt) .. " " .. args .. " --svg " .. H.shell_quote(gdir))
    assert.are.equal(0, rc)
    assert.truthy(out:find("10 cells, 10 done, 0 to run", 1, true), out)
    assert.truthy(out:find("| nan | ", 1, true))
    assert.truthy(H.read(gdir .. "/momentum-iid.svg"):find("^<svg"))
  end)

  it("--eval-last N gives the mean of the last N evaluations; --report over several grids, mean ± sd", function()
    local root = H.shell_quote(require("agt.host").root)
    local function grid(d, seed, extra)
      return H.run("cd " .. root .. " && " .. H.shell_quote(H.agt) .. " examples/momentum_grid.lua --steps 4"
        .. " --jobs 2 --rules median --attacks none --data iid --momenta none --seed " .. seed
        .. " --dir " .. H.shell_quote(d) .. " " .. (extra or ""))
    end
    local d1, d2 = dir("ev1"), dir("ev2")
    for k, d in ipairs({ d1, d2 }) do
      local rc, _, err = grid(d, k, "--eval-last 3 --eval-delta 1")
      assert.are.equal(0, rc, err)
    end
    local accs = {}
    for k, d in ipairs({ d1, d2 }) do
      local ev = {}   -- the cell's own evaluation file: steps 0..4, one line each
      for l in H.read(d .. "/cells/iid_none_median_none.eval"):gmatch("[^\n]+") do
        ev[#ev + 1] = tonumber(l:match("top1[^:]*:([%d.]+)"))
      end
      assert.are.equal(5, #ev)
      local line = H.read(d .. "/grid.csv"):match('iid,none,"median",none,[^\n]+')
      local acc, final, n = line:match(",ok,([%d.]+),[%d.]+,([%d.]+),(%d+)$")
      assert.are.equal("3", n)
      assert.is_true(math.abs(tonumber(acc) - (ev[3] + ev[4] + ev[5]) / 3) < 1e-4, line)
      assert.is_true(math.abs(tonumber(final) - ev[5]) < 1e-4, line)
      accs[k] = tonumber(acc)
    end
    -- another --eval-last is another measure: the cells run again
    local rc, out = grid(d1, 1, "--eval-last 1")
    assert.are.equal(0, rc)
    assert.truthy(out:find("2 cells, 0 done, 2 to run", 1, true), out)
    grid(d1, 1, "--eval-last 3 --eval-delta 1")
    rc, out = grid(d1 .. "," .. d2, 1, "--report")
    assert.are.equal(0, rc, out)
    local m, sd = (accs[1] + accs[2]) / 2, math.abs(accs[1] - accs[2]) / math.sqrt(2)
    assert.truthy(out:find(string.format("| none | %.1f ± %.1f |", 100 * m, 100 * sd), 1, true), out)
    assert.truthy(out:find("In each grid alone (", 1, true), out)
    rc, _, err = grid(d1 .. "," .. d2, 1, "")
    assert.are.equal(1, rc)
    assert.truthy(err:find("only go with --report", 1, true), err)
    rc, _, err = grid(d1, 1, "--eval-last 0")
    assert.truthy(rc ~= 0 and err:find("--eval-last expects a whole number", 1, true), err)
    -- --decl-byz is the f the rules are told: 6 of 11 is too many for the median, so its cell
    -- fails (the refused run's log says why) while the average's runs
    local d3 = dir("ev3")
    rc, out = grid(d3, 1, "--decl-byz 6")
    assert.are.equal(0, rc, out)
    local csv = H.read(d3 .. "/grid.csv")
    assert.truthy(csv:find('iid,none,"median",none,4,failed,', 1, true), csv)
    assert.truthy(csv:find('iid,none,"average",none,4,ok,', 1, true), csv)
    rc, _, err = grid(d3, 1, "--decl-byz -1")
    assert.truthy(rc ~= 0 and err:find("--decl-byz expects a whole number >= 0", 1, true), err)
  end)
end)
