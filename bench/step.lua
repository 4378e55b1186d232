-- bench/step.lua — the time of one synchronous training step, agt against PyTorch.
--
-- One step: n workers each draw their own minibatch and write the gradient of their mean
-- loss at the same θ into row i of G (n×d); then G is averaged and applied by plain SGD.
-- Cases: fashion-mnist (batch 32, n = 11) on the real data set, and cnnet (batch 32, n = 4)
-- on random CIFAR-format images (the step's cost does not depend on the pixels). The same
-- step in PyTorch (bench/step_torch.py, Debian's python3-torch, CPU) runs in the same
-- command with the same number of threads (1, then the machine's default when it has more).
-- Each engine runs `rounds` times, alternating; steps_per_s is the rate of the median step
-- of the best round (robust to a machine shared with other work); the mean and the fastest
-- step are printed too, and ratio_fastest compares the fastest steps (the least disturbed
-- ones when other work shares the cores).
--   agt bench step [steps-scale] [rounds]
-- Prints JSON lines: one per engine and case, then {"ratio": agt/torch, "target": ...}.
local cjson = require("cjson")
local E = require("agt.experiments")
local O = require("agt.optim")
local T = require("agt.tensor")
local R = require("agt.rng")
local host = require("agt.host")
local C = require("agt.ffi").C

local now = require("agt.clock").mono

-- A directory of small CIFAR-10 binary batches (random pixels), for cnnet without a download.
local function synthetic_cifar()
  local dir = os.tmpname()
  os.remove(dir)
  return require("agt.data").write_random_cifar10(dir, 410, 10, R.new(1, 0))
end

local function agt_steps(name, words, n, steps)
  local exp = E.load(name, words, { seed = 1, n = n })
  local theta = exp:init_params(T.new({ exp.d }), R.new(1, 0))
  local G = T.new({ n, exp.d })
  local rows, workers = {}, {}
  for i = 1, n do
    rows[i] = G:row(i)
    workers[i] = exp:worker(i, { seed = 1 })
  end
  local agg = T.new({ exp.d })
  local opt = O.new("sgd", {}, exp.d)
  local function step()
    for i = 1, n do workers[i]:gradient(theta, rows[i]) end
    T.rows_mean(G, agg)
    opt:step(theta, agg, 0.01)
  end
  for _ = 1, math.max(2, math.floor(steps / 10)) do step() end
  local times, total = {}, 0
  for k = 1, steps do
    local t0 = now()
    step()
    times[k] = now() - t0
    total = total + times[k]
  end
  table.sort(times)
  return { steps_per_s = steps / total, median_steps_per_s = 1 / times[math.floor(steps / 2) + 1],
           best_steps_per_s = 1 / times[1], params = exp.d }
end

-- Runs a command and returns the JSON record it prints last (nil, output when there is none).
local function json_of(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("*a")
  p:close()
  local line = out:match("(%b{})%s*$")
  local ok, rec = pcall(cjson.decode, line or "")
  if not ok or type(rec) ~= "table" then return nil, out end
  return rec
end

-- One engine run in a child process, so that both engines get the same thread settings
-- from the environment (AGT_NUM_THREADS and OPENBLAS_NUM_THREADS; torch.set_num_threads and
-- OMP_NUM_THREADS). PyTorch runs with OpenMP's default and with passive waiting, and keeps
-- the better: on a loaded machine OpenMP's spinning threads can slow it several-fold.
local function agt_exe()
  local exe = host.exe or "agt"
  if not exe:find("/") then
    local local_exe = host.root .. "/agt"
    local f = io.open(local_exe, "rb")
    if f then f:close(); exe = local_exe end
  end
  return exe
end

local function child_agt(c, threads, words)
  local cmd = string.format("cd /tmp && AGT_NUM_THREADS=%d OPENBLAS_NUM_THREADS=%d '%s' '%s/bench/step.lua' child %s %d %d %s",
                            threads, threads, agt_exe(), host.root, c.name, c.n, c.steps,
                            table.concat(words, ","))
  return json_of(cmd)
end

-- The Python that runs the PyTorch peer (AGT_PYTHON overrides Debian's).
local PY = os.getenv("AGT_PYTHON") or "/usr/bin/python3"

local function child_torch(c, threads)
  local best
  for _, wait in ipairs({ "", "OMP_WAIT_POLICY=PASSIVE " }) do
    local cmd = string.format("%sOMP_NUM_THREADS=%d %s '%s/bench/step_torch.py' %s %d %d %d %d",
                              wait, threads, PY, host.root, c.name, c.n, c.bs, threads, c.steps)
    local rec, err = json_of(cmd)
    if not rec then return nil, err end
    if not best or rec.median_steps_per_s > best.median_steps_per_s then best = rec end
  end
  return best
end

local function main(args)
  if args[1] == "child" then   -- child NAME N STEPS WORDS: one agt measurement
    local words = {}
    for w in (args[5] or ""):gmatch("[^,]+") do words[#words + 1] = w end
    print(cjson.encode(agt_steps(args[2], words, tonumber(args[3]), tonumber(args[4]))))
    return 0
  end
  local scale = tonumber(args[1]) or 1
  local rounds = tonumber(args[2]) or 2
  local T = C.agt_pool_default_threads()
  local thread_counts = T > 1 and { 1, T } or { 1 }
  local cases = {
    { name = "fashion-mnist", words = {}, n = 11, bs = 32, steps = math.ceil(100 * scale), target = 2 },
    { name = "cnnet", n = 4, bs = 32, steps = math.ceil(10 * scale), target = 1 },
  }
  local code = 0
  -- without PyTorch the peer is skipped with one line, as agt bench gar does
  local probe = io.popen(PY .. " -c 'import torch' 2>/dev/null && echo yes")
  local has_torch = probe:read("*l") == "yes"
  probe:close()
  if not has_torch then
    print(cjson.encode({ bench = "step-torch", skipped = "python3-torch is not importable by " .. PY }))
  end
  for _, c in ipairs(cases) do
    local words, dir = c.words, nil
    if not words then
      dir = synthetic_cifar()
      words = { "data-dir:" .. dir, "download:false" }
    end
    for _, threads in ipairs(thread_counts) do
      local best_a, best_t, arec, trec = 0, 0, nil, nil
      for _ = 1, rounds do
        local ra, err = child_agt(c, threads, words)
        if not ra then io.stderr:write("bench step: the agt run failed: " .. tostring(err) .. "\n"); code = 1; break end
        if ra.median_steps_per_s > best_a then best_a, arec = ra.median_steps_per_s, ra end
        if has_torch then
          local rt, terr = child_torch(c, threads)
          if not rt then io.stderr:write("bench step: the PyTorch run failed: " .. tostring(terr) .. "\n"); code = 1; break end
          if rt.median_steps_per_s > best_t then best_t, trec = rt.median_steps_per_s, rt end
        end
      end
      local common = { bench = "step", experiment = c.name, workers = c.n, batch = c.bs, threads = threads }
      local function rec(extra)
        local r = {}
        for k, v in pairs(common) do r[k] = v end
        for k, v in pairs(extra) do r[k] = v end
        return cjson.encode(r)
      end
      if arec then
        print(rec({ engine = "agt", params = arec.params, steps_per_s = best_a, mean_steps_per_s = arec.steps_per_s,
                    best_steps_per_s = arec.best_steps_per_s }))
      end
      if trec then
        print(rec({ engine = "torch", torch = trec.torch, params = trec.params, steps_per_s = best_t,
                    mean_steps_per_s = trec.steps_per_s, best_steps_per_s = trec.best_steps_per_s }))
      end
      if arec and trec then
        print(rec({ ratio = best_a / best_t, target = c.target, met = best_a / best_t >= c.target,
                    ratio_fastest = arec.best_steps_per_s / trec.best_steps_per_s }))
      end
      io.stdout:flush()
    end
    if dir then os.execute("rm -rf '" .. dir .. "'") end
  end
  return code
end

-- Run as a benchmark module (agt bench step) or as a script (agt bench/step.lua child ...).
local script_args = { ... }
if script_args[1] == "child" then os.exit(main(script_args)) end
if script_args[1] == nil and type(arg) == "table" and arg[1] == "child" then os.exit(main(arg)) end
return function(args) return main(args or {}) end
