-- gpu_session_spec — training on the GPU (`agt run --use-gpu`, agt.session with use_gpu): the
-- same runs on the CPU and on the GPU, with an attack and a robust rule, agree (θ to the
-- rounding of cuBLAS's sums, the accuracy within noise); checkpoints of a GPU run resume on the
-- CPU and the other way round; a GPU run stopped and resumed on the GPU is bit-identical to one
-- that never stopped (the batches drawn ahead are drawn again from the saved streams); the
-- attacks that run on the device give the CPU's rows; the telemetry and summaries are written.
--
-- Tagged #gpu. Without a device (CI), the device tests are pending with the reason; the tests
-- of what runs on any machine (batches drawn ahead of use, on the CPU) run everywhere.
local ffi = require("ffi")
local S = require("agt.session")
local K = require("agt.checkpoint")
local T = require("agt.tensor")
local R = require("agt.rng")
local E = require("agt.experiments")
local W = require("agt.session.workers")
local A = require("agt.attacks")
local fs = require("agt.fs")
local gpu = require("agt.gpu")
local host = require("agt.host")

-- Fashion-MNIST: the Debian package's, or the subset `make gpu-bundle` puts beside agt (the GPU
-- machine has no dataset package).
local FM = "/usr/share/datasets/fashion-mnist"
local DATA = "data-dir:" .. (fs.kind(FM) == "dir" and FM or host.root .. "/data/fashion-mnist")

local ok, why = gpu.available()
if not ok then io.write("gpu_session_spec: GPU tests pending: " .. tostring(why) .. "\n") end
local function test(name, fn)
  if ok then it(name, fn) else pending(name .. " (no GPU: " .. tostring(why) .. ")") end
end

local tmpdir = os.tmpname()
os.remove(tmpdir)
setup(function() assert(fs.mkdir_p(tmpdir)) end)
teardown(function() os.execute("rm -rf '" .. tmpdir .. "'") end)

-- A short fashion-mnist run: n = 7, f = r = 1 (lie), krum, batch 16, 500 test examples.
local function opts(extra)
  local o = { experiment = "fashion-mnist", experiment_args = { "batch-size:16", "eval-size:500", DATA },
              aggregator = "krum", nb_workers = 7, nb_decl_byz_workers = 1, nb_real_byz_workers = 1,
              attack = "lie", learning_rate_args = { "initial-rate:0.05" }, seed = 5, quiet = true,
              evaluation_delta = 10, checkpoint_period = -1, summary_period = -1, evaluation_period = -1 }
  for k, v in pairs(extra or {}) do o[k] = v end
  o.stdout_to = o.stdout_to or tmpdir .. "/stdout.txt"
  return o
end

-- Runs a session; s.picks: the row the rule chose at each step (Krum's), when it says.
local function run(o, steps)
  local s = S.new(o)
  local aggregate, picks = s.rule.aggregate, {}
  s.rule.aggregate = function(self, ...)
    local info = aggregate(self, ...)
    picks[#picks + 1] = info.selected and info.selected[1] or 0
    return info
  end
  s.picks = picks
  s:run(steps)
  s:close()
  return s
end

local function host_theta(s) return s.theta.device == "cpu" and s.theta or s.theta:to("cpu") end

-- ‖a − b‖ / ‖b‖ of two host vectors
local function rel(a, b) return math.sqrt(a:clone():sub(b):dot(a:clone():sub(b))) / b:norm() end

local function theta_of(path)
  local map = assert(K.load(path))
  local t = T.new({ #map.theta / 4 })
  ffi.copy(t:pointer(), map.theta, #map.theta)
  return t, map
end

describe("batches drawn ahead of use (any machine)", function()
  it("give the same rows and the same worker states as drawing at use, and resume the same", function()
    local exp = E.load("fashion-mnist", { "batch-size:8", DATA }, { seed = 3, n = 4 })
    local theta = exp:init_params(T.new({ exp.d }), R.new(3, 0))
    -- worker 4 poisons its batches (label-flip, then poison-data); a's batches are drawn into
    -- one staging allocation (page-locked on a GPU machine)
    local function poison(i) return i == 4 and "label-flip" or (i == 3 and "poison-data" or nil) end
    local a = W.new(exp, 4, { seed = 3, ahead = true, poison = poison })
    a:_stage()
    assert.is_true(a.workers[2].x:pointer() == a._staging:pointer() + (#a._staging / 4))
    local b = W.new(exp, 4, { seed = 3, ahead = false, poison = poison })
    local Ga, Gb = T.new({ 4, exp.d }), T.new({ 4, exp.d })
    for k = 1, 3 do
      local la, lb = a:fill(theta, Ga, k), b:fill(theta, Gb, k)
      assert.are.same(lb, la)
      assert.is_true(Ga:allclose(Gb, 0, 0), "rows at step " .. k)
      local sa, sb = a:state(), b:state()
      for i = 1, 4 do assert.is_true(sa["worker." .. i] == sb["worker." .. i], "worker " .. i) end
    end
    -- a source restored from the ahead source's state continues as the other does
    local c = W.new(exp, 4, { seed = 3, ahead = true, poison = poison })
    c:set_state(a:state())
    a:set_state(a:state())
    local Gc = T.new({ 4, exp.d })
    a:fill(theta, Ga, 4); b:fill(theta, Gb, 4); c:fill(theta, Gc, 4)
    assert.is_true(Ga:allclose(Gb, 0, 0))
    assert.is_true(Gc:allclose(Gb, 0, 0))
  end)

  it("a step stopped by Ctrl-C in its rule puts back the workers' streams and momenta: the resumed run is exact", function()
    local AG = require("agt.aggregators")
    local function o(dir, stop_at)
      local x = opts({ aggregator = nil, attack = "reverse", momentum_at = "worker", momentum = 0.9,
                       nb_workers = 5, evaluation_delta = 0, checkpoint_dir = dir })
      local avg = AG.new("average", 5, 1)
      x.aggregator = { name = "average", aggregate = function(_, G, out, ctx)
        if ctx.step == stop_at then require("agt.ffi").C.agt_interrupt_set(1); error("stopped by the spec") end
        return avg:aggregate(G, out, ctx)
      end }
      return x
    end
    local straight = run(o(nil, -1), 10)
    local s1 = S.new(o(tmpdir .. "/intr", 6))
    local rep = s1:run(10)
    s1:close()
    assert.are.equal("interrupted", rep.stopped)
    assert.are.equal(6, s1.global_step)
    local s2 = run(o(tmpdir .. "/intr", -1), 4)
    assert.are.equal(10, s2.global_step)
    assert.is_true(host_theta(s2):allclose(host_theta(straight), 0, 0))
  end)

  it("refuses θ or G on another device than the workers'", function()
    local exp = E.load("fashion-mnist", { "batch-size:8", DATA }, { seed = 3, n = 2 })
    local w = W.new(exp, 2, { seed = 3, device = "cuda" })
    assert.has_error(function() w:fill(T.new({ exp.d }), T.new({ 2, exp.d }), 1) end,
                     "the workers compute on cuda: theta and G must be there, got cpu and cpu")
  end)
end)

describe("training on the GPU #gpu", function()
  test("a --use-gpu run follows the CPU run (lie + krum): θ close, the same accuracy within noise", function()
    local c = run(opts({ summary_dir = tmpdir .. "/sum-cpu" }), 30)
    local g = run(opts({ use_gpu = true, summary_dir = tmpdir .. "/sum-gpu" }), 30)
    assert.are.equal("cuda", g.device)
    assert.are.equal("cuda:0", g.theta.device)
    assert.are.equal("cuda:0", g.G.device)
    -- Krum's choices: the same rows (a near tie may go the other way once or twice under the
    -- rounding of cuBLAS's sums; θ is then close within the difference of the chosen rows)
    assert.are.equal(30, #g.picks)
    local same = 0
    for k = 1, 30 do if g.picks[k] == c.picks[k] then same = same + 1 end end
    assert.is_true(same >= 28, "Krum chose the same row at " .. same .. " of 30 steps")
    local tc, tg = host_theta(c), host_theta(g)
    local tol = same == 30 and 1e-3 or 5e-2
    assert.is_true(rel(tg, tc) < tol, "‖θ_gpu − θ_cpu‖/‖θ_cpu‖ = " .. rel(tg, tc) .. ", same choices at "
                                      .. same .. " of 30 steps")
    local ac, ag = c.last_metrics[1][2], g.last_metrics[1][2]
    assert.is_true(math.abs(ac - ag) <= 0.02, string.format("accuracy cpu %.4f gpu %.4f", ac, ag))
    assert.is_true(math.abs(c.last_metrics[2][2] - g.last_metrics[2][2]) <= 5e-2 * c.last_metrics[2][2])
    -- the telemetry of both runs: the same robust statistics to rounding
    for _, key in ipairs({ "loss", "honest_norm", "byz_norm", "agg_norm", "cosine", "variance_ratio" }) do
      local a, b = g.last[key], c.last[key]
      assert.is_true(math.abs(a - b) <= tol * 10 * math.max(1e-3, math.abs(b)), key .. ": gpu " .. a .. " cpu " .. b)
    end
    local csv = io.open(tmpdir .. "/sum-gpu/summary.csv"):read("*a")
    assert.truthy(csv:find("robust/honest_norm", 1, true))
    assert.truthy(csv:find("eval%-top1%-X%-acc"))
  end)

  test("every device attack gives its CPU rows (lie, empire, reverse, zero, nan, inf, gaussian, random, optimal-*); the others go through the host", function()
    local n, d = 9, 4099
    local G = R.new(7, "gpu_session_spec"):normal(T.new({ n, d }), 0, 1)
    for k = 0, d - 1, 7 do G:pointer()[k] = 0 / 0 end                -- a NaN in honest row 1
    local honest, byz = { 1, 2, 3, 4, 5, 6, 7 }, { 8, 9 }
    local cases = { { "lie" }, { "lie", { "ddof:1", "z:-1.5" } }, { "empire" }, { "reverse" },
                    { "reverse", { "of:own", "factor:100" } }, { "zero" }, { "nan" }, { "inf" },
                    { "gaussian" }, { "random" }, { "optimal-lie", { "evals:6" } },
                    { "optimal-empire", { "evals:6" } }, { "minmax" }, { "mimic" } }
    for _, cs in ipairs(cases) do
      local warned = {}
      local function new() return A.new(cs[1], cs[2], { n = n, f = 2, r = 2, seed = 3,
                                        warn = function(m) warned[#warned + 1] = m end }) end
      local Gc, Gd = G:clone(), G:to("cuda")
      local ic = new():apply({ G = Gc, honest = honest, byz = byz, step = 4, rng = R.new(1, "a") })
      local a = new()
      local id = a:apply({ G = Gd, honest = honest, byz = byz, step = 4, rng = R.new(1, "a") })
      local back = Gd:to("cpu")
      assert.is_true(back:allclose(Gc, 0, 0), cs[1] .. ": the rows differ from the CPU's")
      for key, v in pairs(ic) do   -- what the attack chose; a searched distance to double rounding
        local same = v == id[key] or (type(v) == "number" and math.abs(v - id[key]) <= 1e-9 * math.abs(v))
        assert.is_true(same, cs[1] .. "." .. key .. ": cpu " .. tostring(v) .. " gpu " .. tostring(id[key]))
      end
      assert.are.equal(a:runs_on("cuda") and 0 or 1, #warned, cs[1] .. ": " .. table.concat(warned, "; "))
    end
  end)

  test("a checkpoint of a GPU run resumes on the CPU, and one of a CPU run on the GPU", function()
    local every = { checkpoint_delta = 5, evaluation_delta = 0 }
    local function o(dir, gpu_on)
      local x = opts(every)
      x.checkpoint_dir, x.use_gpu = tmpdir .. "/" .. dir, gpu_on or nil
      return x
    end
    local g = run(o("g2c", true), 10)
    local c = run(o("c2g"), 10)
    -- resume each from its step-5 checkpoint on the other device
    for _, p in ipairs({ { "g2c", false, c }, { "c2g", true, g } }) do
      local d = tmpdir .. "/" .. p[1]
      os.remove(d .. "/model-10.ckpt")
      local s = run(o(p[1], p[2]), 5)
      assert.are.equal(10, s.global_step)
      local t5 = theta_of(d .. "/model-5.ckpt")
      assert.is_true(rel(host_theta(s), host_theta(p[3])) < 1e-3, p[1])
      assert.is_true(rel(host_theta(s), t5) > 1e-6, p[1] .. ": it trained")
    end
  end)

  test("a GPU run stopped and resumed on the GPU is bit-identical to one that never stopped", function()
    local x = opts({ use_gpu = true, checkpoint_dir = tmpdir .. "/resume", evaluation_delta = 0 })
    run(x, 6)
    local resumed = run(x, 6)
    assert.are.equal(12, resumed.global_step)
    local straight = run(opts({ use_gpu = true, evaluation_delta = 0 }), 12)
    assert.is_true(host_theta(resumed):allclose(host_theta(straight), 0, 0))
  end)

  -- The convolutional experiments: trained on the GPU as on the CPU where this build has the
  -- convolution kernels, refused before any data is read, naming the kernel, where it has not.
  local conv = require("agt.backend").get("cuda"):has("nn.conv2d_forward")
  local function cifar_dir()   -- CIFAR-10's binary format, random pixels (no download there)
    local dir = tmpdir .. "/cifar"
    if fs.kind(dir) == "dir" then return dir end
    return require("agt.data").write_random_cifar10(dir, 200, 200, R.new(1, "cifar"))
  end
  local function conv_opts(name, extra)
    local words = name == "cnnet" and { "batch-size:8", "eval-size:100", "data-dir:" .. cifar_dir(), "download:false" }
                  or { "batch-size:8", "eval-size:200", DATA }
    local o = opts({ experiment = name, experiment_args = words, aggregator = "average", attack = "empire",
                     nb_workers = 4, evaluation_delta = 0 })
    for k, v in pairs(extra or {}) do o[k] = v end
    return o
  end
  for _, name in ipairs({ "fashion-cnn", "cnnet" }) do
    if conv then
      test(name .. " trains on the GPU as on the CPU (the device's convolution kernels)", function()
        local c = run(conv_opts(name), 6)
        local g = run(conv_opts(name, { use_gpu = true }), 6)
        assert.is_true(rel(host_theta(g), host_theta(c)) < 1e-3, name .. ": " .. rel(host_theta(g), host_theta(c)))
        assert.is_true(math.abs(c.last_metrics[1][2] - g.last_metrics[1][2]) <= 0.02)
      end)
    else
      test(name .. " is refused by --use-gpu before any data is read, naming the missing kernel", function()
        local o = conv_opts(name, { use_gpu = true })
        o.experiment_args = { "batch-size:8", "data-dir:/nonexistent" }
        local okn, err = pcall(S.new, o)
        assert.is_false(okn)
        assert.matches("^%-%-use%-gpu: experiment " .. name:gsub("%-", "%%-")
                       .. " cannot train on the GPU in this build: nn%.conv2d_forward has no kernel on cuda", err)
      end)
    end
  end

  test("worker momentum, server momentum and local steps run on the device as on the CPU", function()
    for _, extra in ipairs({ { momentum_at = "worker", momentum = 0.9 }, { momentum_at = "server", momentum = 0.9 },
                             { local_steps = 3, aggregator = "average", attack = "empire" } }) do
      local c = run(opts(extra), 8)
      extra.use_gpu = true
      local g = run(opts(extra), 8)
      assert.is_true(rel(host_theta(g), host_theta(c)) < 1e-3, next(extra))
    end
  end)
end)
