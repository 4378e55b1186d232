-- bench/gpu_step.lua — steps/s of one synchronous training step on the GPU, agt against PyTorch
-- on the same card, in one command:
--   agt bench gpu_step [steps=200] [rounds=3] [cases=fashion-mnist,cnnet,resnet18-cifar10]
--                      [rules=average,krum] [math=fp32,fp32-fast,tf32]
--
-- One step (agt.session's s:step() with --use-gpu): n = 8 workers each compute the gradient of
-- their own minibatch at θ into their row of G (n × d, on the device), the rule aggregates G
-- (average, or krum with f = 1), the optimizer (plain SGD) applies it; the session's telemetry
-- of the step is included. The peer (bench/gpu_step_torch.py) writes the same step the usual
-- PyTorch way: a loop over the workers (forward, loss, autograd.grad, the gradients into row i of
-- G), G.mean(0) or Krum by cdist + topk, then p -= lr·g. Cases: fashion-mnist (batch 32, the
-- Debian data set or gpu-bundle's subset), cnnet (batch 32) and resnet18-cifar10 (batch 128) on
-- random CIFAR-format images (the step's cost does not depend on the pixels); a case whose
-- model has a layer with no CUDA kernel in this build is skipped with the reason.
-- math: fp32 (the default) runs agt's float32 (--gpu-math fp32) against PyTorch with TF32 off in
-- cuDNN and matmuls; fp32-fast runs agt --gpu-math fp32-fast (any cuDNN algorithm, as PyTorch
-- picks) against the same PyTorch; tf32 runs agt --gpu-math tf32 against PyTorch's defaults
-- (TF32 in cuDNN's convolutions). Each math mode is its own pair of lines, like for like.
--
-- Each engine runs in its own process, `rounds` times alternating (and the rules' rounds in turn:
-- average, krum, average, ...); steps_per_s is the median
-- of the rounds' rates (steps over their wall time, after warm-up steps), `rounds_steps_per_s`
-- lists them all. Peak device memory: the
-- largest (total − free) of cudaMemGetInfo seen after a step, the CUDA context included, the
-- same measure for both engines (PyTorch's own torch.cuda.max_memory_allocated is printed too).
-- JSON lines: the card, then per case and rule one line per engine and one with the ratios
-- against the targets (the issue's: cnnet ≥ 1.5× PyTorch, resnet18 ≥ 0.9× with cuDNN, krum's
-- step within 5% of average's). Without a device, one line says why and it exits 0.
local cjson = require("cjson")
local host = require("agt.host")
local gpu = require("agt.gpu")
local fs = require("agt.fs")
local R = require("agt.rng")
local now = require("agt.clock").mono

local function emit(o) io.write(cjson.encode(o), "\n"); io.flush() end

local N_WORKERS, F_BYZ = 8, 1

-- A directory of small CIFAR-10 binary batches (random pixels), for cnnet and resnet18.
local function synthetic_cifar()
  local dir = os.tmpname()
  os.remove(dir)
  return require("agt.data").write_random_cifar10(dir, 410, 10, R.new(1, 0))
end

local FM = "/usr/share/datasets/fashion-mnist"
local function fashion_dir() return fs.kind(FM) == "dir" and FM or host.root .. "/data/fashion-mnist" end

local CASES = {
  ["fashion-mnist"] = { bs = 32, data = fashion_dir },
  ["cnnet"] = { bs = 32, data = "cifar" },
  ["resnet18-cifar10"] = { bs = 128, data = "cifar" },
}

local function used_bytes()
  local fr, to = gpu.mem_info()
  return to - fr
end

-- The median of a list of numbers (nil when empty).
local function median(xs)
  if #xs == 0 then return nil end
  local s = {}
  for i, x in ipairs(xs) do s[i] = x end
  table.sort(s)
  local m = math.floor((#s + 1) / 2)
  return #s % 2 == 1 and s[m] or (s[m] + s[m + 1]) / 2
end

-- One agt measurement in this process: { steps_per_s, peak_mb, params } or nil, why.
local function agt_case(name, rule, steps, data_dir, gmath)
  local S = require("agt.session")
  local words = { "batch-size:" .. CASES[name].bs, "data-dir:" .. data_dir, "eval-size:10" }
  if CASES[name].data == "cifar" then words[#words + 1] = "download:false" end
  local ok, s = pcall(S.new, {
    experiment = name, experiment_args = words, aggregator = rule, nb_workers = N_WORKERS,
    nb_decl_byz_workers = F_BYZ, nb_real_byz_workers = 0, optimizer = "sgd",
    learning_rate_args = { "initial-rate:0.001" }, seed = 1, quiet = true, use_gpu = true,
    gpu_math = gmath or "fp32",
    stdout_to = "/dev/null" })
  if not ok then return nil, tostring(s) end
  for _ = 1, math.max(3, math.floor(steps / 10)) do s:step() end
  local F = require("agt.ffi")
  F.check(F.C.agt_gpu_synchronize())
  local t0 = now()
  for _ = 1, steps do s:step() end
  F.check(F.C.agt_gpu_synchronize())
  local rate = steps / (now() - t0)
  local peak = 0   -- after the timed steps, so that the queries cost them nothing
  for _ = 1, 5 do
    s:step()
    peak = math.max(peak, used_bytes())
  end
  local d = s.d
  s:close()
  return { steps_per_s = rate, peak_mb = peak / 2 ^ 20, params = d }
end

local function json_of(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("*a")
  p:close()
  local line = out:match("(%b{})%s*$")
  local ok, rec = pcall(cjson.decode, line or "")
  if not ok or type(rec) ~= "table" then return nil, out end
  return rec
end

local function agt_exe()
  local exe = host.exe or "agt"
  if not exe:find("/") then
    local f = io.open(host.root .. "/agt", "rb")
    if f then f:close(); exe = host.root .. "/agt" end
  end
  return exe
end

-- The Python with PyTorch and a CUDA device: AGT_PYTHON, the GPU machine's venv, or python3
-- (the first that imports torch and sees the card); nil when none does.
local function python()
  for _, p in ipairs({ os.getenv("AGT_PYTHON") or false, "/opt/torch/.venv/bin/python3",
                       "/opt/torch/.venv/bin/python", "python3" }) do
    if p then
      local h = io.popen(p .. " -c 'import torch; print(torch.cuda.is_available())' 2>/dev/null")
      local yes = h:read("*l") == "True"
      h:close()
      if yes then return p end
    end
  end
  return nil
end

local function main(args)
  if args[1] == "child" then   -- child NAME RULE STEPS DATA_DIR MATH: one agt measurement
    local okc, rec, err = pcall(agt_case, args[2], args[3], tonumber(args[4]), args[5], args[6])
    if not okc then rec, err = nil, rec end
    if not rec then rec = { error = tostring(err) } end
    print(cjson.encode(rec))
    return 0
  end
  local opt = { steps = 200, rounds = 3, cases = { "fashion-mnist", "cnnet", "resnet18-cifar10" },
                rules = { "average", "krum" }, math = { "fp32" } }
  for _, a in ipairs(args) do
    local k, v = a:match("^(%w+)=(.*)$")
    if k == "steps" or k == "rounds" then opt[k] = tonumber(v)
    elseif k == "cases" or k == "rules" or k == "math" then
      opt[k] = {}
      for w in v:gmatch("[^,]+") do opt[k][#opt[k] + 1] = w end
    else
      io.stderr:write("gpu_step: unknown argument '", a, "' (steps=, rounds=, cases=, rules=, math=)\n")
      return 1
    end
  end
  local ok, why = gpu.available()
  if not ok then
    emit({ bench = "gpu_step", skipped = true, reason = why })
    return 0
  end
  local card = gpu.describe()
  local PY = python()
  local has_torch = PY ~= nil
  emit({ bench = "gpu_step", device = card, workers = N_WORKERS, f = F_BYZ, steps = opt.steps,
         rounds = opt.rounds, python = PY, torch = has_torch })
  local code = 0
  local cifar
  for _, name in ipairs(opt.cases) do
    local c = CASES[name]
    if not c then
      io.stderr:write("gpu_step: unknown case '", name, "'\n")
      return 1
    end
    local data_dir
    if c.data == "cifar" then
      cifar = cifar or synthetic_cifar()
      data_dir = cifar
    else
      data_dir = c.data()
    end
    for _, gm in ipairs(opt.math) do
      if gm ~= "fp32" and gm ~= "tf32" and gm ~= "fp32-fast" then
        io.stderr:write("gpu_step: math must be fp32, tf32 or fp32-fast, got '", gm, "'\n")
        return 1
      end
      -- The rules' rounds interleave (average, krum, average, krum, ...) so that a drift of the
      -- card or the host over the case moves every rule alike, not the last one alone.
      local runs = {}
      for _, rule in ipairs(opt.rules) do runs[rule] = { ra = {}, rt = {} } end
      for _ = 1, opt.rounds do
        for _, rule in ipairs(opt.rules) do
          local r = runs[rule]
          if not r.skipped and not r.failed then
            local ra, err = json_of(string.format("cd /tmp && '%s' '%s/bench/gpu_step.lua' child %s %s %d '%s' %s",
                                                  agt_exe(), host.root, name, rule, opt.steps, data_dir, gm))
            if not ra then
              io.stderr:write("gpu_step: the agt run failed: ", tostring(err), "\n"); code = 1; r.failed = true
            elseif ra.error then
              r.skipped = ra.error
            else
              r.ra[#r.ra + 1], r.arec = ra.steps_per_s, ra
              if has_torch then
                local rt, terr = json_of(string.format("%s '%s/bench/gpu_step_torch.py' %s %s %d %d %d %d '%s' %s",
                  PY, host.root, name, rule, N_WORKERS, F_BYZ, c.bs, opt.steps, data_dir,
                  gm == "tf32" and "tf32" or "fp32"))
                if not rt then io.stderr:write("gpu_step: the PyTorch run failed: ", tostring(terr), "\n"); code = 1
                else r.rt[#r.rt + 1], r.trec = rt.steps_per_s, rt end
              end
            end
          end
        end
      end
      local rates = {}
      for _, rule in ipairs(opt.rules) do
        local r = runs[rule]
        local ra_rates, rt_rates, arec, trec, skipped = r.ra, r.rt, r.arec, r.trec, r.skipped
        local med_a, med_t = median(ra_rates), median(rt_rates)
        local base = { bench = "gpu_step", device = card, experiment = name, rule = rule,
                       workers = N_WORKERS, batch = c.bs, math = gm }
        local function rec(extra)
          local r = {}
          for k, v in pairs(base) do r[k] = v end
          for k, v in pairs(extra) do r[k] = v end
          return r
        end
        if skipped then
          emit(rec({ engine = "agt", skipped = skipped }))
        end
        if arec then
          emit(rec({ engine = "agt", params = arec.params, steps_per_s = med_a, rounds_steps_per_s = ra_rates,
                     peak_mb = arec.peak_mb }))
        end
        if trec then
          emit(rec({ engine = "torch", torch = trec.torch, cudnn = trec.cudnn, params = trec.params,
                     steps_per_s = med_t, rounds_steps_per_s = rt_rates, peak_mb = trec.peak_mb, torch_max_allocated_mb = trec.max_allocated_mb }))
        end
        if arec and trec then
          local target = (name == "cnnet" and 1.5) or (name == "resnet18-cifar10" and 0.9) or nil
          emit(rec({ ratio = med_a / med_t, target = target, met = target and med_a / med_t >= target or nil }))
        end
        rates[rule] = { agt = arec and med_a, torch = trec and med_t }
      end
      if rates.average and rates.krum and rates.average.agt and rates.krum.agt then
        local r = { bench = "gpu_step", device = card, experiment = name, math = gm,
                    agt_krum_step_time_over_average = rates.average.agt / rates.krum.agt, target = 1.05 }
        r.met = r.agt_krum_step_time_over_average <= 1.05
        if rates.average.torch and rates.krum.torch then
          r.torch_krum_step_time_over_average = rates.average.torch / rates.krum.torch
        end
        emit(r)
      end
    end
  end
  if cifar then os.execute("rm -rf '" .. cifar .. "'") end
  return code
end

-- Run as a benchmark module (agt bench gpu_step) or as a script (agt bench/gpu_step.lua child ...).
local script_args = { ... }
if script_args[1] == "child" then os.exit(main(script_args)) end
if script_args[1] == nil and type(arg) == "table" and arg[1] == "child" then os.exit(main(arg)) end
return function(args) return main(args or {}) end
