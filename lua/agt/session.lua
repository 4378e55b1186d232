-- agt.session — one training run: the parameter server and its n workers in this process.
--
-- `agt run` and scripts drive the same object:
--   local s = agt.session{ experiment = "fashion-mnist", aggregator = "bulyan", nb_workers = 11,
--                          nb_decl_byz_workers = 2, nb_real_byz_workers = 2, attack = "lie",
--                          checkpoint_dir = "runs/x", max_step = 1000 }
--   s:run()            -- max_step more steps (or until Ctrl-C); evaluations, checkpoints, summaries
--   s:step()           -- exactly one synchronous step; returns its telemetry
--   s:evaluate()  s:checkpoint()  s:close()   s.theta (f32 tensor of d)   s.global_step
-- Option keys are the `agt run` flags with '_' for '-' (see M.flags); every value is checked, and
-- every rule, attack, optimizer and schedule is built, before any data is loaded, so a bad run is
-- refused at once with the name of the flag at fault.
--
-- Invariants. One step = every worker's gradient at the same θ into its row of G (n × d), then
-- the attack overwrites the Byzantine rows, the rule aggregates, the optimizer applies, and the
-- global step grows by one. Every random stream (workers' samplers, attack, rule) is seeded from
-- (seed, purpose) and saved in each checkpoint with θ, the optimizer state, the rule and attack
-- states and the step, so a run stopped and restarted gives bit-identical parameters to one
-- that never stopped. A checkpoint also records the settings that shape the trajectory (the
-- experiment, n, f, r, the rule, the attack, the seed, ...); resuming with different ones is
-- refused, naming the flag.
local ffi = require("ffi")

local M = {}

---------------------------------------------------------------------------------------------------
-- Flags: runner.py's names, meanings and defaults, plus --seed and --checkpoint-keep.
-- type: string | integer | number | boolean | words (key:value words up to the next flag).

M.flags = {
  { "experiment", "string", nil, "Experiment to run: a name (see 'agt help experiments') or a path to a .lua experiment", required = true },
  { "experiment-args", "words", {}, "key:value arguments of the experiment (e.g. batch-size:32)" },
  { "aggregator", "string", nil, "Gradient aggregation rule: a name, a pipeline 'nnm,krum', or a path to a .lua rule (see 'agt help aggregators')", required = true },
  { "aggregator-args", "words", {}, "key:value arguments of the rule" },
  { "optimizer", "string", "sgd", "Optimizer: sgd, adam, adagrad, adadelta, rmsprop" },
  { "optimizer-args", "words", {}, "key:value arguments of the optimizer (e.g. adam-beta1:0.9)" },
  { "learning-rate", "string", "fixed", "Learning rate schedule: fixed, polynomial, exponential" },
  { "learning-rate-args", "words", {}, "key:value arguments of the schedule (e.g. initial-rate:0.05)" },
  { "l1-regularize", "number", -1, "L1 regularisation: adds λ·Σ|w| to each worker's loss; non-positive = off" },
  { "l2-regularize", "number", -1, "L2 regularisation: adds (λ/2)·Σw², the squared norm (AggregaThor added the plain norm), to each worker's loss; non-positive = off" },
  { "nb-workers", "integer", nil, "Number of workers n (honest and Byzantine together)", required = true },
  { "nb-decl-byz-workers", "integer", 0, "Number of Byzantine workers f the rule is told to tolerate" },
  { "nb-real-byz-workers", "integer", 0, "Number of workers r that really attack (needs --attack)" },
  { "attack", "string", nil, "Byzantine behaviour of the r attackers: a name or a .lua path (see 'agt help attacks')" },
  { "attack-args", "words", {}, "key:value arguments of the attack" },
  { "max-step", "integer", 10000, "Number of ADDITIONAL steps from the restored step; <= 0 = no limit (Ctrl-C stops)", alias = "max-steps" },
  { "checkpoint-dir", "string", nil, "Directory of checkpoints; the run restores the newest valid one and continues" },
  { "checkpoint-delta", "integer", -1, "Checkpoint every this many steps; negative = off" },
  { "checkpoint-period", "number", 120, "Checkpoint every this many seconds; negative = off" },
  { "checkpoint-keep", "integer", 3, "Keep the newest this many checkpoints (>= 1)" },
  { "summary-dir", "string", nil, "Directory of TensorBoard event files and summary.csv (default: the checkpoint dir; '-' = none)" },
  { "summary-delta", "integer", -1, "Write summaries every this many steps; negative = off" },
  { "summary-period", "number", 30, "Write summaries every this many seconds; negative = off" },
  { "evaluation-file", "string", nil, "Evaluation file, lines '<wall s>\\t<step>\\t<name>:<value>...' (default: <checkpoint-dir>/eval; '-' = none)" },
  { "evaluation-delta", "integer", -1, "Evaluate every this many steps; negative = off (also evaluated at start and stop)" },
  { "evaluation-period", "number", 10, "Evaluate every this many seconds; negative = off" },
  { "use-gpu", "boolean", false, "Run the aggregation rule on the GPU (the workers' gradients stay on the CPU; without a CUDA build or a device, a warning and the CPU rule)" },
  { "reuse-gpu", "boolean", false, "Let several workers share one GPU (needs --use-gpu; in a local run they all share it)" },
  { "no-wait", "boolean", false, "Do not wait for Ctrl-C before exiting when done (a local run never waits: nothing else is served)" },
  { "trace", "boolean", false, "Print a line on stderr at the begin and end of each phase of each step" },
  { "stdout-to", "string", nil, "Also append what the run prints on stdout to this file" },
  { "stderr-to", "string", nil, "Also append what the run prints on stderr to this file" },
  { "seed", "integer", 1, "Seed of every random stream (initialisation, data order, attacks, rules)" },
  { "quiet", "boolean", false, "Print nothing on stdout and no --trace lines on stderr (the evaluation file, the summaries, --stdout-to and --stderr-to still get everything)" },
  { "progress", "string", "auto", "Progress display: auto (live line on a terminal, plain lines otherwise), line, plain, none" },
}

-- Distributed flags: a later version; refused with a clear message.
M.distributed_flags = { "server", "client", "ps-job-name", "wk-job-name", "ev-job-name", "MPI", "mpi" }

M.by_name = {}
for _, fl in ipairs(M.flags) do
  fl.name, fl.type, fl.default, fl.doc = fl[1], fl[2], fl[3], fl[4]
  fl.key = fl.name:gsub("-", "_")
  M.by_name[fl.name] = fl
  M.by_name[fl.key] = fl
  if fl.alias then
    M.by_name[fl.alias] = fl
    M.by_name[fl.alias:gsub("-", "_")] = fl
  end
end

local function flagerr(fl, fmt, ...)
  error(string.format("--%s: " .. fmt, fl.name, ...), 0)
end

-- Converts one value to the flag's type; raises naming the flag.
function M.convert(fl, v)
  local t = fl.type
  if t == "string" then
    if type(v) == "number" then v = tostring(v) end
    if type(v) ~= "string" and not (type(v) == "table" and fl.objects) then
      flagerr(fl, "expects a string, got %s", type(v))
    end
    if type(v) == "string" and v == "" then flagerr(fl, "expects a non-empty value") end
    return v
  elseif t == "integer" or t == "number" then
    local x = tonumber(v)
    if type(v) ~= "number" and type(v) ~= "string" or x == nil or x ~= x then
      flagerr(fl, "expects %s, got '%s'", t == "integer" and "an integer" or "a number", tostring(v))
    end
    if t == "integer" and (x ~= math.floor(x) or math.abs(x) == math.huge) then
      flagerr(fl, "expects an integer, got '%s'", tostring(v))
    end
    return x
  elseif t == "boolean" then
    if v == true or v == "true" or v == "1" or v == "yes" then return true end
    if v == false or v == "false" or v == "0" or v == "no" then return false end
    flagerr(fl, "expects true or false, got '%s'", tostring(v))
  elseif t == "words" then
    if type(v) == "string" then v = { v } end
    if type(v) ~= "table" then flagerr(fl, "expects key:value words, got %s", type(v)) end
    if #v > 0 or next(v) == nil then
      for _, w in ipairs(v) do
        if type(w) ~= "string" or not w:find(":") then
          flagerr(fl, "expects key:value words, got '%s'", tostring(w))
        end
      end
    end
    return v
  end
end

-- Canonical text of words or a table, for checkpoint fingerprints.
local function args_text(v)
  if type(v) ~= "table" then return tostring(v) end
  if v[1] ~= nil then
    local c = {}
    for i, w in ipairs(v) do c[i] = w end
    table.sort(c)
    return table.concat(c, " ")
  end
  local c = {}
  for k, x in pairs(v) do c[#c + 1] = tostring(k) .. ":" .. tostring(x) end
  table.sort(c)
  return table.concat(c, " ")
end

---------------------------------------------------------------------------------------------------
-- Checking the options (no work done here)

local objects_ok = { experiment = true, aggregator = true, attack = true, optimizer = true,
                     ["learning-rate"] = true }
for name in pairs(objects_ok) do M.by_name[name].objects = true end

-- Returns a normalised copy of opts (keys with '_', defaults filled), or raises "--flag: why".
function M.check(opts)
  if type(opts) ~= "table" then error("session options must be a table, got " .. type(opts), 0) end
  local o = {}
  for k, v in pairs(opts) do
    if type(k) ~= "string" then error("session option keys must be strings, got " .. tostring(k), 0) end
    for _, d in ipairs(M.distributed_flags) do
      if k == d or k == d:gsub("-", "_") then
        error(string.format("--%s: distributed mode is not yet supported; this version runs the "
          .. "parameter server and all workers in one process (leave out --%s)", d, d), 0)
      end
    end
    local fl = M.by_name[k]
    if not fl then
      local names = {}
      for _, f in ipairs(M.flags) do names[#names + 1] = f.key end
      error(string.format("unknown session option '%s' (known: %s)", k, table.concat(names, ", ")), 0)
    end
    if o[fl.key] ~= nil then flagerr(fl, "given twice") end
    o[fl.key] = M.convert(fl, v)
  end
  for _, fl in ipairs(M.flags) do
    if o[fl.key] == nil then
      if fl.required then flagerr(fl, "is required") end
      local d = fl.default
      if type(d) == "table" then d = {} end
      o[fl.key] = d
    end
  end
  local n, f, r = o.nb_workers, o.nb_decl_byz_workers, o.nb_real_byz_workers
  if n < 1 then flagerr(M.by_name["nb-workers"], "needs at least 1 worker, got %d", n) end
  if f < 0 then flagerr(M.by_name["nb-decl-byz-workers"], "must be >= 0, got %d", f) end
  if f >= n then
    flagerr(M.by_name["nb-decl-byz-workers"], "f must be smaller than n, got n=%d f=%d", n, f)
  end
  if r < 0 then flagerr(M.by_name["nb-real-byz-workers"], "must be >= 0, got %d", r) end
  if r > n then
    flagerr(M.by_name["nb-real-byz-workers"], "r cannot exceed n, got n=%d r=%d", n, r)
  end
  if r == n then
    flagerr(M.by_name["nb-real-byz-workers"], "needs at least one honest worker, got n=%d r=%d", n, r)
  end
  if r > 0 and o.attack == nil then
    flagerr(M.by_name["nb-real-byz-workers"], "r=%d attackers need --attack (see 'agt help attacks')", r)
  end
  if o.checkpoint_keep < 1 then flagerr(M.by_name["checkpoint-keep"], "must be >= 1, got %d", o.checkpoint_keep) end
  if o.seed < 0 or o.seed >= 2 ^ 53 then flagerr(M.by_name["seed"], "must be in [0, 2^53), got %s", o.seed) end
  if o.reuse_gpu and not o.use_gpu then flagerr(M.by_name["reuse-gpu"], "needs --use-gpu") end
  local modes = { auto = true, line = true, plain = true, none = true }
  if not modes[o.progress] then
    flagerr(M.by_name["progress"], "expects auto, line, plain or none, got '%s'", o.progress)
  end
  if o.checkpoint_dir == "-" then o.checkpoint_dir = nil end
  if o.evaluation_file == nil and o.checkpoint_dir then o.evaluation_file = o.checkpoint_dir .. "/eval" end
  if o.evaluation_file == "-" then o.evaluation_file = nil end
  if o.summary_dir == nil then o.summary_dir = o.checkpoint_dir end
  if o.summary_dir == "-" then o.summary_dir = nil end
  for _, k in ipairs({ "stdout_to", "stderr_to" }) do
    if o[k] then
      local fh, err = io.open(o[k], "a")
      if not fh then flagerr(M.by_name[k], "cannot open for appending: %s", err) end
      fh:close()
    end
  end
  return o
end

---------------------------------------------------------------------------------------------------
-- Clocks

pcall(ffi.cdef, [[
  typedef struct agt_timespec_ { long tv_sec; long tv_nsec; } agt_timespec_;
  int clock_gettime(int clk, agt_timespec_ *ts);
]])
local ts = ffi.new("agt_timespec_")
function M.mono()
  ffi.C.clock_gettime(1, ts)   -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end
function M.wall()
  ffi.C.clock_gettime(0, ts)   -- CLOCK_REALTIME
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

-- The interrupt flag set by the agt binary's SIGINT handler (false under a plain LuaJIT).
local interrupted_fn
function M.interrupted()
  if interrupted_fn == nil then
    local ok, F = pcall(require, "agt.ffi")
    if ok and pcall(function() return F.C.agt_interrupted end) then
      interrupted_fn = function() return F.C.agt_interrupted() ~= 0 end
      M.clear_interrupt = function() F.C.agt_interrupt_set(0) end
    else
      interrupted_fn = function() return false end
    end
  end
  return interrupted_fn()
end
M.clear_interrupt = function() end

---------------------------------------------------------------------------------------------------
-- Output: what the run prints, optionally tee'd to a file

local function tee(stream, fh)
  return {
    write = function(_, ...)
      if stream then stream:write(...) end
      if fh then fh:write(...) end
    end,
    flush = function()
      if stream then stream:flush() end
      if fh then fh:flush() end
    end,
  }
end

---------------------------------------------------------------------------------------------------
-- Building the parts

local function need(modname, what)
  local ok, mod = pcall(require, modname)
  if not ok then
    error(string.format("%s: module %s is not available in this build (%s)", what, modname,
                        tostring(mod):match("[^\n]*")), 0)
  end
  return mod
end

-- Runs fn, prefixing any error with the flag's name.
local function as_flag(name, fn, ...)
  local res = { pcall(fn, ...) }
  if not res[1] then
    local msg = tostring(res[2]):gsub("^[^:\n]*%.lua:%d+: ", "")
    if msg:match("^%-%-[%w-]+") then error(msg, 0) end   -- already names its flag
    error(string.format("--%s: %s", name, msg), 0)
  end
  return unpack(res, 2)
end

local Session = {}
Session.__index = Session

function M.new(opts)
  local o = M.check(opts)
  local s = setmetatable({ opts = o }, Session)
  local outfh = o.stdout_to and assert(io.open(o.stdout_to, "a"))
  local errfh = o.stderr_to and assert(io.open(o.stderr_to, "a"))
  s.files = { outfh, errfh }
  s.out = tee(not o.quiet and io.stdout or nil, outfh)
  s.err = tee(io.stderr, errfh)
  s.trace_out = tee(not o.quiet and io.stderr or nil, errfh)
  local ok, err = pcall(Session._build, s)
  if not ok then
    s:_close_files()
    error(err, 0)
  end
  return s
end

function Session:_build()
  local o = self.opts
  local n, f, r = o.nb_workers, o.nb_decl_byz_workers, o.nb_real_byz_workers
  local T = require("agt.tensor")
  local R = require("agt.rng")
  self.n, self.f, self.r = n, f, r

  -- 1. Everything cheap, so that a bad flag costs nothing: rule, attack, schedule, optimizer.
  if type(o.aggregator) == "table" then
    self.rule = o.aggregator
  else
    local A = need("agt.aggregators", "--aggregator")
    self.rule = as_flag("aggregator", A.new, o.aggregator, n, f, o.aggregator_args)
    if o.use_gpu then self.rule = self:_gpu_rule(self.rule) end
  end
  if o.attack ~= nil then
    if type(o.attack) == "table" then
      self.attack = o.attack
    else
      local K = need("agt.attacks", "--attack")
      self.attack = as_flag("attack", K.new, o.attack, o.attack_args,
                            { n = n, f = f, r = r, rule = self.rule, seed = o.seed,
                              warn = function(msg) self:say_err("agt: warning: " .. msg) end })
    end
  end
  if type(o.learning_rate) == "table" then
    self.sched = o.learning_rate
  else
    local L = need("agt.lr", "--learning-rate")
    self.sched = as_flag("learning-rate", L.new, o.learning_rate, o.learning_rate_args)
  end
  if type(o.optimizer) ~= "table" then
    local O = need("agt.optim", "--optimizer")
    as_flag("optimizer", O.new, o.optimizer, o.optimizer_args, 1)   -- checks the name and arguments only
  end
  if type(o.experiment) ~= "table" then
    local E = need("agt.experiments", "--experiment")
    local name = o.experiment
    if not name:find("/") and not name:find("%.lua$") then
      local known, list = false, E.list()
      for _, x in ipairs(list) do if x == name then known = true end end
      if not known then
        error(string.format("--experiment: unknown experiment '%s' (known: %s)", name,
                            table.concat(list, ", ")), 0)
      end
    end
  end

  -- 2. The experiment (this loads its data), the parameters and the workers.
  if type(o.experiment) == "table" then
    self.exp = o.experiment
  else
    local E = require("agt.experiments")
    self.exp = as_flag("experiment", E.load, o.experiment, o.experiment_args, { seed = o.seed, n = n })
  end
  local d = self.exp.d
  self.d = d
  self.theta = T.new({ d })
  self.exp:init_params(self.theta, R.new(o.seed, R.stream_id("init", 0)))
  if type(o.optimizer) == "table" then
    self.opt = o.optimizer
  else
    local O = require("agt.optim")
    self.opt = as_flag("optimizer", O.new, o.optimizer, o.optimizer_args, d)
  end

  -- Which workers attack: a data attack poisons fixed workers from the start.
  self.data_byz = {}
  if self.attack and self.attack.kind == "data" then
    for _, i in ipairs(self.attack:byzantine(0)) do self.data_byz[i] = true end
  end
  self.workers = {}
  local l1 = o.l1_regularize > 0 and o.l1_regularize or 0
  local l2 = o.l2_regularize > 0 and o.l2_regularize or 0
  for i = 1, n do
    self.workers[i] = self.exp:worker(i, { seed = o.seed, l1 = l1, l2 = l2,
      poison = self.data_byz[i] and self.attack.poison or nil })
  end
  self.G = T.new({ n, d })
  self.rows = {}
  for i = 1, n do self.rows[i] = self.G:row(i) end
  self.agg = T.new({ d })
  self.honest_mean = T.new({ d })
  self.rule_rng = R.new(o.seed, R.stream_id("rule", 0))
  self.attack_rng = R.new(o.seed, R.stream_id("attack", 0))
  self.global_step = 0
  self.start_step = 0
  self.steps_run = 0
  self.step_time_total, self.first_step_time = 0, nil
  self.last_metrics = nil
  self.sums, self.sums_n = {}, 0

  -- 3. Resume from the newest valid checkpoint.
  if o.checkpoint_dir then self:_restore() end
  self.start_step = self.global_step
end

-- --use-gpu: the rule runs on the GPU (agt.gpu's twin of every CPU rule, same results), fed
-- from the host gradient matrix; the CPU rule has already checked n, f and the arguments.
-- Without a CUDA build or a device, the run says so and keeps the CPU rule.
function Session:_gpu_rule(cpu_rule)
  local o = self.opts
  local feats = tostring(require("agt").features())
  local ok, why = false, "this agt was built without CUDA"
  if not feats:find("CUDA: no", 1, true) then
    ok, why = need("agt.gpu", "--use-gpu").available()
  end
  if not ok then
    self:say_err("agt: warning: --use-gpu: " .. tostring(why) .. "; aggregating on the CPU")
    self.gpu_fallback = tostring(why)
    return cpu_rule
  end
  local gpu = require("agt.gpu")
  local args = o.aggregator_args
  if args[1] ~= nil then
    local t = {}
    for _, w in ipairs(args) do
      local k, v = w:match("^([^:]+):(.*)$")
      t[k] = tonumber(v) or v
    end
    args = t
  end
  local g = as_flag("aggregator", gpu.rule, o.aggregator, self.n, self.f, args)
  return {
    name = cpu_rule.name, gpu = g,
    aggregate = function(_, G, out, ctx) return g:aggregate_host(G, out, ctx) end,
    state = function() return g:state() end,
    set_state = function(_, st) return g:set_state(st) end,
  }
end

---------------------------------------------------------------------------------------------------
-- Checkpoints

local function name_of(v)
  if type(v) == "table" then return tostring(v.name or "<object>") end
  return tostring(v)
end

-- Settings that shape the trajectory; a checkpoint made with others cannot be continued.
function Session:_fingerprint()
  local o = self.opts
  return {
    ["experiment"] = name_of(o.experiment), ["experiment-args"] = args_text(o.experiment_args),
    ["aggregator"] = name_of(o.aggregator), ["aggregator-args"] = args_text(o.aggregator_args),
    ["attack"] = o.attack and name_of(o.attack) or "", ["attack-args"] = args_text(o.attack_args),
    ["nb-workers"] = tostring(o.nb_workers), ["nb-decl-byz-workers"] = tostring(o.nb_decl_byz_workers),
    ["nb-real-byz-workers"] = tostring(o.nb_real_byz_workers),
    ["optimizer"] = name_of(o.optimizer), ["seed"] = tostring(o.seed),
    ["l1-regularize"] = tostring(o.l1_regularize), ["l2-regularize"] = tostring(o.l2_regularize),
  }
end

-- The float* of an f32 tensor (the binding exposes it as .ptr; :data() per the contract).
local function fptr(t)
  local p = t.ptr
  if p == nil then p = t:data() end
  return p
end

-- Everything that a resumed run needs, as a map of strings.
function Session:state()
  local map = {
    theta = ffi.string(fptr(self.theta), self.d * 4),
    step = tostring(self.global_step),
    d = tostring(self.d),
    optimizer = self.opt:state() or "",
    ["rng.rule"] = self.rule_rng:state(),
    ["rng.attack"] = self.attack_rng:state(),
  }
  local rs = self.rule.state and self.rule:state()
  if rs then map["rule"] = rs end
  local as = self.attack and self.attack.state and self.attack:state()
  if as then map["attack"] = as end
  for i, w in ipairs(self.workers) do map["worker." .. i] = w:state() end
  for k, v in pairs(self:_fingerprint()) do map["config." .. k] = v end
  return map
end

function Session:set_state(map)
  for k, v in pairs(self:_fingerprint()) do
    local saved = map["config." .. k]
    if saved ~= nil and saved ~= v then
      error(string.format("--%s: the checkpoint was made with '%s', this run has '%s' (use another "
        .. "--checkpoint-dir, or the same settings to continue)", k, saved, v), 0)
    end
  end
  if tonumber(map.d) ~= self.d or #map.theta ~= self.d * 4 then
    error(string.format("--checkpoint-dir: the checkpoint holds %s parameters, the experiment has %d",
                        tostring(map.d), self.d), 0)
  end
  ffi.copy(fptr(self.theta), map.theta, self.d * 4)
  self.opt:set_state(map.optimizer)
  self.rule_rng:set_state(map["rng.rule"])
  self.attack_rng:set_state(map["rng.attack"])
  if map.rule and self.rule.set_state then self.rule:set_state(map.rule) end
  if map.attack and self.attack and self.attack.set_state then self.attack:set_state(map.attack) end
  for i, w in ipairs(self.workers) do
    local ws = map["worker." .. i]
    if not ws then error("--checkpoint-dir: the checkpoint has no state for worker " .. i, 0) end
    w:set_state(ws)
  end
  self.global_step = tonumber(map.step)
end

function Session:_restore()
  local K = require("agt.checkpoint")
  local map, path = K.restore(self.opts.checkpoint_dir, function(msg) self:say_err("agt: " .. msg) end)
  if map then
    self:set_state(map)
    self.restored_from = path
    self:say(string.format("Restored step %d from %s", self.global_step, path))
  end
end

-- Writes a checkpoint of the current step now; returns its path (nil without a checkpoint dir).
function Session:checkpoint()
  local dir = self.opts.checkpoint_dir
  if not dir then return nil end
  local K = require("agt.checkpoint")
  local map = self:state()
  local step = tonumber(map.step)
  local path, err = K.save(dir, step, map, self.opts.checkpoint_keep)
  if not path then error("checkpoint failed: " .. err, 0) end
  self.last_ckpt_step, self.last_ckpt_time = step, M.mono()
  return path
end

---------------------------------------------------------------------------------------------------
-- Printing

function Session:say(line)
  if self.progress then self.progress:clear() end
  self.out:write(line, "\n")
  self.out:flush()
end

function Session:say_err(line)
  if self.progress then self.progress:clear() end
  self.err:write(line, "\n")
  self.err:flush()
end

function Session:trace(what, phase)
  if self.opts.trace then
    self.trace_out:write(string.format("[TRACE] (%s) %sstep %d: %s\n", phase,
                                 phase == "end" and "  " or "", self.global_step, what))
    self.trace_out:flush()
  end
end

---------------------------------------------------------------------------------------------------
-- Evaluation

local function fmtv(v)
  if type(v) == "number" then return string.format("%.9g", v) end
  return tostring(v)
end

-- Writes what the run is (for agt plot's labels) beside the evaluation file.
function Session:_write_info(path)
  local fp = self:_fingerprint()
  local fh = io.open(path, "w")
  if not fh then return end
  fh:write("experiment=", fp.experiment, "\n", "aggregator=", fp.aggregator, "\n",
           "attack=", fp.attack, "\n", "n=", self.n, "\n", "f=", self.f, "\n", "r=", self.r, "\n",
           "seed=", fp.seed, "\n", "d=", self.d, "\n")
  fh:close()
end

-- Evaluates θ now: prints it, appends it to the evaluation file, adds it to the summaries.
function Session:evaluate()
  local t0 = M.mono()
  local metrics = self.exp:evaluate(self.theta)
  local took = M.mono() - t0
  local wall = M.wall()
  local parts, shown = {}, {}
  for _, m in ipairs(metrics) do
    parts[#parts + 1] = m[1] .. ":" .. fmtv(m[2])
    shown[#shown + 1] = m[1] .. " = " .. fmtv(m[2])
  end
  if self.opts.evaluation_file then
    if not self.eval_fh then
      local dir = self.opts.evaluation_file:match("^(.*)/[^/]+$")
      if dir then require("agt.fs").mkdir_p(dir) end
      local fh, err = io.open(self.opts.evaluation_file, "a")
      if not fh then error("--evaluation-file: cannot open: " .. err, 0) end
      self.eval_fh = fh
      self:_write_info(self.opts.evaluation_file .. ".info")
    end
    self.eval_fh:write(string.format("%.6f\t%d\t%s\n", wall, self.global_step, table.concat(parts, "\t")))
    self.eval_fh:flush()
  end
  self:say(string.format("Step %d: %s (took %.3f s)", self.global_step, table.concat(shown, ", "), took))
  if self.summary then
    local sc = {}
    for _, m in ipairs(metrics) do sc[#sc + 1] = { "eval-" .. m[1], m[2] } end
    self.summary:scalars(self.global_step, wall, sc)
    self.summary:flush()
  end
  self.last_metrics = metrics
  self.last_eval_step, self.last_eval_time = self.global_step, M.mono()
  return metrics
end

---------------------------------------------------------------------------------------------------
-- One step

local function cosine(a, b)
  local na, nb = a:norm(), b:norm()
  if na == 0 or nb == 0 then return 0 end
  return a:dot(b) / (na * nb)
end

-- Runs one synchronous step; returns its telemetry:
-- { step, loss, lr, selected, byz_selected, honest_norm, byz_norm, cosine, t_gradients,
--   t_attack, t_aggregate, t_apply, t_step }
function Session:step()
  local k = self.global_step
  local n = self.n
  local t0 = M.mono()
  local byz = {}
  if self.attack and self.r > 0 then
    if self.attack.kind == "data" then
      for i in pairs(self.data_byz) do byz[#byz + 1] = i end
      table.sort(byz)
    else
      byz = self.attack:byzantine(k)
    end
  end
  local is_byz = {}
  for _, i in ipairs(byz) do is_byz[i] = true end
  local honest = {}
  for i = 1, n do if not is_byz[i] then honest[#honest + 1] = i end end

  -- Gradients: every worker at the same θ, into its row. An attacker's row holds its own honest
  -- gradient on entry to the attack (data attackers compute on their poisoned shard).
  local loss_sum = 0
  for i = 1, n do
    self:trace(string.format("Worker %d: loss and gradient computation", i), "begin")
    local loss = self.workers[i]:gradient(self.theta, self.rows[i])
    self:trace(string.format("Worker %d: loss and gradient computation", i), "end")
    if not is_byz[i] then loss_sum = loss_sum + loss end
  end
  local loss = loss_sum / #honest
  if loss ~= loss then
    error(string.format("model diverged with loss = nan at step %d", k), 0)
  end
  local t1 = M.mono()
  if #byz > 0 and self.attack.kind ~= "data" then
    self:trace("Byzantine workers: attack", "begin")
    self.attack:apply({ G = self.G, honest = honest, byz = byz, step = k, rule = self.rule,
                        rng = self.attack_rng })
    self:trace("Byzantine workers: attack", "end")
  end
  local t2 = M.mono()
  self:trace("Master: aggregated gradient computation", "begin")
  local info = self.rule:aggregate(self.G, self.agg, { step = k, rng = self.rule_rng }) or {}
  self:trace("Master: aggregated gradient computation", "end")
  local t3 = M.mono()
  local lr = self.sched:rate(k)
  self:trace("Master: aggregated gradient application", "begin")
  self.opt:step(self.theta, self.agg, lr)
  self:trace("Master: aggregated gradient application", "end")
  local t4 = M.mono()
  self.global_step = k + 1

  -- Robustness telemetry (read-only: it draws no random number and changes nothing).
  local tel = { step = k + 1, loss = loss, lr = lr, t_gradients = t1 - t0, t_attack = t2 - t1,
                t_aggregate = t3 - t2, t_apply = t4 - t3, t_step = t4 - t0 }
  local hm = self.honest_mean
  hm:zero()
  local hn = 0
  for _, i in ipairs(honest) do
    hm:axpy(1 / #honest, self.rows[i])
    hn = hn + self.rows[i]:norm()
  end
  tel.honest_norm = hn / #honest
  if #byz > 0 then
    local bn = 0
    for _, i in ipairs(byz) do bn = bn + self.rows[i]:norm() end
    tel.byz_norm = bn / #byz
  end
  tel.cosine = cosine(self.agg, hm)
  tel.agg_norm = self.agg:norm()
  if info.selected then
    tel.selected = #info.selected
    local through = 0
    for _, i in ipairs(info.selected) do if is_byz[i] then through = through + 1 end end
    tel.byz_selected = through
    tel.selected_rows = info.selected
  end
  tel.byz = byz
  self.last = tel
  return tel
end

---------------------------------------------------------------------------------------------------
-- Summaries

local summary_keys = {
  { "loss", "loss" }, { "lr", "learning_rate" }, { "honest_norm", "robust/honest_norm" },
  { "byz_norm", "robust/byzantine_norm" }, { "agg_norm", "robust/aggregate_norm" },
  { "cosine", "robust/cosine_aggregate_honest_mean" }, { "selected", "robust/selected" },
  { "byz_selected", "robust/byzantine_selected" }, { "t_gradients", "time/gradients" },
  { "t_attack", "time/attack" }, { "t_aggregate", "time/aggregation" }, { "t_apply", "time/apply" },
  { "t_step", "time/step" },
}

function Session:_accumulate(tel)
  for _, kv in ipairs(summary_keys) do
    local v = tel[kv[1]]
    if v then self.sums[kv[1]] = (self.sums[kv[1]] or 0) + v end
  end
  self.sums_n = self.sums_n + 1
end

-- Writes the means since the last summary, at the current step.
function Session:write_summary()
  if not self.summary or self.sums_n == 0 then return end
  local sc = {}
  for _, kv in ipairs(summary_keys) do
    local v = self.sums[kv[1]]
    if v then sc[#sc + 1] = { kv[2], v / self.sums_n } end
  end
  self.summary:scalars(self.global_step, M.wall(), sc)
  self.summary:flush()
  self.sums, self.sums_n = {}, 0
  self.last_summary_step, self.last_summary_time = self.global_step, M.mono()
end

---------------------------------------------------------------------------------------------------
-- The loop

local function due(delta, period, step, last_step, now, last_time)
  if delta and delta > 0 and step % delta == 0 and step ~= last_step then return true end
  if period and period >= 0 and now - (last_time or now) >= period and step ~= last_step then
    return true
  end
  return false
end

-- Runs `steps` more steps (default --max-step; <= 0: until interrupted). Evaluates at start and
-- stop, checkpoints at stop, and on the deltas and periods in between. Returns a report:
-- { steps = run, stopped = "done" | "interrupted", step = global step, throughput = {...} }.
function Session:run(steps)
  local o = self.opts
  steps = steps or o.max_step
  local last = steps > 0 and self.global_step + steps or nil
  self._last = last
  if o.summary_dir and not self.summary then
    local S = require("agt.summary")
    local sm, err = S.open(o.summary_dir, { step = self.global_step })
    if not sm then error("--summary-dir: " .. err, 0) end
    self.summary = sm
  end
  -- Progress goes to the terminal only (never into --stdout-to), and not at all with --quiet.
  self.progress = require("agt.progress").new({ out = io.stdout, total = last,
    mode = o.quiet and "none" or o.progress, every = 10 })
  local now = M.mono()
  self.last_ckpt_time, self.last_eval_time, self.last_summary_time = now, now, now
  self.last_ckpt_step = self.last_ckpt_step or self.global_step

  -- Ctrl-C must only set the flag polled between steps, not raise inside a step.
  local okh, host = pcall(require, "agt.host")
  if okh then host.sigint_raises(false) end
  local okr, rep = pcall(self._loop, self)
  if okh then host.sigint_raises(true) end
  if not okr then error(rep, 0) end
  return rep
end

function Session:_loop()
  local o = self.opts
  local last = self._last
  local run_start, stopped = self.steps_run, "done"
  local ok0, err0 = pcall(self.evaluate, self)
  if not ok0 then
    if not M.interrupted() then error(err0, 0) end
    stopped = "interrupted"
  end
  while stopped == "done" do
    if last and self.global_step >= last then break end
    if M.interrupted() then stopped = "interrupted"; break end
    -- The state before the step: a Ctrl-C in the middle of it puts it back, since a half-done
    -- step has already advanced the samplers (and the session must stay exactly resumable).
    self._pre_step_state = self:state()
    local ok, err = pcall(self._one, self)
    if not ok then
      if M.interrupted() then
        if self._pre_step_state then self:set_state(self._pre_step_state) end
        self._pre_step_state = nil
        stopped = "interrupted"
        break
      end
      self._pre_step_state = nil
      self:_finish(false)
      error(err, 0)
    end
  end
  if stopped == "interrupted" then
    M.clear_interrupt()
    self:say(string.format("Interrupted at step %d: stopping cleanly", self.global_step))
  end
  self:_finish(true)
  return { steps = self.steps_run - run_start, stopped = stopped, step = self.global_step,
           throughput = self:throughput() }
end

-- One step of the loop and what follows it: progress, summaries, evaluation, checkpoint.
function Session:_one()
  local o = self.opts
  local tel = self:step()
  self._pre_step_state = nil
  self.steps_run = self.steps_run + 1
  self.step_time_total = self.step_time_total + tel.t_step
  if not self.first_step_time then self.first_step_time = tel.t_step end
  self:_accumulate(tel)
  local now = M.mono()
  local acc = self.last_metrics and self.last_metrics[1]
  self.progress:update(now, self.global_step, tel.loss, acc)
  local g = self.global_step
  if due(o.summary_delta, o.summary_period, g, self.last_summary_step, now, self.last_summary_time) then
    self:write_summary()
  end
  if due(o.evaluation_delta, o.evaluation_period, g, self.last_eval_step, now, self.last_eval_time) then
    self:evaluate()
  end
  if o.checkpoint_dir and due(o.checkpoint_delta, o.checkpoint_period, g, self.last_ckpt_step,
                              now, self.last_ckpt_time) then
    self:checkpoint()
  end
end

function Session:_finish(clean)
  if clean then
    if self.last_eval_step ~= self.global_step then self:evaluate() end
    if self.opts.checkpoint_dir and self.last_ckpt_step ~= self.global_step then
      local path = self:checkpoint()
      self:say("Checkpoint: " .. path)
    end
  end
  self:write_summary()
  if self.progress then self.progress:finish() end
  local tp = self:throughput()
  if tp.all then
    self:say(string.format("Throughput: %.3f step(s)/s (all steps)", tp.all))
    if tp.excluding_first then
      self:say(string.format("Throughput: %.3f step(s)/s (excluding 1st step)", tp.excluding_first))
    end
  end
end

-- Steps per second of computing time over the steps this process ran (evaluations and
-- checkpoints excluded), with and without the first one (which pays for warm-up).
function Session:throughput()
  local k, total = self.steps_run, self.step_time_total
  local tp = { steps = k, seconds = total }
  if k >= 1 and total > 0 then tp.all = k / total end
  if k >= 2 and total - self.first_step_time > 0 then
    tp.excluding_first = (k - 1) / (total - self.first_step_time)
  end
  return tp
end

function Session:_close_files()
  for i = 1, 2 do
    if self.files[i] then self.files[i]:close(); self.files[i] = false end
  end
end

function Session:close()
  if self.summary then self.summary:close(self.global_step, M.wall()); self.summary = nil end
  if self.eval_fh then self.eval_fh:close(); self.eval_fh = nil end
  self:_close_files()
end

-- Builds a session and runs it: the whole of `agt run` without the flag parsing.
function M.run(opts)
  local s = M.new(opts)
  local ok, rep = pcall(s.run, s)
  s:close()
  if not ok then error(rep, 0) end
  return rep, s
end

---------------------------------------------------------------------------------------------------
-- The command line (agt run)

local function wrap(text, width, indent)
  local lines, line = {}, ""
  for word in text:gmatch("%S+") do
    if #line > 0 and #line + 1 + #word > width then
      lines[#lines + 1] = line
      line = word
    else
      line = #line > 0 and line .. " " .. word or word
    end
  end
  if #line > 0 then lines[#lines + 1] = line end
  return table.concat(lines, "\n" .. indent)
end

function M.help()
  local out = {
    "Usage: agt run --experiment NAME --aggregator RULE --nb-workers N [flags...]",
    "",
    "Trains a model with a parameter server and N workers in this process, F of them declared",
    "Byzantine and R really attacking, aggregating with a robust rule. Flags as AggregaThor's",
    "runner.py; argument lists are key:value words up to the next flag (--experiment-args",
    "batch-size:64 noniid-alpha:0.5). The run restores the newest valid checkpoint of",
    "--checkpoint-dir and continues from it; Ctrl-C stops cleanly (evaluation + checkpoint).",
    "",
    "Flags:",
  }
  for _, fl in ipairs(M.flags) do
    local head = "  --" .. fl.name
    if fl.type == "words" then head = head .. " KEY:VALUE..."
    elseif fl.type ~= "boolean" then head = head .. " " .. fl.type:upper() end
    local doc = fl.doc
    if fl.required then doc = doc .. " (required)"
    elseif fl.default ~= nil and fl.type ~= "words" and fl.type ~= "boolean" then
      doc = doc .. " (default: " .. tostring(fl.default) .. ")"
    end
    if fl.alias then doc = doc .. " (alias --" .. fl.alias .. ")" end
    out[#out + 1] = head
    out[#out + 1] = "      " .. wrap(doc, 88, "      ")
  end
  out[#out + 1] = "  --help"
  out[#out + 1] = "      Print this help and exit"
  out[#out + 1] = ""
  out[#out + 1] = "Not yet supported (distributed mode): --server, --client, --ps-job-name, --wk-job-name,"
  out[#out + 1] = "--ev-job-name, --MPI. Without them the run is local (the default)."
  out[#out + 1] = ""
  out[#out + 1] = "More: agt help experiments | aggregators | attacks; the evaluation file, checkpoints"
  out[#out + 1] = "and summaries are described in docs/runner.md. Exit status: 0 done, 1 failed during"
  out[#out + 1] = "training, 2 refused (bad flags), 130 interrupted (after a clean stop)."
  return table.concat(out, "\n")
end

-- Parses argument words into session options; raises "--flag: why" (or "help" for --help).
function M.parse_args(args)
  local opts, seen = {}, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--help" or a == "-h" then return nil, "help" end
    local name, val = a:match("^%-%-([^=]+)=(.*)$")
    if not name then name = a:match("^%-%-(.+)$") end
    if not name then
      error(string.format("unexpected argument '%s' (flags start with --; see agt run --help)", a), 0)
    end
    for _, d in ipairs(M.distributed_flags) do
      if name == d then
        error(string.format("--%s: distributed mode is not yet supported; this version runs the "
          .. "parameter server and all workers in one process (leave out --%s)", name, name), 0)
      end
    end
    local fl = M.by_name[name]
    if not fl or name:find("_") then
      error(string.format("unknown flag --%s (see agt run --help)", name), 0)
    end
    if seen[fl.name] then error(string.format("--%s: given twice", fl.name), 0) end
    seen[fl.name] = true
    i = i + 1
    if fl.type == "boolean" then
      opts[fl.key] = val == nil and true or val
    elseif fl.type == "words" then
      local words = {}
      if val ~= nil then words[1] = val end
      while i <= #args and not args[i]:match("^%-%-") do
        words[#words + 1] = args[i]
        i = i + 1
      end
      opts[fl.key] = words
    else
      if val == nil then
        if i > #args or (args[i]:match("^%-%-") and not tonumber(args[i])) then
          error(string.format("--%s: expects a value", fl.name), 0)
        end
        val = args[i]
        i = i + 1
      end
      opts[fl.key] = val
    end
  end
  return opts
end

setmetatable(M, { __call = function(_, opts) return M.new(opts) end })

return M
