-- agt.cli.run.flags — the flags of `agt run` (AggregaThor's runner.py names, meanings and
-- defaults, plus --seed, --checkpoint-keep, --quiet, --progress): their table, the parsing of
-- command-line words, the help text, and the refusals of bad values and combinations.
--
--   local FL = require("agt.cli.run.flags")
--   FL.parse_args(words) -> options (keys with '_' for '-', values as given) | nil, "help"
--   FL.check(options)    -> a normalised copy (every value converted and checked, defaults
--                           filled, '-' and derived paths resolved) and the warnings about
--                           flags given that cannot take effect, or raises "--flag: why"
--   FL.help() -> text;  FL.flags (the table);  FL.by_name[name or key] -> flag
--   FL.as_flag(name, fn, ...) -> fn(...), its error prefixed with "--name: "
-- agt.session checks its options here, so a script's agt.session{...} and `agt run` refuse
-- the same things with the same messages. Every refusal names its flag: "--nb-workers: expects
-- an integer, got 'three'". Values are converted by agt.kv, the one parser of typed values.
local kv = require("agt.kv")

local M = {}

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
  { "momentum-at", "string", "none", "Where momentum is taken (ByzantineMomentum's placements): worker (each worker sends its momentum m_i <- beta m_i + g_i instead of its gradient), server (each row becomes g_i + beta times the previous aggregate, before the rule), update (the server applies m <- beta m + aggregate), or none",
    choices = { "none", "worker", "server", "update" } },
  { "momentum", "number", 0.9, "Momentum factor beta of --momentum-at, in [0, 1)" },
  { "local-steps", "integer", 1, "Local SGD steps K of each worker per step; K > 1 sends the model difference theta - theta_K as the row (FedAvg), which the server applies at rate 1 (needs --optimizer sgd)" },
  { "nb-workers", "integer", nil, "Number of workers n (honest and Byzantine together)", required = true },
  { "nb-decl-byz-workers", "integer", 0, "Number of Byzantine workers f the rule is told to tolerate" },
  { "nb-real-byz-workers", "integer", 0, "Number of workers r that really attack (needs --attack)" },
  { "attack", "string", nil, "Byzantine behaviour of the r attackers: a name or a .lua path (see 'agt help attacks'); needs --nb-real-byz-workers R >= 1" },
  { "attack-args", "words", {}, "key:value arguments of the attack" },
  { "max-step", "integer", 10000, "Number of ADDITIONAL steps from the restored step; <= 0 = no limit (Ctrl-C stops)", alias = "max-steps" },
  { "checkpoint-dir", "string", nil, "Directory of checkpoints; the run restores the newest valid one and continues" },
  { "checkpoint-delta", "integer", -1, "Checkpoint every this many steps; negative = off" },
  { "checkpoint-period", "number", 120, "Checkpoint every this many seconds; negative = off" },
  { "checkpoint-keep", "integer", 3, "Keep the newest this many checkpoints (>= 1)" },
  { "summary-dir", "string", nil, "Directory of TensorBoard event files and summary.csv (default: the checkpoint dir; '-' = none)" },
  { "summary-delta", "integer", 10, "Write summaries every this many steps (and at each evaluation); non-positive = off" },
  { "summary-period", "number", 30, "Write summaries every this many seconds; negative = off" },
  { "evaluation-file", "string", nil, "Evaluation file, lines '<wall s>\\t<step>\\t<name>:<value>...' (default: <checkpoint-dir>/eval; '-' = none)" },
  { "evaluation-delta", "integer", -1, "Evaluate every this many steps; negative = off (also evaluated at start and stop)" },
  { "evaluation-period", "number", 10, "Evaluate every this many seconds; negative = off" },
  { "use-gpu", "boolean", false, "Train on the GPU: θ, G, the workers' forward and backward passes, the attack, the rule, the optimizer and the evaluation stay on the device (with --server, the rule only); without a CUDA build or a device, an error" },
  { "gpu-math", "string", "fp32", "Arithmetic of the GPU's convolutions and matrix products (needs --use-gpu): fp32 (float32, deterministic summing algorithms: the CPU's results to rounding, the same bits run to run), tf32 (TF32 tensor cores: faster, the products' inputs rounded to 10-bit mantissas; PyTorch's default for convolutions) or fp32-fast (float32 with any cuDNN algorithm, Winograd and non-deterministic ones too: PyTorch's float32 choice; not bit-repeatable)",
    choices = { "fp32", "tf32", "fp32-fast" } },
  { "reuse-gpu", "boolean", false, "Let several workers share one GPU (needs --use-gpu; in a local run they all share it)" },
  { "no-wait", "boolean", false, "Do not wait for Ctrl-C before exiting when done (a local run never waits: nothing else is served)" },
  { "trace", "boolean", false, "Print a line on stderr at the begin and end of each phase of each step" },
  { "stdout-to", "string", nil, "Also append what the run prints on stdout to this file" },
  { "stderr-to", "string", nil, "Also append what the run prints on stderr to this file" },
  { "server", "string", nil, "Distributed run: this process is the parameter server of the cluster, JSON {\"ps\": [\"host:port\"], \"workers\": [\"host:port\", ...]} inline or in a file; the workers are 'agt worker' processes (see docs/distributed.md)" },
  { "ps-job-name", "string", "ps", "Job name of the parameter server in the cluster" },
  { "wk-job-name", "string", "workers", "Job name of the workers in the cluster" },
  { "step-timeout", "number", 10, "Distributed run: seconds the PS waits for the rows of a step; a row missing then is faulty for that step (counts against f)" },
  { "wait-for", "integer", nil, "Distributed run: aggregate as soon as the first K rows of a step are in (Garfield's n-f mode; K from n-f to n, default n): the others are faulty for that step, the rule runs on K rows with f-(n-K)" },
  { "connect-timeout", "number", 60, "Distributed run: seconds the PS waits at start for the workers to connect and load their data" },
  { "auth", "string", "curve", "Distributed run: how workers are authenticated: curve (CURVE keys from --keys; traffic encrypted) or none (a trusted network only)", choices = { "curve", "none" } },
  { "attack-at-ps", "boolean", false, "Distributed run: the PS applies the attack to the rows of the workers marked Byzantine, with every worker's honest gradient (the omniscient attacker, for worst-case experiments); by default the Byzantine worker processes attack over the wire, colluding through what they can know (docs/distributed.md)" },
  { "keys", "string", nil, "Distributed run, --auth curve: the directory of 'agt keygen CLUSTER DIR' (the PS's keypair and every worker's public key)" },
  { "UDP", "integer", 0, "Distributed run: the first K workers (workers:0 .. K-1) send their rows as UDP datagrams, chunked, each authenticated; a chunk lost, late or forged leaves NaN at its own offsets, for a NaN-tolerant rule (see docs/distributed.md); 0 = every row over TCP" },
  { "udp-args", "words", {}, "Arguments of --UDP: chunk:BYTES payload per datagram (16384), port:P the PS's UDP port (0: its TCP port), timeout:S wait for a row's late chunks (0.05), rate:MBPS pace each sender (0: unpaced), drop:P tests: senders leave out chunks with probability P (seeded)" },
  { "MPI", "boolean", false, "Distributed run under mpirun: 'mpirun -np N+1 agt run --MPI ...' runs rank 0 as the parameter server and ranks 1..N as its N workers (needs agt built with OpenMPI; see docs/distributed.md)", alias = "mpi" },
  { "seed", "integer", 1, "Seed of every random stream (initialisation, data order, attacks, rules)" },
  { "quiet", "boolean", false, "Print nothing on stdout and no --trace lines on stderr (the evaluation file, the summaries, --stdout-to and --stderr-to still get everything)" },
  { "progress", "string", "auto", "Progress display: auto (live line on a terminal, plain lines otherwise), line, plain, none",
    choices = { "auto", "line", "plain", "none" } },
}

-- Distributed flags: a later version; refused with a clear message.
M.distributed_flags = { "client", "ev-job-name" }

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

-- Flags that a script may give as an object instead of a name (a table with the part's methods).
for _, name in ipairs({ "experiment", "aggregator", "attack", "optimizer", "learning-rate" }) do
  M.by_name[name].objects = true
end

local function flagerr(fl, fmt, ...)
  error(string.format("--%s: " .. fmt, fl.name, ...), 0)
end

local function distributed(name)
  error(string.format("--%s: distributed mode is not yet supported; this version runs the "
    .. "parameter server and all workers in one process (leave out --%s)", name, name), 0)
end

-- Converts one value to the flag's type; raises naming the flag.
function M.convert(fl, v)
  local t = fl.type
  if t == "words" then
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
  if t == "string" and type(v) == "table" and fl.objects then return v end
  local x, why = kv.convert(fl, v)
  if x == nil then flagerr(fl, "%s", why) end
  if t == "string" and x == "" then flagerr(fl, "expects a non-empty value") end
  return x
end

-- Calls fn(...) and returns what it returns; an error is raised again prefixed with the flag
-- ("--aggregator: krum needs n >= 2f+3, got n=6 f=2") unless it already names a flag.
function M.as_flag(name, fn, ...)
  local res = { pcall(fn, ...) }
  if not res[1] then
    local msg = tostring(res[2]):gsub("^[^:\n]*%.lua:%d+: ", "")
    if msg:match("^%-%-[%w-]+") then error(msg, 0) end
    error(string.format("--%s: %s", name, msg), 0)
  end
  return unpack(res, 2)
end

-- Returns a normalised copy of opts (keys with '_', defaults filled), or raises "--flag: why".
function M.check(opts)
  if type(opts) ~= "table" then error("session options must be a table, got " .. type(opts), 0) end
  local o = {}
  for k, v in pairs(opts) do
    if type(k) ~= "string" then error("session option keys must be strings, got " .. tostring(k), 0) end
    for _, d in ipairs(M.distributed_flags) do
      if k == d or k == d:gsub("-", "_") then distributed(d) end
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
  local given = {}
  for k in pairs(o) do given[k] = true end
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
  if opts.momentum ~= nil and o.momentum_at == "none" then
    flagerr(M.by_name["momentum"], "needs --momentum-at worker|server|update (without it no momentum is taken)")
  end
  if not (o.momentum >= 0 and o.momentum < 1) then
    flagerr(M.by_name["momentum"], "must be in [0, 1), got %s", tostring(o.momentum))
  end
  if o.local_steps < 1 then flagerr(M.by_name["local-steps"], "must be >= 1, got %d", o.local_steps) end
  if o.local_steps > 1 and o.optimizer ~= "sgd" then
    flagerr(M.by_name["local-steps"], "K=%d sends model differences, which the server applies at "
      .. "rate 1 as FedAvg does; that needs --optimizer sgd, got '%s'", o.local_steps,
      type(o.optimizer) == "table" and tostring(o.optimizer.name) or o.optimizer)
  end
  if o.attack == nil and #o.attack_args > 0 then
    flagerr(M.by_name["attack-args"], "given without --attack (arguments for which attack?)")
  end
  if o.checkpoint_keep < 1 then flagerr(M.by_name["checkpoint-keep"], "must be >= 1, got %d", o.checkpoint_keep) end
  if o.seed < 0 or o.seed >= 2 ^ 53 then flagerr(M.by_name["seed"], "must be in [0, 2^53), got %s", o.seed) end
  if o.reuse_gpu and not o.use_gpu then flagerr(M.by_name["reuse-gpu"], "needs --use-gpu") end
  if o.gpu_math ~= "fp32" and not o.use_gpu then flagerr(M.by_name["gpu-math"], "needs --use-gpu") end
  if o.attack ~= nil and r == 0 then
    flagerr(M.by_name["attack"], "'%s' with --nb-real-byz-workers 0 attacks with no worker (the run "
      .. "would be attack-free); give --nb-real-byz-workers R >= 1, or leave out --attack",
      type(o.attack) == "table" and tostring(o.attack.name) or tostring(o.attack))
  end
  if o.attack == nil and next(o.attack_args) ~= nil then
    flagerr(M.by_name["attack-args"], "given without --attack: no attack would read them")
  end
  if o.server and o.MPI then
    flagerr(M.by_name["MPI"], "and --server are two ways of running distributed: give one (--MPI under mpirun, --server with 'agt worker' processes)")
  end
  if o.server or o.MPI then
    if o.server and o.auth == "curve" and not o.keys then
      flagerr(M.by_name["keys"], "is required with --auth curve (the default): make them with 'agt keygen CLUSTER DIR', or give --auth none on a trusted network")
    end
    if o.step_timeout <= 0 then flagerr(M.by_name["step-timeout"], "must be > 0 seconds, got %s", o.step_timeout) end
    if o.connect_timeout <= 0 then flagerr(M.by_name["connect-timeout"], "must be > 0 seconds, got %s", o.connect_timeout) end
    -- worker-side state the 'agt worker' processes do not keep yet: refused, not silently dropped
    if type(o.attack) == "table" and (o.attack.kind or "gradient") ~= "data" and not o.attack_at_ps then
      flagerr(M.by_name["attack"], "an attack object cannot be sent to the worker processes; give it by name or path, or add --attack-at-ps (the PS applies it)")
    end
    if o.local_steps > 1 then
      flagerr(M.by_name["local-steps"], "K=%d is not available with --%s yet (the worker processes take one gradient per step); use a local run", o.local_steps, o.MPI and "MPI" or "server")
    end
  end
  if o.wait_for ~= nil then
    if not o.server and not o.MPI then
      flagerr(M.by_name["wait-for"], "only with --server or --MPI (a local run computes every row, none is waited for)")
    end
    if o.wait_for < n - f or o.wait_for > n then
      flagerr(M.by_name["wait-for"], "K=%d must be from n-f to n (%d to %d with n=%d f=%d): the rows not waited for are faulty for the step, at most f of them",
              o.wait_for, n - f, n, n, f)
    end
  end
  if o.UDP ~= 0 and not o.server then flagerr(M.by_name["UDP"], "needs --server (rows go over UDP only between processes)") end
  if o.UDP < 0 or o.UDP > n then flagerr(M.by_name["UDP"], "K must be in [0, n], got K=%d n=%d", o.UDP, n) end
  if o.UDP == 0 and next(o.udp_args) ~= nil then flagerr(M.by_name["udp-args"], "given without --UDP K (no row goes over UDP)") end
  if o.checkpoint_dir == "-" then o.checkpoint_dir = nil end
  if o.evaluation_file == nil and o.checkpoint_dir then o.evaluation_file = o.checkpoint_dir .. "/eval" end
  if o.evaluation_file == "-" then o.evaluation_file = nil end
  if o.summary_dir == nil then o.summary_dir = o.checkpoint_dir end
  if o.summary_dir == "-" then o.summary_dir = nil end
  local warnings = M.no_effect(o, given)
  for _, k in ipairs({ "stdout_to", "stderr_to" }) do
    if o[k] then
      local fh, err = io.open(o[k], "a")
      if not fh then flagerr(M.by_name[k], "cannot open for appending: %s", err) end
      fh:close()
    end
  end
  return o, warnings
end

-- Warnings, by flag, for flags given (a set of keys) that cannot take effect in this run. A
-- flag given its default, or a value that turns it off, asks for nothing and is not warned of.
function M.no_effect(o, given)
  local out = {}
  local function asked(key)
    local v = o[key]
    return given[key] and v ~= M.by_name[key].default and v ~= false
      and not (type(v) == "number" and key ~= "checkpoint_keep" and (v < 0 or (v == 0 and key:find("delta"))))
  end
  local function say(key, why) out[#out + 1] = string.format("--%s: has no effect %s", M.by_name[key].name, why) end
  if asked("no_wait") then say("no_wait", "in a local run (it never waits: nothing is served)") end
  for _, k in ipairs({ "checkpoint_delta", "checkpoint_period", "checkpoint_keep" }) do
    if asked(k) and not o.checkpoint_dir then say(k, "without --checkpoint-dir (no checkpoint is written)") end
  end
  for _, k in ipairs({ "summary_delta", "summary_period" }) do
    if asked(k) and not o.summary_dir then say(k, "without a summary directory (--summary-dir, or --checkpoint-dir)") end
  end
  if asked("attack_at_ps") and not o.server and not o.MPI then
    say("attack_at_ps", "in a local run (the attack is always applied in this process)")
  end
  if asked("trace") and o.quiet and not o.stderr_to then
    say("trace", "with --quiet and no --stderr-to (the trace lines go nowhere)")
  end
  return out
end

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
  out[#out + 1] = "Not yet supported: --client, --ev-job-name. Without --server or --MPI the run is local (the"
  out[#out + 1] = "default); with --server, this process is the parameter server and 'agt worker' processes the"
  out[#out + 1] = "workers; with --MPI (under mpirun), rank 0 is the parameter server and the other ranks the workers."
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
      if name == d then distributed(name) end
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

return M
