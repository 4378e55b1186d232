-- agt.session — one training run: the parameter server and its n workers in this process.
--
-- `agt run` and scripts drive the same object:
--   local s = agt.session{ experiment = "fashion-mnist", aggregator = "bulyan", nb_workers = 11,
--                          nb_decl_byz_workers = 2, nb_real_byz_workers = 2, attack = "lie",
--                          checkpoint_dir = "runs/x", max_step = 1000 }
--   s:run()            -- max_step more steps (or until Ctrl-C); evaluations, checkpoints, summaries
--   s:step()           -- exactly one synchronous step; returns its telemetry
--   s:evaluate()  s:checkpoint()  s:close()   s.theta (f32 tensor of d)   s.global_step
--   agt.session.new(opts, { source = fn }) -- another gradient source (see below)
-- Option keys are the `agt run` flags with '_' for '-' (agt.cli.run.flags); every value is
-- checked, and every rule, attack, optimizer and schedule is built, before any data is loaded,
-- so a bad run is refused at once with the name of the flag at fault.
--
-- A session is composed of parts, each with a narrow interface and its own checkpoint entries:
--   source      fills the n rows of G at θ (agt.session.workers: the local workers)
--   byzantine   which rows attack, and the attack that overwrites them (agt.session.byzantine)
--   rule        the aggregation rule and its random stream (agt.session.rule)
--   optimizer   the optimizer and the learning-rate schedule (agt.session.optimizer)
--   evaluator   test-set evaluations and the evaluation file (agt.session.evaluator)
--   summaries   TensorBoard events and summary.csv (agt.session.summaries)
--   momentum    the server's side of --momentum-at (agt.session.momentum; worker momentum is
--               the source's)
--   out         what the run prints (agt.session.output)
-- The session itself holds θ, G, the aggregate and the global step, and runs the loop.
--
-- With --use-gpu (s.device "cuda") θ, G (n × d), the aggregate and the optimizer's and the
-- momentum's vectors live on the GPU: the local workers compute their rows there, the attack,
-- the rule, the optimizer and the evaluation run there, and the host sees the losses, the
-- metrics, the telemetry's numbers and the checkpoints (copied to the host: the same bytes as a
-- CPU run's, so either resumes the other). A source of other processes' rows (--server, or a
-- script's source) fills a host G, which the GPU rule uploads each step.
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
local T = require("agt.tensor")
local B = require("agt.backend")
local R = require("agt.rng")
local E = require("agt.experiments")
local K = require("agt.checkpoint")
local fs = require("agt.fs")
local host = require("agt.host")
local clock = require("agt.clock")
local progress = require("agt.progress")
local FL = require("agt.cli.run.flags")
local Output = require("agt.session.output")
local Workers = require("agt.session.workers")
local Byzantine = require("agt.session.byzantine")
local Rule = require("agt.session.rule")
local Optimizer = require("agt.session.optimizer")
local Evaluator = require("agt.session.evaluator")
local Summaries = require("agt.session.summaries")
local Remote = require("agt.session.remote")
local Momentum = require("agt.session.momentum")

local M = {}

local Session = {}
Session.__index = Session

---------------------------------------------------------------------------------------------------
-- Building the parts

-- parts (optional): { source = function(exp, n, opts) -> a gradient source } replaces the local
-- workers (agt.session.workers.new has that signature; opts: seed, l1, l2, poison).
function M.new(opts, parts)
  local o, warnings = FL.check(opts)
  local s = setmetatable({ opts = o, parts = parts or {} }, Session)
  s.out = Output.new(o)
  for _, w in ipairs(warnings) do s.out:say_err("agt: warning: " .. w) end
  local ok, err = pcall(Session._build, s)
  if not ok then
    if s.source then pcall(s.source.close, s.source) end -- a remote source's workers stop now
    s.out:close()
    if s.ckpt_lock then s.ckpt_lock:release(); s.ckpt_lock = nil end
    error(err, 0)
  end
  return s
end

function Session:_build()
  local o = self.opts
  local n, f, r = o.nb_workers, o.nb_decl_byz_workers, o.nb_real_byz_workers
  self.n, self.f, self.r = n, f, r
  local function warn(msg) self.out:say_err("agt: warning: " .. msg) end

  -- 1. Everything cheap, so that a bad flag costs nothing: the experiment (its model, not its
  -- data, which loads on first use), the rule (built knowing d), attack, schedule, optimizer.
  if type(o.experiment) ~= "table" then
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

  -- The checkpoint directory is this run's (or the run is refused) before any data is read;
  -- a directory or file that cannot be written is found now, not at the first checkpoint.
  if o.checkpoint_dir then self:_lock() end
  if o.evaluation_file then
    local dir = o.evaluation_file:match("^(.*)/[^/]+$")
    if dir then fs.mkdir_p(dir) end
    local fh, err = io.open(o.evaluation_file, "a")
    if not fh then error("--evaluation-file: cannot open for appending: " .. tostring(err), 0) end
    fh:close()
  end
  if type(o.experiment) == "table" then
    self.exp = o.experiment
  else
    self.exp = FL.as_flag("experiment", E.load, o.experiment, o.experiment_args, { seed = o.seed, n = n })
  end
  local d = self.exp.d
  self.d = d
  self.rule = Rule.new(o, n, f, warn, d)
  self.byzantine = Byzantine.new(o, { n = n, f = f, r = r, rule = self.rule.rule, warn = warn })
  self.optimizer = Optimizer.new(o)
  -- --server, --MPI: the workers are other processes (agt.session.remote).
  local remote = (o.server or o.MPI) and not self.parts.source and Remote.plan(o, n)

  -- θ, G and the workers on the GPU with --use-gpu and local workers.
  local dev = (o.use_gpu and not remote and not self.parts.source) and "cuda" or "cpu"
  self.device = dev
  self:_preflight(d)

  -- 2. The parameters and the gradient source.
  local theta = T.new({ d })
  self.exp:init_params(theta, R.new(o.seed, R.stream_id("init", 0)))
  self.theta = dev == "cpu" and theta or theta:to(dev)
  self.optimizer:bind(d)
  self.momentum = Momentum.new(o, d, dev)
  local byz = self.byzantine
  self.source = (self.parts.source or remote or Workers.new)(self.exp, n, {
    seed = o.seed, l1 = o.l1_regularize > 0 and o.l1_regularize or 0,
    l2 = o.l2_regularize > 0 and o.l2_regularize or 0,
    poison = function(i) return byz:poison(i) end, warn = warn,
    byzantine = byz, -- a remote source tells the workers that attack over the wire
    local_steps = o.local_steps, momentum = o.momentum_at == "worker" and o.momentum or nil,
    device = dev,
  })
  self.G = T.new({ n, d }, "f32", dev)
  self.rows = {}
  for i = 1, n do self.rows[i] = self.G:row(i) end
  self.agg = T.new({ d }, "f32", dev)
  self.honest_mean = T.new({ d }, "f32", dev)
  if dev ~= "cpu" then
    require("agt.backend").get(dev).set_math(o.gpu_math)   -- process-wide: set by every session
    self:_probe_device(dev)
    self:say(string.format("--use-gpu: θ, G (%d × %d), the workers, the attack, the rule, the "
      .. "optimizer and the evaluation on %s%s", n, d, require("agt.gpu").describe(),
      o.gpu_math ~= "fp32" and " (--gpu-math " .. o.gpu_math .. ")" or ""))
  end
  self.summaries = Summaries.new(o.summary_dir)
  if self.source.counters then self.summaries.counters = function() return self.source:counters() end end
  self.evaluator = Evaluator.new({ exp = self.exp, file = o.evaluation_file, out = self.out,
                                   summaries = self.summaries, info = function() return self:_info() end })
  self.global_step = 0
  self.steps_run = 0
  self.step_time_total, self.first_step_time = 0, nil
  -- The trace of a source's rows, at the current step (nil without --trace: nothing formatted).
  if o.trace then
    self._trace_rows = function(what, phase) self.out:trace(self.global_step, what, phase) end
  end

  -- 3. Resume from the newest valid checkpoint.
  if o.checkpoint_dir then self:_restore() end
  self.start_step = self.global_step
end

---------------------------------------------------------------------------------------------------
-- Checkpoints: θ, the step and the settings are the session's; every part adds its own entries.

-- Canonical text of words or a table, for checkpoint fingerprints.
local function args_text(v)
  if type(v) ~= "table" then return tostring(v) end
  local c = {}
  if v[1] ~= nil then
    for i, w in ipairs(v) do c[i] = w end
  else
    for k, x in pairs(v) do c[#c + 1] = tostring(k) .. ":" .. tostring(x) end
  end
  table.sort(c)
  return table.concat(c, " ")
end

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
    ["momentum-at"] = o.momentum_at, ["momentum"] = tostring(o.momentum),
    ["local-steps"] = tostring(o.local_steps),
  }
end

-- What the run is, for the evaluation file's .info (agt plot's labels).
function Session:_info()
  local fp = self:_fingerprint()
  local rule = self.rule.rule
  local names = {}
  for i, el in ipairs(rule.elements or {}) do names[i] = tostring(el.name) end
  local atk = self.byzantine.attack
  return { { "experiment", fp.experiment }, { "aggregator", fp.aggregator }, { "attack", fp.attack },
           { "n", self.n }, { "f", self.f }, { "r", self.r }, { "seed", fp.seed }, { "d", self.d },
           { "rule_name", #names > 0 and table.concat(names, ",") or tostring(rule.name) },
           { "attack_name", atk and tostring(atk.name) or "" } }
end

-- The parts that own checkpoint entries, in the order their states are read back.
function Session:_parts()
  return { self.optimizer, self.rule, self.byzantine, self.source, self.momentum }
end

-- Everything that a resumed run needs, as a map of strings.
function Session:state()
  local th = self.theta.device == "cpu" and self.theta or self.theta:to("cpu")
  local map = {
    theta = ffi.string(th:pointer(), self.d * 4),
    step = tostring(self.global_step),
    d = tostring(self.d),
  }
  for _, part in ipairs(self:_parts()) do
    for k, v in pairs(part:state()) do map[k] = v end
  end
  for k, v in pairs(self:_fingerprint()) do map["config." .. k] = v end
  return map
end

-- Raises when map was saved by a run with other settings (a user's error, not a damaged file).
-- The parsed values of an argument list, as one canonical text ("k=v ..." sorted).
local function canonical(args)
  local c = {}
  for k, v in pairs(args or {}) do c[#c + 1] = tostring(k) .. "=" .. tostring(v) end
  table.sort(c)
  return table.concat(c, " ")
end

-- Whether the argument words saved in a checkpoint mean what this run's mean: "m:3" and
-- nothing at all are the same when 3 is m's default. Built with the saved words and compared
-- by value; false when that cannot be done (a part given as a Lua table, or words now refused).
function Session:_same_args(key, saved)
  local o = self.opts
  local words = {}
  for w in saved:gmatch("%S+") do words[#words + 1] = w end
  local ok, same = pcall(function()
    if key == "experiment-args" and type(o.experiment) == "string" then
      return canonical(E.load(o.experiment, words, { seed = o.seed, n = self.n }).args)
        == canonical(self.exp.args)
    elseif key == "aggregator-args" and type(o.aggregator) == "string" and self.rule.rule.elements then
      local A = require("agt.aggregators")
      local function all(r)
        local t = {}
        for i, el in ipairs(r.elements) do t[i] = canonical(el.args) end
        return table.concat(t, " | ")
      end
      return all(A.new(o.aggregator, self.n, self.f, words)) == all(self.rule.rule)
    elseif key == "attack-args" and type(o.attack) == "string" and self.byzantine.attack then
      local a = require("agt.attacks").new(o.attack, words, { n = self.n, f = self.f, r = self.r,
                                                             warn = function() end })
      return canonical(a.args) == canonical(self.byzantine.attack.args)
    end
    return false
  end)
  return ok and same == true
end

function Session:_check_config(map)
  for k, v in pairs(self:_fingerprint()) do
    local saved = map["config." .. k]
    if saved ~= nil and saved ~= v and not (k:match("%-args$") and self:_same_args(k, saved)) then
      error(string.format("--%s: the checkpoint was made with '%s', this run has '%s' (use another "
        .. "--checkpoint-dir, or the same settings to continue)", k, saved, v), 0)
    end
  end
end

function Session:set_state(map)
  self:_check_config(map)
  if tonumber(map.d) ~= self.d or #map.theta ~= self.d * 4 then
    error(string.format("--checkpoint-dir: the checkpoint holds %s parameters, the experiment has %d",
                        tostring(map.d), self.d), 0)
  end
  if self.theta.device == "cpu" then
    ffi.copy(self.theta:pointer(), map.theta, self.d * 4)
  else
    local th = T.new({ self.d })
    ffi.copy(th:pointer(), map.theta, self.d * 4)
    self.theta:copy(th)
  end
  for _, part in ipairs(self:_parts()) do part:set_state(map) end
  self.global_step = tonumber(map.step)
end

-- How agt.checkpoint validates a checkpoint of this run: the fields, then (restore) the state.
function Session:_ckpt_opts()
  local warn = function(msg) self.out:say_err("agt: warning: " .. msg) end
  return {
    warn = warn,
    -- no state is larger than θ, two optimizer slots and a rule's vectors, plus small parts
    max_bytes = 64 * self.d + 65536 * (self.n + 16),
    check = function(map, step)
      return require("agt.checkpoint").check_state(map, { step = step, d = self.d, n = self.n,
        rng_bytes = require("agt.rng").STATE_SIZE })
    end,
    -- A part that refuses its state refuses the file (forged or damaged: fall back), except
    -- for an error naming a flag ("--checkpoint-dir: ..."): the checkpoint is whole but not
    -- this run's (other settings, another gradient source), which the user must resolve.
    apply = function(map)
      self:_check_config(map)
      local ok, err = pcall(self.set_state, self, map)
      if ok then return true end
      err = tostring(err)
      if err:match("^%-%-[%w-]+:") then error(err, 0) end
      return nil, (err:gsub("^[^:\n]*%.lua:%d+: ", ""))
    end,
  }
end

-- Takes the checkpoint directory for this run (refused, naming the holder, when another has it).
function Session:_lock()
  if self.ckpt_lock then return end
  local lock, err = K.lock(self.opts.checkpoint_dir, function(msg) self.out:say_err("agt: warning: " .. msg) end)
  if not lock then error("--checkpoint-dir: " .. err, 0) end
  self.ckpt_lock = lock
end

-- The memory the run will hold, from the flags and d, against what the machine has (the GPU
-- with --use-gpu): refused up front with the numbers (G alone is n × d floats).
function Session:_preflight(d)
  local n, exp = self.n, self.exp
  local items = { { "G (n × d floats)", 4 * n * d }, { "θ, optimizer and rule vectors", 4 * 8 * d } }
  local B = exp.args and exp.args["batch-size"]
  if type(B) == "number" and type(exp.shape) == "table" then
    local per = 1
    for _, v in ipairs(exp.shape) do per = per * v end
    items[#items + 1] = { "the workers' batches", 4 * n * B * (per + 1) }
  end
  local avail, where
  if self.device ~= "cpu" then   -- G, θ, the vectors and the batches are the GPU's
    local gpu = require("agt.gpu")
    avail = gpu.mem_info()
    where = "free memory of " .. tostring(gpu.describe())
  end
  require("agt.preflight").memory(items, "nb-workers",
    "use fewer workers (--nb-workers), a smaller batch-size, or a machine with more memory", avail, where)
end

-- A model's layers find their kernels on θ's device at their first call: one forward and
-- backward pass on one zero example finds a layer the device lacks now, before any data is read.
function Session:_probe_device(dev)
  local model = self.exp.model
  if type(model) ~= "table" or not model.loss_grad or not model.input_shape then return end
  local shape = { 1 }
  for _, v in ipairs(model.input_shape) do shape[#shape + 1] = v end
  local x, y = T.new(shape, "f32", dev), T.new({ 1 }, "i32", dev)
  x:zero()
  y:copy(T.new({ 1 }, "i32"):fill(0))
  local g = T.new({ self.d }, "f32", dev)
  local ok, err = pcall(model.loss_grad, model, self.theta, x, y, 1, g, R.new(0, "probe"))
  g:free(); x:free(); y:free()
  if not ok then
    local why = tostring(err):gsub("^[^:\n]*%.lua:%d+: ", ""):gsub("; copy the tensors with.*$", "")
    error(string.format("--use-gpu: experiment %s cannot train on the GPU in this build: %s (run "
      .. "without --use-gpu to train on the CPU)", tostring(self.exp.name), why), 0)
  end
end

function Session:_restore()
  self:_lock()
  local map, path = K.restore(self.opts.checkpoint_dir, self:_ckpt_opts())
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
  local map = self:state()
  local step = tonumber(map.step)
  local path, err = K.save(dir, step, map, self.opts.checkpoint_keep, self:_ckpt_opts())
  if not path then error("checkpoint failed: " .. err, 0) end
  self.last_ckpt_step, self.last_ckpt_time = step, clock.mono()
  return path
end

---------------------------------------------------------------------------------------------------
-- Printing and evaluating

function Session:say(line) self.out:say(line) end
function Session:say_err(line) self.out:say_err(line) end
function Session:trace(what, phase) self.out:trace(self.global_step, what, phase) end

-- Evaluates θ now: prints it, appends it to the evaluation file, adds it to the summaries.
-- The metrics stay in s.last_metrics.
function Session:evaluate()
  -- the summaries' means up to this step go out with the evaluation (docs/runner.md)
  self.summaries:write(self.global_step)
  self.last_metrics = self.evaluator:evaluate(self.theta, self.global_step)
  return self.last_metrics
end

---------------------------------------------------------------------------------------------------
-- One step

-- cos(a, b) from the two norms (each computed once per step: on the GPU each is a wait)
local function cosine(a, b, na, nb)
  if na == 0 or nb == 0 then return 0 end
  return a:dot(b) / (na * nb)
end

-- Robustness telemetry (read-only: it draws no random number and changes nothing). The rows'
-- norms and distances come from one pass over G each (vec.rows_norm2, vec.rows_sqdist): on
-- the GPU the host waits a few times per step, not twice per row.
function Session:_robustness(tel, honest, byz, is_byz, info)
  local hm, G, n, d = self.honest_mean, self.G, self.n, self.d
  local be = B.of(G)
  local norms = self._norms or ffi.new("double[?]", n)
  self._norms = norms
  be:op("vec.rows_norm2")(G:pointer(), n, d, norms)
  hm:zero()
  local hn = 0
  for _, i in ipairs(honest) do
    hm:axpy(1 / #honest, self.rows[i])
    hn = hn + norms[i - 1]
  end
  tel.honest_norm = hn / #honest
  local mn = hm:norm()
  -- The honest rows' variance over their mean's squared norm, Σ‖h_i − μ‖² / (h − 1) / ‖μ‖²
  -- (what worker momentum is meant to shrink; ByzantineMomentum's study reports its root).
  if #honest >= 2 then
    local sq = self._sqd or ffi.new("double[?]", n)
    self._sqd = sq
    be:op("vec.rows_sqdist")(G:pointer(), n, d, hm:pointer(), sq)
    local var = 0
    for _, i in ipairs(honest) do var = var + sq[i - 1] end
    tel.variance_ratio = var / (#honest - 1) / (mn * mn)
  end
  if #byz > 0 then
    local bn = 0
    for _, i in ipairs(byz) do bn = bn + norms[i - 1] end
    tel.byz_norm = bn / #byz
  end
  tel.agg_norm = self.agg:norm()
  tel.cosine = cosine(self.agg, hm, tel.agg_norm, mn)
  if info.selected then
    tel.selected = #info.selected
    local through = 0
    for _, i in ipairs(info.selected) do if is_byz[i] then through = through + 1 end end
    tel.byz_selected = through
    tel.selected_rows = info.selected
  end
  tel.byz = byz
end

-- Runs one synchronous step; returns its telemetry:
-- { step, loss, lr, selected, byz_selected, honest_norm, byz_norm, cosine, variance_ratio,
--   t_gradients, t_attack, t_aggregate, t_apply, t_step }
function Session:step()
  local k = self.global_step
  self._applying = false
  local t0 = clock.mono()
  -- Gradients: every worker at the same θ, into its row. An attacker's row holds its own honest
  -- gradient on entry to the attack (data attackers compute on their poisoned shard). A remote
  -- source may leave rows faulty (not arrived): they are neither honest nor attacking this step.
  -- With --local-steps K > 1 the rows are model differences: the workers step at the
  -- schedule's rate and the server applies the aggregate at rate 1 (FedAvg).
  local local_lr = self.opts.local_steps > 1 and self.optimizer:rate(k) or nil
  self._asked = self:_checkpoint_after(k)
  local losses, faulty = self.source:fill(self.theta, self.G, k, { trace = self._trace_rows, lr = local_lr,
                                                                    checkpoint = self._asked })
  self.rule:check_faulty(k, faulty)
  local is_faulty = {}
  for _, i in ipairs(faulty or {}) do is_faulty[i] = true end
  local is_byz, honest, byz = {}, {}, {}
  for _, i in ipairs(self.byzantine:rows(k)) do
    if not is_faulty[i] then is_byz[i] = true; byz[#byz + 1] = i end
  end
  for i = 1, self.n do if not is_byz[i] and not is_faulty[i] then honest[#honest + 1] = i end end
  if #honest == 0 then
    error(string.format("step %d: no honest row arrived (%d faulty)", k, #(faulty or {})), 0)
  end
  local loss = 0
  for _, i in ipairs(honest) do loss = loss + losses[i] end
  loss = loss / #honest
  if loss ~= loss then
    error(string.format("model diverged with loss = nan at step %d", k), 0)
  end
  self.momentum:rows(self.rows)
  local t1 = clock.mono()
  if self.byzantine:acts(byz) then
    self:trace("Byzantine workers: attack", "begin")
    self.byzantine:apply(self.G, honest, byz, k, self.rule.rule)
    self:trace("Byzantine workers: attack", "end")
  end
  local t2 = clock.mono()
  self:trace("Master: aggregated gradient computation", "begin")
  local info = self.rule:aggregate(self.G, self.agg, k, faulty)
  self:trace("Master: aggregated gradient computation", "end")
  local t3 = clock.mono()
  self:trace("Master: aggregated gradient application", "begin")
  self._applying = true   -- θ changes from here: no Ctrl-C puts this step back (see _snapshot)
  -- ... nor stops it half done: the kernels do not see a Ctrl-C until θ, the optimizer's and
  -- the server momentum's states are all updated (the loop sees it after the step).
  host.hold_interrupts(true)
  local oka, lr = pcall(function()
    return self.optimizer:apply(self.theta, self.momentum:update(self.agg), k, local_lr and 1)
  end)
  host.hold_interrupts(false)
  if not oka then error(lr, 0) end
  self:trace("Master: aggregated gradient application", "end")
  local t4 = clock.mono()
  self.global_step = k + 1
  self._applying, self._pre_step_state = false, nil   -- the step is whole: nothing to put back

  local tel = { step = k + 1, loss = loss, lr = lr, faulty = faulty and #faulty or 0, t_gradients = t1 - t0, t_attack = t2 - t1,
                t_aggregate = t3 - t2, t_apply = t4 - t3, t_step = t4 - t0 }
  self:_robustness(tel, honest, byz, is_byz, info)
  self.last = tel
  return tel
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
  if steps ~= nil and (type(steps) ~= "number" or steps ~= math.floor(steps) or steps < 0
                       or steps == math.huge) then
    error(string.format("s:run(steps): steps must be a whole number >= 0 (0: until interrupted), got %s",
                        tostring(steps)), 2)
  end
  steps = steps or o.max_step
  local last = steps > 0 and self.global_step + steps or nil
  self._last = last
  self.summaries:open(self.global_step)
  -- Progress goes to the terminal only (never into --stdout-to), and not at all with --quiet.
  self.progress = progress.new({ out = io.stdout, total = last,
    mode = o.quiet and "none" or o.progress, every = 10 })
  self.out.progress = self.progress
  local now = clock.mono()
  self.last_ckpt_time, self.evaluator.last_time, self.summaries.last_time = now, now, now
  self.last_ckpt_step = self.last_ckpt_step or self.global_step

  -- Ctrl-C must only set the flag polled between steps, not raise inside a step. Since the loop
  -- polls, it can also run compiled where the JIT is off (the REPL turns it off so that a plain
  -- Lua loop stays interruptible): a user's Lua rule runs at script speed, and the traces made
  -- here are flushed after, so that none outlives the run.
  local jit_off = not jit.status()
  if jit_off then jit.on() end
  host.sigint_raises(false)
  local okr, rep = pcall(self._loop, self)
  host.sigint_raises(true)
  if jit_off then jit.flush(); jit.off() end
  if not okr then error(rep, 0) end
  return rep
end

function Session:_loop()
  local last = self._last
  local run_start, stopped = self.steps_run, "done"
  local ok0, err0 = pcall(self.evaluate, self)
  if not ok0 then
    if not host.interrupted() then error(err0, 0) end
    stopped = "interrupted"
  end
  while stopped == "done" do
    if last and self.global_step >= last then break end
    if host.interrupted() then stopped = "interrupted"; break end
    -- What the step changes before it applies the aggregate: a Ctrl-C in the middle of it puts
    -- it back, since a half-done step has already advanced the samplers (and the session must
    -- stay exactly resumable).
    self._pre_step_state = self:_snapshot()
    local ok, err = pcall(self._one, self)
    if not ok then
      if host.interrupted() and not self._applying then
        if self._pre_step_state then self:_put_back(self._pre_step_state) end
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
    host.clear_interrupt()
    self:say(string.format("Interrupted at step %d: stopping cleanly", self.global_step))
  end
  self:_finish(true)
  return { steps = self.steps_run - run_start, stopped = stopped, step = self.global_step,
           throughput = self:throughput() }
end

-- The states of the parts a step changes before it applies the aggregate (the gradient
-- source's streams and vectors, the attack's and the rule's states and streams). θ, the
-- optimizer and the server's momentum change only when the aggregate is applied, after every
-- phase that polls Ctrl-C (a rule's search, a remote wait), so they are not copied: on the GPU
-- that would be a copy of θ to the host at every step. A part may keep its snapshot its own
-- way (part:snapshot() / part:restore(s): the workers' momenta stay on the device).
function Session:_snapshot()
  local snap = {}
  for k, part in ipairs({ self.rule, self.byzantine, self.source }) do
    snap[k] = part.snapshot and part:snapshot() or part:state()
  end
  return snap
end

function Session:_put_back(snap)
  for k, part in ipairs({ self.rule, self.byzantine, self.source }) do
    if part.restore then part:restore(snap[k]) else part:set_state(snap[k]) end
  end
end

-- Whether the loop checkpoints at the end of step k, as far as is known at its start: its
-- --checkpoint-delta, the run's last step, a --checkpoint-period already run out (not one that
-- runs out during the step, nor a Ctrl-C). A remote source asks the Byzantine workers for their
-- attack's state at such a step (agt.session.remote); a --checkpoint-period that runs out
-- during a step then checkpoints at the end of the next one (see _one).
function Session:_checkpoint_after(k)
  local o = self.opts
  if not o.checkpoint_dir then return false end
  local g = k + 1
  if self._last and g >= self._last then return true end
  return due(o.checkpoint_delta, o.checkpoint_period, g, self.last_ckpt_step, clock.mono(), self.last_ckpt_time)
end

-- One step of the loop and what follows it: progress, summaries, evaluation, checkpoint.
function Session:_one()
  local o = self.opts
  local tel = self:step()
  self._pre_step_state = nil
  self.steps_run = self.steps_run + 1
  self.step_time_total = self.step_time_total + tel.t_step
  if not self.first_step_time then self.first_step_time = tel.t_step end
  local sm, ev = self.summaries, self.evaluator
  sm:add(tel)
  local now = clock.mono()
  local acc = self.last_metrics and self.last_metrics[1]
  self.progress:update(now, self.global_step, tel.loss, acc)
  local g = self.global_step
  if due(o.summary_delta, o.summary_period, g, sm.last_step, now, sm.last_time) then
    sm:write(g)
  end
  if due(o.evaluation_delta, o.evaluation_period, g, ev.last_step, now, ev.last_time) then
    self:evaluate()
  end
  if o.checkpoint_dir and due(o.checkpoint_delta, o.checkpoint_period, g, self.last_ckpt_step,
                              now, self.last_ckpt_time)
     and (self._asked or not self.byzantine:keeps_wire_state()) then
    self:checkpoint()
  end
end

function Session:_finish(clean)
  if clean then
    if self.evaluator.last_step ~= self.global_step then self:evaluate() end
    if self.opts.checkpoint_dir and self.last_ckpt_step ~= self.global_step then
      local path = self:checkpoint()
      self:say("Checkpoint: " .. path)
    end
  end
  self.summaries:write(self.global_step)
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

-- Closes every part and lets the checkpoint directory go, then raises the first failure (a
-- full disk at the last write is still an error).
function Session:close()
  local first
  local function try(fn, ...)
    local ok, err = pcall(fn, ...)
    if not ok and not first then first = err end
  end
  try(self.summaries.close, self.summaries, self.global_step)
  try(self.evaluator.close, self.evaluator)
  try(self.source.close, self.source)
  try(self.out.close, self.out)
  if self.ckpt_lock then self.ckpt_lock:release(); self.ckpt_lock = nil end
  if first then error(first, 0) end
end

-- Builds a session and runs it: the whole of `agt run` without the flag parsing.
function M.run(opts)
  local s = M.new(opts)
  local ok, rep = pcall(s.run, s)
  s:close()
  if not ok then error(rep, 0) end
  return rep, s
end

setmetatable(M, { __call = function(_, opts) return M.new(opts) end })

return M
