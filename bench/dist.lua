-- bench/dist.lua — steps/s of a distributed run against the local run, and what a robust rule
-- costs in a distributed run, in one command.
--
-- fashion-mnist (d = 79,510). The PS is a session in this process (agt run --server's), its
-- workers `agt worker` processes on 127.0.0.1 (--auth none); the local run is the same session
-- with its workers in this process. A case's time is taken in blocks of `steps` steps after a
-- warm-up (blocks of at most 2.5 s); the cases of a part alternate block by block (local,
-- distributed, local, ...) so a machine shared with other work disturbs them alike, and each
-- reports the median block's rate.
--   1. n = 1, 4, 10 worker processes vs the local run with as many workers (rule: average):
--      steps_per_s of each and ratio = distributed / local; fast_steps_per_s and ratio_fast
--      from the 10th percentile of the step times (the least disturbed steps).
--   2. n = 10, f = 1 worker processes, the rule average, krum, bulyan (each round one block of
--      each, a fresh PS and workers each time): steps_per_s, the rule's own time per step
--      (median), rule_fraction = that time / the step time, overhead = step time / average's
--      step time - 1 (the figure AggregaThor gives: 19% for Multi-Krum, 43% for Bulyan, over
--      plain TensorFlow), and overhead_rule = (the rule's time - average's) / average's step
--      time: the same overhead from the rule's own measured time, which a machine shared with
--      other work disturbs far less than the step rates (issue target: <= 0.05).
--   agt bench dist [steps] [blocks] [n list] [workers|rule|all]   (default 40, 5, 1,4,10, all)
-- Prints JSON lines.
local cjson = require("cjson")
local S = require("agt.session")
local host = require("agt.host")
local now = require("agt.clock").mono

local AGT = host.root .. "/agt"

local function sh(cmd)
  local p = io.popen(cmd)
  local out = p:read("*a")
  p:close()
  return out
end

local port_base = 31000 + (tonumber(sh("echo $$")) or 0) * 13 % 9000 + os.time() % 1000

-- n worker processes of a fresh cluster on 127.0.0.1; returns the cluster file and their pids.
local function start_workers(n)
  local port = port_base
  port_base = port_base + n + 2
  local dir = os.tmpname()
  os.remove(dir)
  os.execute("mkdir -p '" .. dir .. "'")
  local w = {}
  for i = 1, n do w[i] = string.format("\"127.0.0.1:%d\"", port + i) end
  local path = dir .. "/cluster.json"
  local f = assert(io.open(path, "w"))
  f:write(string.format("{\"ps\": [\"127.0.0.1:%d\"], \"workers\": [%s]}", port, table.concat(w, ", ")))
  f:close()
  local pids = {}
  for i = 0, n - 1 do
    pids[#pids + 1] = tonumber(sh(string.format(
      "(exec '%s' worker --server '%s' --id workers:%d --auth none --idle-timeout 120 >'%s/w%d.log' 2>&1 & echo $!)",
      AGT, path, i, dir, i)):match("%d+"))
  end
  return { path = path, dir = dir, pids = pids }
end

local function stop_workers(c)
  os.execute("sleep 0.2")
  for _, pid in ipairs(c.pids) do os.execute("kill -9 " .. pid .. " 2>/dev/null") end
  os.execute("rm -rf '" .. c.dir .. "'")
end

local function session(n, f, rule, cluster)
  local o = { experiment = "fashion-mnist", experiment_args = { "eval-size:200" }, seed = 1, quiet = true,
              evaluation_file = "-", summary_dir = "-", checkpoint_period = -1, evaluation_period = -1,
              aggregator = rule, nb_workers = n, nb_decl_byz_workers = f }
  if cluster then
    o.server, o.auth, o.step_timeout, o.connect_timeout = cluster.path, "none", 120, 120
  end
  return S.new(o)
end

local function median(t)
  local s = {}
  for k, v in ipairs(t) do s[k] = v end
  table.sort(s)
  local m = #s
  if m % 2 == 1 then return s[(m + 1) / 2] end
  return (s[m / 2] + s[m / 2 + 1]) / 2
end

-- One block: `steps` steps or as many as fit in CAP seconds; its rate and the rule's median
-- time per step. (A distributed session waiting while another case runs must not wait long:
-- its idle workers' messages fill their queues and the connections are dropped.)
local CAP = 2.5
local function block(sess, steps, times)
  local aggs = {}
  local t0 = now()
  local k = 0
  while k < steps and (k == 0 or now() - t0 < CAP) do
    k = k + 1
    local t1 = now()
    aggs[k] = sess:step().t_aggregate
    if times then times[#times + 1] = now() - t1 end
  end
  return k / (now() - t0), median(aggs)
end

-- The rate of the step at the 10th percentile of a case's step times: the least disturbed
-- steps, what a quieter machine would give more often.
local function fast_rate(times)
  local s = {}
  for k, v in ipairs(times) do s[k] = v end
  table.sort(s)
  return 1 / s[math.max(1, math.floor(#s / 10))]
end

local function warm(sess) for _ = 1, 5 do sess:step() end end

-- Runs the open cases { sess = } in alternating blocks; fills case.rates, case.aggs.
local function measure(cases, steps, blocks)
  for _, c in ipairs(cases) do
    warm(c.sess) -- a distributed one: the workers join
    c.rates, c.aggs, c.times = {}, {}, {}
  end
  for _ = 1, blocks do
    for _, c in ipairs(cases) do
      local r, a = block(c.sess, steps, c.times)
      c.rates[#c.rates + 1] = r
      c.aggs[#c.aggs + 1] = a
    end
  end
end

local function cpu_name()
  local f = io.open("/proc/cpuinfo")
  local s = f and f:read("*a") or ""
  if f then f:close() end
  return (s:match("model name%s*:%s*([^\n]+)") or "?") .. string.format(" (%d cores)", select(2, s:gsub("\nprocessor", "")) + 1)
end

return function(args)
  local steps = tonumber(args[1]) or 40
  local blocks = tonumber(args[2]) or 5
  local ns = {}
  for x in (args[3] or "1,4,10"):gmatch("%d+") do ns[#ns + 1] = tonumber(x) end
  local parts = args[4] or "all"
  local load = (sh("cat /proc/loadavg"):match("^(%S+)")) or "?"
  print(cjson.encode({ bench = "dist", machine = cpu_name(), load_avg = tonumber(load), steps = steps, blocks = blocks }))

  -- 1. Distributed vs local, rule average.
  for _, n in ipairs(parts ~= "rule" and ns or {}) do
    local c = start_workers(n)
    local ok, err = pcall(function()
      local cases = { { mode = "local", sess = session(n, 0, "average") },
                      { mode = "distributed", sess = session(n, 0, "average", c) } }
      measure(cases, steps, blocks)
      local rate, fast = {}, {}
      for _, k in ipairs(cases) do
        rate[k.mode], fast[k.mode] = median(k.rates), fast_rate(k.times)
        print(cjson.encode({ bench = "dist", part = "workers", n = n, mode = k.mode, rule = "average",
                             steps_per_s = rate[k.mode], fast_steps_per_s = fast[k.mode] }))
        k.sess:close()
      end
      print(cjson.encode({ bench = "dist", part = "workers", n = n, ratio_distributed_local = rate.distributed / rate["local"],
                           ratio_fast = fast.distributed / fast["local"] }))
    end)
    stop_workers(c)
    if not ok then error(err, 0) end
  end

  -- 2. The rule's cost in a distributed run: n = 10, f = 1. One PS session at a time (with its
  -- own worker processes, started before and stopped after its timing); the rules alternate,
  -- one block each per round.
  if parts == "workers" then return 0 end
  local n, f = 10, 1
  local rules = { "average", "krum", "bulyan" }
  local res = {}
  for k, rule in ipairs(rules) do res[k] = { rule = rule, rates = {}, aggs = {} } end
  for _ = 1, blocks do
    for _, r in ipairs(res) do
      local c = start_workers(n)
      local ok, err = pcall(function()
        local sess = session(n, f, r.rule, c)
        warm(sess)
        local rate, agg = block(sess, steps)
        r.rates[#r.rates + 1] = rate
        r.aggs[#r.aggs + 1] = agg
        sess:close()
      end)
      stop_workers(c)
      if not ok then error(err, 0) end
    end
  end
  local base, base_agg = median(res[1].rates), median(res[1].aggs)
  for _, r in ipairs(res) do
    local rate, agg = median(r.rates), median(r.aggs)
    print(cjson.encode({ bench = "dist", part = "rule", n = n, f = f, rule = r.rule, steps_per_s = rate,
                         rule_ms = agg * 1e3, rule_fraction = agg * rate, overhead = base / rate - 1,
                         overhead_rule = (agg - base_agg) * base, target = r.rule ~= "average" and 0.05 or nil }))
  end
  return 0
end
