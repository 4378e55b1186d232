-- Specs of `agt run`: every flag parsed, checked and acting, errors naming the flag before any
-- work, exit statuses, and runs end to end on the real fashion-mnist experiment (a small
-- evaluation subset keeps them quick).
local H = require("helpers")
local read = H.read
local S = require("agt.session")
local FL = require("agt.cli.run.flags")
local K = require("agt.checkpoint")
local fs = require("agt.fs")
local TF = require("agt.tfevents")
local cli = require("agt.cli.run")

local tmpdir = os.tmpname()
os.remove(tmpdir)
setup(function() assert(fs.mkdir_p(tmpdir)) end)
teardown(function() os.execute("rm -rf '" .. tmpdir .. "'") end)


-- Runs the CLI with its stdout and stderr captured.
local function agt_run(args)
  local out, err = {}, {}
  local real_out, real_err = io.stdout, io.stderr
  local function cap(buf)
    return { write = function(self, ...) for _, x in ipairs({ ... }) do buf[#buf + 1] = tostring(x) end; return self end,
             flush = function() end }
  end
  io.stdout, io.stderr = cap(out), cap(err)
  local ok, code = pcall(cli, args)
  io.stdout, io.stderr = real_out, real_err
  assert(ok, code)
  return code, table.concat(out), table.concat(err)
end

local function parse_check(args)
  return FL.check(assert(FL.parse_args(args)))
end

local function refused(args, pattern)
  local code, _, err = agt_run(args)
  assert.are.equal(2, code)
  assert.truthy(err:find(pattern), "stderr was: " .. err)
end

local BASE = { "--experiment", "fashion-mnist", "--aggregator", "average", "--nb-workers", "3" }
local function with(...)
  local a = {}
  for _, x in ipairs(BASE) do a[#a + 1] = x end
  for _, x in ipairs({ ... }) do a[#a + 1] = x end
  return a
end

describe("agt run flags", function()
  it("documents every flag in --help", function()
    local code, out = agt_run({ "--help" })
    assert.are.equal(0, code)
    for _, fl in ipairs(FL.flags) do
      assert.truthy(out:find("--" .. fl.name, 1, true), fl.name)
    end
    for _, name in ipairs({ "--max-steps", "--server", "--client", "--MPI" }) do
      assert.truthy(out:find(name, 1, true), name)
    end
  end)

  it("parses values, --flag=value, booleans, key:value lists and the --max-steps alias", function()
    local o = parse_check(with("--experiment-args", "batch-size:16", "eval-size:100",
      "--max-steps=7", "--trace", "--use-gpu=false", "--seed", "42", "--l2-regularize", "1e-3",
      "--learning-rate-args=initial-rate:0.1", "decay-step:5", "--checkpoint-period", "-1"))
    assert.are.same({ "batch-size:16", "eval-size:100" }, o.experiment_args)
    assert.are.same({ "initial-rate:0.1", "decay-step:5" }, o.learning_rate_args)
    assert.are.equal(7, o.max_step)
    assert.is_true(o.trace)
    assert.is_false(o.use_gpu)
    assert.are.equal(42, o.seed)
    assert.are.equal(1e-3, o.l2_regularize)
    assert.are.equal(-1, o.checkpoint_period)
  end)

  it("has runner.py's defaults, but summaries every 10 steps (runner.py's 30 s gave one point to a short run)", function()
    local o = parse_check(BASE)
    assert.are.same({ "sgd", "fixed", -1, -1, 0, 0, 10000, -1, 120, 10, 30, -1, 10 },
      { o.optimizer, o.learning_rate, o.l1_regularize, o.l2_regularize, o.nb_decl_byz_workers,
        o.nb_real_byz_workers, o.max_step, o.checkpoint_delta, o.checkpoint_period,
        o.summary_delta, o.summary_period, o.evaluation_delta, o.evaluation_period })
    assert.is_nil(o.evaluation_file)     -- no checkpoint dir: no file (and never one named "-")
    assert.is_nil(o.summary_dir)
    local c = parse_check(with("--checkpoint-dir", "x/y"))
    assert.are.equal("x/y/eval", c.evaluation_file)
    assert.are.equal("x/y", c.summary_dir)
    local d = parse_check(with("--checkpoint-dir", "x", "--evaluation-file", "-", "--summary-dir", "-"))
    assert.is_nil(d.evaluation_file)
    assert.is_nil(d.summary_dir)
  end)

  it("refuses bad values and combinations before any work, naming the flag", function()
    refused({ "--aggregator", "average", "--nb-workers", "3" }, "^agt run: %-%-experiment: is required")
    refused(with("--nb-workers", "4"), "%-%-nb%-workers: given twice")
    refused({ "--experiment", "x", "--aggregator", "average", "--nb-workers", "three" },
            "%-%-nb%-workers: expects an integer, got 'three'")
    refused(with("--nb-real-byz-workers", "4", "--attack", "lie"), "%-%-nb%-real%-byz%-workers: r cannot exceed n, got n=3 r=4")
    refused(with("--nb-real-byz-workers", "3", "--attack", "lie"), "%-%-nb%-real%-byz%-workers: needs at least one honest worker")
    refused(with("--nb-real-byz-workers", "1"), "%-%-nb%-real%-byz%-workers: r=1 attackers need %-%-attack")
    refused(with("--nb-decl-byz-workers", "3"), "%-%-nb%-decl%-byz%-workers: f must be smaller than n, got n=3 f=3")
    refused(with("--nb-decl-byz-workers", "-1"), "%-%-nb%-decl%-byz%-workers: must be >= 0")
    refused(with("--max-step", "1.5"), "%-%-max%-step: expects an integer")
    refused(with("--summary-delta", "2.5"), "%-%-summary%-delta: expects an integer")
    refused(with("--checkpoint-period", "soon"), "%-%-checkpoint%-period: expects a number")
    refused(with("--checkpoint-keep", "0"), "%-%-checkpoint%-keep: must be >= 1")
    refused(with("--seed", "-2"), "%-%-seed: must be in")
    refused(with("--trace=maybe"), "%-%-trace: expects true or false")
    refused(with("--reuse-gpu"), "%-%-reuse%-gpu: needs %-%-use%-gpu")
    refused(with("--gpu-math", "tf32"), "%-%-gpu%-math: needs %-%-use%-gpu")
    refused(with("--use-gpu", "--gpu-math", "bf16"), "%-%-gpu%-math: expects fp32, tf32 or fp32%-fast")
    refused(with("--progress", "fancy"), "%-%-progress: expects auto, line, plain or none")
    refused(with("--experiment-args", "batch-size"), "%-%-experiment%-args: expects key:value words, got 'batch%-size'")
    refused(with("--stdout-to", "/proc/no/such/file"), "%-%-stdout%-to: cannot open")
    refused(with("--stderr-to", "/proc/no/such/file"), "%-%-stderr%-to: cannot open")
    refused(with("--max-step"), "%-%-max%-step: expects a value")
    refused(with("--frobnicate"), "unknown flag %-%-frobnicate")
    refused(with("stray"), "unexpected argument 'stray'")
    for _, d in ipairs({ "--client", "--ev-job-name" }) do
      refused(with(d, "x"), "^agt run: " .. d:gsub("%-", "%%-") .. ": distributed mode is not yet supported")
    end
    refused(with("--server", "x"), "^agt run: %-%-keys: is required with %-%-auth curve")
    refused(with("--server", "x", "--auth", "none"), "^agt run: %-%-server: cluster: cannot read 'x'")
    -- outside mpirun (or without OpenMPI), said before anything starts (spec/mpi_spec.lua runs it)
    refused(with("--MPI"), "^agt run: %-%-MPI: ")
  end)

  it("refuses an attack with no attacker and attack arguments with no attack, naming the flag", function()
    -- both trained attack-free before, saying nothing
    refused(with("--attack", "reverse", "--attack-args", "factor:100"),
            "%-%-attack: 'reverse' with %-%-nb%-real%-byz%-workers 0 attacks with no worker")
    refused(with("--attack", "label-flip"), "%-%-attack: 'label%-flip' with %-%-nb%-real%-byz%-workers 0")
    refused(with("--attack-args", "factor:100"), "%-%-attack%-args: given without %-%-attack")
    parse_check(with("--attack", "reverse", "--nb-real-byz-workers", "1"))
  end)

  it("warns, by name, of flags given that cannot take effect, and of no others", function()
    local function warnings(args) return select(2, FL.check(assert(FL.parse_args(args)))) end
    local w = warnings(with("--no-wait", "--checkpoint-delta", "5", "--checkpoint-keep", "2",
                            "--summary-period", "5", "--trace", "--quiet"))
    local text = table.concat(w, "\n")
    for _, flag in ipairs({ "no%-wait", "checkpoint%-delta", "checkpoint%-keep", "summary%-period", "trace" }) do
      assert.truthy(text:find("%-%-" .. flag .. ": has no effect"), flag .. " in:\n" .. text)
    end
    assert.are.equal(5, #w)
    -- given where they act, given their default, or turned off: nothing to say
    assert.are.same({}, warnings(with("--checkpoint-dir", "x", "--checkpoint-delta", "5", "--summary-period", "5")))
    assert.are.same({}, warnings(with("--checkpoint-period", "-1", "--summary-delta", "0", "--checkpoint-keep", "3")))
    assert.are.same({}, warnings(with("--trace", "--quiet", "--stderr-to", tmpdir .. "/trace")))
    -- and agt run prints them on stderr before training
    local code, _, err = agt_run(with("--no-wait", "--max-step", "1", "--evaluation-period", "-1",
                                      "--experiment-args", "eval-size:10", "--quiet"))
    assert.are.equal(0, code)
    assert.truthy(err:find("agt: warning: %-%-no%-wait: has no effect in a local run"), err)
  end)

  it("refuses unknown parts and bad part arguments, naming the flag", function()
    refused({ "--experiment", "no-such-exp", "--aggregator", "average", "--nb-workers", "3" },
            "%-%-experiment: unknown experiment 'no%-such%-exp' %(known: .*fashion%-mnist")
    refused(with("--attack", "no-such-attack", "--nb-real-byz-workers", "1"), "^agt run: %-%-attack: ")
    refused(with("--optimizer", "no-such-opt"), "^agt run: %-%-optimizer: ")
    refused(with("--optimizer", "adam", "--optimizer-args", "adam-beta1:2"), "^agt run: %-%-optimizer%-args.*adam%-beta1")
    refused(with("--learning-rate", "no-such-schedule"), "^agt run: %-%-learning%-rate: ")
    refused(with("--experiment-args", "no-such-key:1"), "^agt run: %-%-experiment%-args")
    refused({ "--experiment", "fashion-mnist", "--aggregator", "no-such-rule", "--nb-workers", "3" },
            "^agt run: %-%-aggregator: ")
    refused({ "--experiment", "fashion-mnist", "--aggregator", "krum", "--nb-workers", "3",
              "--nb-decl-byz-workers", "1" },
            "^agt run: %-%-aggregator: krum needs n >= 2f%+3, got n=3 f=1")
  end)

  local has_gpu = require("agt.gpu").available()
  local gpu_it = has_gpu and function(name) pending(name .. " (a GPU is here: spec/gpu_session_spec.lua runs on it)") end or it
  gpu_it("refuses --use-gpu where there is no GPU, saying why and what to do", function()
    local code, _, err = agt_run(with("--use-gpu", "--max-step", "2", "--quiet", "--checkpoint-dir",
                                      tmpdir .. "/nogpu", "--summary-dir", "-",
                                      "--experiment-args", "batch-size:8", "eval-size:100"))
    assert.are_not.equal(0, code)
    assert.truthy(err:find("%-%-use%-gpu: .+ %(run without %-%-use%-gpu to train on the CPU%)"),
                  "stderr was: " .. err)
    assert.is_nil(fs.kind(tmpdir .. "/nogpu/model-2.ckpt"))
  end)
end)

describe("agt run end to end (fashion-mnist)", function()
  local EXP = { "--experiment-args", "batch-size:16", "eval-size:300" }

  it("trains, evaluates, checkpoints, summarises, traces and tees; a second run continues", function()
    local dir = tmpdir .. "/full"
    local args = with("--optimizer", "adam", "--optimizer-args", "adam-beta1:0.8",
      "--learning-rate", "exponential", "--learning-rate-args", "initial-rate:0.01", "decay-step:10",
      "--l1-regularize", "1e-5", "--l2-regularize", "1e-4", "--max-step", "12",
      "--checkpoint-dir", dir, "--checkpoint-delta", "5", "--checkpoint-period", "-1",
      "--checkpoint-keep", "2", "--summary-delta", "4", "--summary-period", "-1",
      "--evaluation-delta", "6", "--evaluation-period", "-1", "--trace", "--no-wait",
      "--stdout-to", dir .. ".out", "--stderr-to", dir .. ".err", "--seed", "5", "--quiet")
    for _, x in ipairs(EXP) do args[#args + 1] = x end
    fs.mkdir_p(dir)
    local code, out = agt_run(args)
    assert.are.equal(0, code)
    assert.are.equal("", out)                                   -- --quiet
    local teed = read(dir .. ".out")
    assert.truthy(teed:find("Step 0: top1%-X%-acc = "))
    assert.truthy(teed:find("Step 12: top1%-X%-acc = "))
    assert.truthy(teed:find("Throughput: [%d.]+ step%(s%)/s %(excluding 1st step%)"))
    local trace = read(dir .. ".err")
    assert.truthy(trace:find("[TRACE] (begin) step 11: Master: aggregated gradient application", 1, true))
    local steps = {}
    for l in io.lines(dir .. "/eval") do steps[#steps + 1] = tonumber(l:match("^[%d.]+\t(%d+)\t")) end
    assert.are.same({ 0, 6, 12 }, steps)
    local ck = K.list(dir)
    assert.are.same({ 12, 10 }, { ck[1].step, ck[2].step })   -- delta 5 and the stop, keep 2
    local evfile
    for _, n in ipairs(fs.list(dir)) do if n:find("^events%.out%.tfevents") then evfile = n end end
    local events = assert(TF.read(dir .. "/" .. evfile))
    local lr_steps = {}
    for _, e in ipairs(events) do
      for _, tv in ipairs(e.scalars or {}) do
        if tv[1] == "learning_rate" then lr_steps[#lr_steps + 1] = e.step end
      end
    end
    -- every --summary-delta steps and at each evaluation (step 6)
    assert.are.same({ 4, 6, 8, 12 }, lr_steps)
    -- the same command again continues from step 12
    code = agt_run(args)
    assert.are.equal(0, code)
    assert.truthy(read(dir .. ".out"):find("Restored step 12 from .*model%-12%.ckpt"))
    assert.are.equal(24, K.list(dir)[1].step)
    -- the resumed run's evaluation at step 12 is not written twice, to the file or the summaries
    steps = {}
    for l in io.lines(dir .. "/eval") do steps[#steps + 1] = tonumber(l:match("^[%d.]+\t(%d+)\t")) end
    assert.are.same({ 0, 6, 12, 18, 24 }, steps)
    local seen = {}
    for _, row in ipairs(require("agt.summary").read_csv(dir .. "/summary.csv")) do
      local key = row[2] .. " " .. row[3]
      assert.is_nil(seen[key], "summary.csv has two rows for " .. key)
      seen[key] = true
    end
    -- with other settings it is refused, naming the flag
    local other = {}
    for i, x in ipairs(args) do other[i] = x end
    for i, x in ipairs(other) do if x == "--seed" then other[i + 1] = "6" end end
    refused(other, "%-%-seed: the checkpoint was made with '5', this run has '6'")
  end)

  it("resumes bit-exactly with the real parts (stateful rule, random bucketing, attack, adam)", function()
    local function args(dir, steps)
      local a = { "--experiment", "fashion-mnist", "--nb-workers", "7", "--nb-decl-byz-workers", "1",
        "--aggregator", "bucketing,centered-clipping", "--nb-real-byz-workers", "1",
        "--attack", "mimic", "--attack-args", "selection:random", "variant:principal", "--optimizer", "adam",
        "--max-step", tostring(steps), "--checkpoint-dir", dir, "--quiet", "--seed", "11",
        "--checkpoint-period", "-1", "--evaluation-period", "-1", "--summary-dir", "-" }
      for _, x in ipairs(EXP) do a[#a + 1] = x end
      return a
    end
    local a, b = tmpdir .. "/exact-a", tmpdir .. "/exact-b"
    assert.are.equal(0, (agt_run(args(a, 16))))
    assert.are.equal(0, (agt_run(args(b, 9))))
    assert.are.equal(0, (agt_run(args(b, 7))))
    local ta = assert(K.load(a .. "/model-16.ckpt"))
    local tb = assert(K.load(b .. "/model-16.ckpt"))
    local t9 = assert(K.load(b .. "/model-9.ckpt"))
    for _, key in ipairs({ "theta", "optimizer", "rule", "attack", "rng.rule", "rng.attack", "worker.3" }) do
      assert.is_true(ta[key] ~= nil, key)
      assert.is_true(ta[key] == tb[key], key)
    end
    assert.is_true(ta.theta ~= t9.theta)
  end)

  it("runs Byzantine workers with a gradient attack and a data attack", function()
    local dir = tmpdir .. "/byz"
    local args = with("--nb-decl-byz-workers", "1", "--nb-real-byz-workers", "1", "--attack", "reverse",
      "--attack-args", "factor:100", "--max-step", "3", "--evaluation-file", dir .. "/e",
      "--quiet", "--checkpoint-period", "-1")
    for _, x in ipairs(EXP) do args[#args + 1] = x end
    assert.are.equal(0, (agt_run(args)))
    local info = read(dir .. "/e.info")
    assert.truthy(info:find("attack=reverse"))
    assert.truthy(info:find("r=1"))
    args = with("--nb-decl-byz-workers", "1", "--nb-real-byz-workers", "1", "--attack", "label-flip",
      "--max-step", "3", "--evaluation-file", "-", "--quiet")
    for _, x in ipairs(EXP) do args[#args + 1] = x end
    assert.are.equal(0, (agt_run(args)))
  end)
end)
