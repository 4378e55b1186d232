-- Specs of agt.session with small stand-in parts that honour the module contracts (a least-
-- squares experiment with per-worker seeded samplers, momentum SGD, a rule with state and
-- a random draw, an attack with state), so that the run loop, exact resume, checkpoints,
-- evaluation files, summaries, telemetry, tracing and interruption are checked on their own.
local H = require("helpers")
local read = H.read
local ffi = require("ffi")
local S = require("agt.session")
local K = require("agt.checkpoint")
local fs = require("agt.fs")
local TF = require("agt.tfevents")
local F = require("agt.ffi")

-- The stand-in parts, as source text: the kill -9 spec runs them in a child agt process too.
local TOY = [==[
local ffi = require("ffi")
local T = require("agt.tensor")
local R = require("agt.rng")
local toy = {}
local D = 8

function toy.experiment()
  local truth = T.new({ D })
  R.new(99, 7):normal(truth, 0, 1)
  local exp = { name = "toy", d = D }
  function exp:init_params(theta, rng) rng:normal(theta, 0, 0.1) end
  function exp:worker(i, opts)
    local rng = R.new(opts.seed, R.stream_id("toy-data", i))
    local x, g1 = T.new({ D }), T.new({ D })
    local w = {}
    function w:gradient(theta, grad)
      grad:zero()
      local loss = 0
      for _ = 1, 4 do
        rng:normal(x, 0, 1)
        local y = x:dot(truth) + 0.01 * rng:normal1()
        local e = x:dot(theta) - y
        loss = loss + e * e / 8
        g1:copy(x)
        grad:axpy(e / 4, g1)
      end
      return loss
    end
    function w:state() return rng:state() end
    function w:set_state(s) rng:set_state(s) end
    return w
  end
  function exp:evaluate(theta)
    local diff = theta:clone():sub(truth)
    local err = diff:dot(diff)
    return { { "top1-X-acc", 1 / (1 + err) }, { "sq-error", err } }
  end
  return exp
end

-- momentum SGD; its velocity is its state
function toy.optimizer(d)
  local v = T.new({ d })
  local o = { name = "toy-momentum" }
  function o:step(theta, g, lr) v:scale(0.9):add(g); theta:axpy(-lr, v) end
  function o:state() return ffi.string(v.ptr, d * 4) end
  function o:set_state(s) ffi.copy(v.ptr, s, d * 4) end
  return o
end

function toy.schedule() return { name = "toy-fixed", rate = function(_, step) return 0.05 end } end

-- mean of the rows whose norm is not the largest; a running count (state) and one random draw
-- per step scale the output slightly, so rule state and rule stream both matter
function toy.rule(interrupt_at)
  local r = { name = "toy-rule", count = 0 }
  function r:aggregate(G, out, ctx)
    local n = G:size(1)
    local worst, wn = 1, -1
    for i = 1, n do
      local x = G:row(i):norm()
      if x > wn then worst, wn = i, x end
    end
    out:zero()
    local sel = {}
    for i = 1, n do if i ~= worst then sel[#sel + 1] = i; out:axpy(1 / (n - 1), G:row(i)) end end
    self.count = self.count + 1
    out:scale(1 + 1e-3 * ctx.rng:double() + 1e-6 * self.count)
    if interrupt_at and ctx.step == interrupt_at then
      require("agt.ffi").C.agt_interrupt_set(1)
      error("interrupted by the spec")
    end
    return { selected = sel }
  end
  function r:state() return tostring(self.count) end
  function r:set_state(s) self.count = tonumber(s) end
  return r
end

-- the last worker sends minus ten times the honest mean, plus noise
function toy.attack()
  local a = { name = "toy-attack", kind = "gradient", calls = 0 }
  function a:byzantine(step) return { 5 } end
  function a:apply(ctx)
    local row = ctx.G:row(ctx.byz[1])
    row:zero()
    for _, i in ipairs(ctx.honest) do row:axpy(-10 / #ctx.honest, ctx.G:row(i)) end
    row[1] = row[1] + ctx.rng:double()
    self.calls = self.calls + 1
  end
  function a:state() return tostring(self.calls) end
  function a:set_state(s) self.calls = tonumber(s) end
  return a
end

function toy.opts(extra)
  local o = { experiment = toy.experiment(), aggregator = toy.rule(extra and extra.interrupt_at),
              attack = toy.attack(), optimizer = toy.optimizer(D), learning_rate = toy.schedule(),
              nb_workers = 5, nb_decl_byz_workers = 1, nb_real_byz_workers = 1, quiet = true,
              evaluation_period = -1, checkpoint_period = -1, summary_period = -1 }
  for k, v in pairs(extra or {}) do if k ~= "interrupt_at" then o[k] = v end end
  return o
end
return toy
]==]

local toy = assert(loadstring(TOY))()

local tmpdir = os.tmpname()
os.remove(tmpdir)
local function dir(name) return tmpdir .. "/" .. name end
local function theta_bytes(s) return ffi.string(s.theta.ptr, s.d * 4) end
local function lines(path)
  local out = {}
  for l in io.lines(path) do out[#out + 1] = l end
  return out
end
-- Runs a session quietly (its printing goes to a file).
local function run(opts, steps, parts)
  opts.stdout_to = opts.stdout_to or dir("stdout.txt")
  local s = S.new(opts, parts)
  local rep = s:run(steps)
  s:close()
  return s, rep
end

setup(function() fs.mkdir_p(tmpdir) end)
teardown(function() os.execute("rm -rf '" .. tmpdir .. "'") end)

describe("agt.session", function()
  it("gives bit-identical parameters for 200 steps and 100 + 100 with a restart", function()
    local a = run(toy.opts({ max_step = 200 }))
    local b1, r1 = run(toy.opts({ checkpoint_dir = dir("resume"), max_step = 100 }))
    assert.are.equal(100, r1.step)
    local b2, r2 = run(toy.opts({ checkpoint_dir = dir("resume"), max_step = 100 }))
    assert.are.equal(100, b2.start_step)
    assert.are.equal(200, r2.step)
    assert.are.equal(theta_bytes(a), theta_bytes(b2))
    assert.are_not.equal(theta_bytes(b1), theta_bytes(b2))
    -- and a run that does not restore the checkpoint differs (the check is not vacuous)
    local c = run(toy.opts({ max_step = 100 }))
    assert.are_not.equal(theta_bytes(a), theta_bytes(c))
  end)

  it("takes the rows of G from any gradient source that honours the contract", function()
    -- a stand-in source: the same workers, filled last row first, checkpointed under its own
    -- names; the session needs nothing else from it
    local Workers = require("agt.session.workers")
    local made, fills, closed = 0, 0, 0
    local function reversed(exp, n, opts)
      made = made + 1
      local inner = Workers.new(exp, n, opts)
      local src = { n = n }
      function src:fill(theta, G, step, ctx)
        fills = fills + 1
        assert.are.equal(n, G:size(1))
        local losses = {}
        for i = n, 1, -1 do losses[i] = inner.workers[i]:gradient(theta, G:row(i)) end
        return losses
      end
      function src:state()
        local m = {}
        for k, v in pairs(inner:state()) do m[k:gsub("^worker", "mine")] = v end
        return m
      end
      function src:set_state(map)
        local m = {}
        for k, v in pairs(map) do m[k:gsub("^mine", "worker")] = v end
        inner:set_state(m)
      end
      function src:close() closed = closed + 1 end
      return src
    end
    local a = run(toy.opts({ max_step = 60 }))
    local b = run(toy.opts({ max_step = 60 }), nil, { source = reversed })
    assert.are.equal(theta_bytes(a), theta_bytes(b))
    assert.are.same({ 1, 60, 1 }, { made, fills, closed })
    run(toy.opts({ checkpoint_dir = dir("source"), max_step = 30 }), nil, { source = reversed })
    local map = assert(K.load(K.list(dir("source"))[1].path))
    assert.truthy(map["mine.1"])
    assert.is_nil(map["worker.1"])
    local c = run(toy.opts({ checkpoint_dir = dir("source"), max_step = 30 }), nil, { source = reversed })
    assert.are.equal(30, c.start_step)
    assert.are.equal(theta_bytes(a), theta_bytes(c))
    -- the local workers read their own names only: this checkpoint is not theirs
    local ok, err = pcall(S.new, toy.opts({ checkpoint_dir = dir("source"), quiet = true }))
    assert.is_false(ok)
    assert.truthy(err:find("the checkpoint has no state for worker 1", 1, true))
  end)

  it("counts max_step from the restored step, and <= 0 means until interrupted", function()
    local s = run(toy.opts({ checkpoint_dir = dir("count"), max_step = 30 }))
    assert.are.equal(30, s.global_step)
    s = run(toy.opts({ checkpoint_dir = dir("count"), max_steps = 20 }))
    assert.are.equal(50, s.global_step)
    assert.are.equal(20, s.steps_run)
    local o = toy.opts({ max_step = 0 })
    o.aggregator = toy.rule()
    local orig = o.aggregator.aggregate
    o.aggregator.aggregate = function(self, G, out, ctx)
      if ctx.step == 41 then F.C.agt_interrupt_set(1) end
      return orig(self, G, out, ctx)
    end
    local s2, rep = run(o)
    assert.are.equal("interrupted", rep.stopped)
    assert.are.equal(42, s2.global_step)
  end)

  it("lets a Ctrl-C that comes while the update is applied finish it: the step counts and the run stops cleanly", function()
    -- fashion-mnist: d = 79,510 is above the update's grain, so its kernel polls for Ctrl-C
    local function opts(last)
      return { experiment = "fashion-mnist", experiment_args = { "eval-size:100" }, aggregator = "average",
               nb_workers = 2, nb_decl_byz_workers = 0, seed = 3, max_step = last, quiet = true,
               evaluation_file = "-", summary_dir = "-", evaluation_period = -1,
               stdout_to = dir("stdout.txt") }
    end
    local a = run(opts(6))
    local s = S.new(opts(20))
    local apply = s.optimizer.apply
    s.optimizer.apply = function(self, ...)
      if s.global_step == 5 then F.C.agt_interrupt_set(1) end  -- as if Ctrl-C came right now
      return apply(self, ...)
    end
    local rep = s:run()
    s:close()
    assert.are.equal("interrupted", rep.stopped)
    assert.are.equal(6, s.global_step)
    assert.are.equal(0, F.C.agt_interrupted())
    assert.are.equal(theta_bytes(a), theta_bytes(s))
  end)

  it("stops cleanly on an interrupt in the middle of a step, and resumes exactly", function()
    local a = run(toy.opts({ max_step = 120 }))
    local b1, r1 = run(toy.opts({ checkpoint_dir = dir("intr"), max_step = 120, interrupt_at = 70 }))
    assert.are.equal("interrupted", r1.stopped)
    assert.are.equal(70, b1.global_step)                 -- the half-done step is undone
    assert.are.equal(0, F.C.agt_interrupted())
    assert.are.equal(70, K.list(dir("intr"))[1].step)  -- last checkpoint written at the stop
    local ev = lines(dir("intr") .. "/eval")
    assert.truthy(ev[#ev]:match("^[%d.]+\t70\t"))       -- and a last evaluation
    local b2 = run(toy.opts({ checkpoint_dir = dir("intr"), max_step = 50 }))
    assert.are.equal(theta_bytes(a), theta_bytes(b2))
  end)

  it("writes checkpoints on the delta, keeps the last k, and falls back past a corrupt one", function()
    run(toy.opts({ checkpoint_dir = dir("keep"), checkpoint_delta = 10, checkpoint_keep = 2,
                   max_step = 45 }))
    local list = K.list(dir("keep"))
    assert.are.same({ 45, 40 }, { list[1].step, list[2].step })
    assert.are.equal(2, #list)
    -- corrupt the newest: the next run warns, restores step 40 and continues from it
    local p = list[1].path
    local data = read(p)
    local f = io.open(p, "wb"); f:write(data:sub(1, #data - 100)); f:close()
    local s = run(toy.opts({ checkpoint_dir = dir("keep"), max_step = 5,
                             stderr_to = dir("keep-err.txt") }))
    assert.are.equal(40, s.start_step)
    assert.are.equal(45, s.global_step)
    local err = read(dir("keep-err.txt"))
    assert.truthy(err:find("model%-45%.ckpt refused: checksum mismatch"))
    assert.truthy(err:find("falling back to .*model%-40%.ckpt"))
  end)

  it("refuses to continue a checkpoint made with other settings, naming the flag", function()
    run(toy.opts({ checkpoint_dir = dir("other"), max_step = 3 }))
    local o = toy.opts({ checkpoint_dir = dir("other"), max_step = 3, seed = 7 })
    local ok, err = pcall(S.new, o)
    assert.is_false(ok)
    assert.truthy(err:find("^%-%-seed: the checkpoint was made with '1', this run has '7'"))
  end)

  it("appends AggregaThor evaluation lines at start, on the delta and at stop", function()
    local s = run(toy.opts({ checkpoint_dir = dir("eval"), evaluation_delta = 25, max_step = 60 }))
    local ev = lines(dir("eval") .. "/eval")
    -- the last evaluation's metrics stay on the session
    assert.are.equal("top1-X-acc", s.last_metrics[1][1])
    assert.are.equal(string.format("%.9g", s.last_metrics[1][2]), ev[#ev]:match("top1%-X%-acc:([^\t]+)"))
    local steps = {}
    for _, l in ipairs(ev) do
      local wall, step, rest = l:match("^(%d+%.%d+)\t(%d+)\t(.*)$")
      assert.truthy(wall, l)
      assert.truthy(rest:match("^top1%-X%-acc:[%d.e%-]+\tsq%-error:[%d.e%-+]+$"), l)
      steps[#steps + 1] = tonumber(step)
    end
    assert.are.same({ 0, 25, 50, 60 }, steps)
    assert.truthy(read(dir("eval") .. "/eval.info"):find("aggregator=toy%-rule"))
    -- '-' means none: no file named '-' anywhere
    local cwd_dash = io.open("-", "r")
    if cwd_dash then cwd_dash:close() end
    run(toy.opts({ checkpoint_dir = dir("noeval"), evaluation_file = "-", max_step = 2 }))
    assert.is_nil(read(dir("noeval") .. "/eval"))
    assert.is_nil(read(dir("noeval") .. "/-"))
    if not cwd_dash then assert.is_nil(io.open("-", "r")) end
    -- an explicit path
    run(toy.opts({ evaluation_file = dir("elsewhere/e.txt"), max_step = 2 }))
    assert.are.equal(2, #lines(dir("elsewhere/e.txt")))
  end)

  it("reports robustness telemetry for each step", function()
    local s = S.new(toy.opts({ max_step = 1 }))
    local tel = s:step()
    s:close()
    assert.are.equal(1, tel.step)
    assert.are.same({ 5 }, tel.byz)
    -- the attacker's row (-10 x honest mean) has the largest norm, so the rule drops it
    assert.are.equal(4, tel.selected)
    assert.are.equal(0, tel.byz_selected)
    assert.is_true(tel.byz_norm > 5 * tel.honest_norm)
    assert.is_true(tel.cosine > 0.9)
    for _, k in ipairs({ "t_gradients", "t_attack", "t_aggregate", "t_apply", "t_step" }) do
      assert.is_true(tel[k] >= 0, k)
    end
    assert.is_true(tel.loss > 0)
    assert.are.equal(0.05, tel.lr)
  end)

  it("writes readable TensorBoard event files and a CSV of the same", function()
    run(toy.opts({ checkpoint_dir = dir("sum"), summary_delta = 10, evaluation_delta = 20,
                   max_step = 40 }))
    local names = fs.list(dir("sum"))
    local evfile
    for _, n in ipairs(names) do if n:match("^events%.out%.tfevents%.") then evfile = n end end
    assert.truthy(evfile)
    local events = assert(TF.read(dir("sum") .. "/" .. evfile))
    assert.are.equal("brain.Event:2", events[1].file_version)
    assert.are.equal(TF.START, events[2].session_status)
    assert.are.equal(TF.STOP, events[#events].session_status)
    local tags, steps = {}, {}
    for _, e in ipairs(events) do
      for _, tv in ipairs(e.scalars or {}) do
        tags[tv[1]] = true
        if tv[1] == "loss" then steps[#steps + 1] = e.step end
      end
    end
    for _, t in ipairs({ "loss", "learning_rate", "eval-top1-X-acc", "robust/selected",
                         "robust/byzantine_selected", "robust/honest_norm", "robust/byzantine_norm",
                         "robust/cosine_aggregate_honest_mean", "time/aggregation", "time/gradients",
                         "time/attack", "time/apply" }) do
      assert.is_true(tags[t] == true, t)
    end
    assert.are.same({ 10, 20, 30, 40 }, steps)
    local rows = require("agt.summary").read_csv(dir("sum") .. "/summary.csv")
    local n_ev = 0
    for _, e in ipairs(events) do n_ev = n_ev + #(e.scalars or {}) end
    assert.are.equal(n_ev, #rows)
  end)

  it("traces each phase of each step and tees stdout and stderr", function()
    run(toy.opts({ trace = true, max_step = 2, stderr_to = dir("trace.txt"),
                   stdout_to = dir("out.txt") }))
    local tr = lines(dir("trace.txt"))
    assert.are.equal("[TRACE] (begin) step 0: Worker 1: loss and gradient computation", tr[1])
    assert.are.equal("[TRACE] (end)   step 0: Worker 1: loss and gradient computation", tr[2])
    local text = table.concat(tr, "\n")
    for _, what in ipairs({ "Byzantine workers: attack", "Master: aggregated gradient computation",
                            "Master: aggregated gradient application" }) do
      assert.truthy(text:find("(begin) step 1: " .. what, 1, true), what)
      assert.truthy(text:find("(end)   step 1: " .. what, 1, true), what)
    end
    assert.are.equal(2 * (5 + 3) * 2, #tr)
    local out = read(dir("out.txt"))
    assert.truthy(out:find("Step 0: top1%-X%-acc = "))
    assert.truthy(out:find("Throughput: [%d.]+ step%(s%)/s %(all steps%)"))
    assert.truthy(out:find("Throughput: [%d.]+ step%(s%)/s %(excluding 1st step%)"))
  end)

  it("counts throughput over the steps it ran", function()
    local s = run(toy.opts({ max_step = 7 }))
    local tp = s:throughput()
    assert.are.equal(7, tp.steps)
    assert.is_true(tp.all > 0 and tp.excluding_first > 0)
    assert.is_true(math.abs(tp.all - 7 / tp.seconds) < 1e-9)
    assert.is_true(math.abs(tp.excluding_first - 6 / (tp.seconds - s.first_step_time)) < 1e-9)
  end)

  it("is callable as agt.session{...} and checks its options", function()
    local agt = require("agt")
    local s = agt.session(toy.opts({ max_step = 1 }))
    assert.are.equal(8, s.d)
    s:close()
    local ok, err = pcall(S.new, toy.opts({ bogus = 1 }))
    assert.is_false(ok)
    assert.truthy(err:find("unknown session option 'bogus'"))
    ok, err = pcall(S.new, toy.opts({ nb_real_byz_workers = 9 }))
    assert.truthy(err:find("^%-%-nb%-real%-byz%-workers: r cannot exceed n, got n=5 r=9"))
    ok, err = pcall(S.new, toy.opts({ client = "x" }))
    assert.truthy(err:find("^%-%-client: distributed mode is not yet supported"))
    ok, err = pcall(S.new, toy.opts({ server = "x" }))
    assert.truthy(err:find("^%-%-keys: is required with %-%-auth curve"))
  end)

  it("continues from the last checkpoint after kill -9", function()
    local script = dir("child.lua")
    local f = io.open(script, "w")
    f:write("package.path = '" .. tmpdir .. "/?.lua;' .. package.path\n",
            "local toy = require('toy_parts')\n",
            "local s = require('agt.session').new(toy.opts({ checkpoint_dir = '", dir("kill"),
            "', checkpoint_delta = 5, max_step = tonumber(arg[1]) }))\n",
            "local rep = s:run(); s:close(); print('STEP ' .. rep.step .. ' FROM ' .. s.start_step)\n")
    f:close()
    f = io.open(dir("toy_parts.lua"), "w"); f:write(TOY); f:close()
    local agt_bin = require("agt.host").root .. "/agt"
    -- an endless run, killed with SIGKILL once it has checkpointed a few times
    local pidfile = dir("pid")
    os.execute(string.format("('%s' '%s' 0 > '%s' 2>&1 & echo $! > '%s')", agt_bin, script,
                             dir("child.out"), pidfile))
    local pid = read(pidfile):match("%d+")
    local waited = 0
    while (#K.list(dir("kill")) == 0 or K.list(dir("kill"))[1].step < 20) and waited < 600 do
      os.execute("sleep 0.05")
      waited = waited + 1
    end
    os.execute("kill -9 " .. pid .. " 2>/dev/null; sleep 0.1")
    local last = K.list(dir("kill"))[1].step
    assert.is_true(last >= 20)
    local p = io.popen(string.format("'%s' '%s' 10 2>&1", agt_bin, script))
    local out = p:read("*a")
    p:close()
    local from = out:match("STEP %d+ FROM (%d+)")
    assert.truthy(from, out)
    assert.is_true(tonumber(from) >= last)
    assert.truthy(out:find("STEP " .. (tonumber(from) + 10) .. " FROM " .. from, 1, true), out)
  end)

  it("stops cleanly on SIGINT (Ctrl-C): a last evaluation and checkpoint, then exit", function()
    local script = dir("child_int.lua")
    local f = io.open(script, "w")
    f:write("package.path = '" .. tmpdir .. "/?.lua;' .. package.path\n",
            "local toy = require('toy_parts')\n",
            "local s = require('agt.session').new(toy.opts({ checkpoint_dir = '", dir("int"),
            "', checkpoint_delta = 5, max_step = 0 }))\n",
            "local rep = s:run(); s:close(); print('STOPPED ' .. rep.stopped .. ' AT ' .. rep.step)\n")
    f:close()
    f = io.open(dir("toy_parts.lua"), "w"); f:write(TOY); f:close()
    local agt_bin = require("agt.host").root .. "/agt"
    os.execute(string.format("('%s' '%s' > '%s' 2>&1 & echo $! > '%s')", agt_bin, script,
                             dir("int.out"), dir("int.pid")))
    local pid = read(dir("int.pid")):match("%d+")
    local waited = 0
    while (#K.list(dir("int")) == 0 or K.list(dir("int"))[1].step < 20) and waited < 600 do
      os.execute("sleep 0.05")
      waited = waited + 1
    end
    os.execute("kill -INT " .. pid)
    waited = 0
    while os.execute("kill -0 " .. pid .. " 2>/dev/null") == 0 and waited < 600 do
      os.execute("sleep 0.05")
      waited = waited + 1
    end
    local out = read(dir("int.out"))
    local at = tonumber(out:match("STOPPED interrupted AT (%d+)"))
    assert.truthy(at, out)
    assert.are.equal(at, K.list(dir("int"))[1].step)
    local ev = lines(dir("int") .. "/eval")
    assert.are.equal(at, tonumber(ev[#ev]:match("^[%d.]+\t(%d+)\t")))
  end)
end)
