-- bench/gar.lua — times every aggregation rule and pre-aggregation step on random G.
--
--   agt bench gar [--n 25] [--f 5] [--d 1000000] [--reps 7] [--warmup 2] [--threads T]
--                 [--rules median,krum,...] [--no-torch] [--torch-reps 3]
--
-- One JSON line per rule: the median of `reps` timed runs after `warmup` runs (ms), the
-- effective read bandwidth (n*d*4 bytes / time), the ratio to `average` (timed just before
-- the rule in every repetition; the median of those ratios), and the target ratio where the
-- project set one. Then, where Debian's python3 has
-- torch, bench/gar_torch.py times the same rules written the usual PyTorch way on the same
-- G (same thread count) and one line per rule gives the speed-up.
local A = require("agt.aggregators")
local T = require("agt.tensor")
local R = require("agt.rng")
local P = require("agt.pool")
local host = require("agt.host")
local cjson = require("cjson")
local ffi = require("ffi")

local now = require("agt.clock").mono

local TARGETS = {
  median = 3, ["trimmed-mean"] = 3, meamed = 3, phocas = 3, krum = 4, ["multi-krum"] = 4,
  bulyan = 6, ["geometric-median"] = 10, nnm = 5,
}
local ALL = {
  "average", "average-nan", "median", "trimmed-mean", "meamed", "phocas", "krum", "multi-krum",
  "bulyan", "geometric-median", "centered-clipping", "cge", "mda", "nnm", "bucketing",
  "clipping", "arc",
}
local ARGS = {
  ["geometric-median"] = { ["max-iter"] = 8, tol = 0 },
  mda = { budget = 1e9 },
}

local function parse(args)
  local o = { n = 25, f = 5, d = 1000000, reps = 7, warmup = 2, torch = true, ["torch-reps"] = 3 }
  local i = 1
  while i <= #args do
    local a = args[i]
    local k = a:match("^%-%-(.+)$")
    if not k then error("agt bench gar: unexpected argument '" .. a .. "'", 0) end
    if k == "no-torch" then
      o.torch = false
    else
      local v = args[i + 1]
      if v == nil then error("agt bench gar: --" .. k .. " needs a value", 0) end
      o[k] = tonumber(v) or v
      i = i + 1
    end
    i = i + 1
  end
  return o
end

local function median(t)
  table.sort(t)
  local n = #t
  return n % 2 == 1 and t[(n + 1) / 2] or (t[n / 2] + t[n / 2 + 1]) / 2
end

return function(args)
  local o = parse(args)
  if o.threads then P.set_threads(o.threads) end
  local n, f, d = o.n, o.f, o.d
  local rules = ALL
  if o.rules then
    rules = {}
    for r in tostring(o.rules):gmatch("[^,]+") do rules[#rules + 1] = r end
  end
  local G = T.new({ n, d })
  R.new(1, "bench-gar"):normal(G, 0, 1)
  local out = T.new({ d })
  local bytes = n * d * 4
  local results = {}
  local function runner(name)
    local def = A.find(name).def
    if def.kind == "pre" then
      local chain = A.new(name .. ",average", n, f, ARGS[name])
      local el = chain.elements[1]
      local buf = T.new({ chain.shapes[2].n, d })
      el.d = d
      return function() el:aggregate(G, buf) end
    end
    local rule = A.new(name, n, f, ARGS[name])
    return function() rule:aggregate(G, out) end
  end
  local function timed(fn)
    local t0 = now()
    fn()
    return (now() - t0) * 1000
  end
  local run_avg = runner("average")
  for _ = 1, o.warmup do run_avg() end
  -- Each repetition times average and then the rule, back to back, and the reported ratio is
  -- the median of the per-repetition ratios: a shared machine's load drifts, and pairing
  -- the two cancels most of it.
  local order = { "average" }
  for _, r in ipairs(rules) do if r ~= "average" then order[#order + 1] = r end end
  for _, name in ipairs(order) do
    local ok, run = pcall(runner, name)
    if not ok then -- e.g. bulyan at n < 4f+3: say so and go on
      io.write(cjson.encode({ bench = "gar", rule = name, n = n, f = f, d = d, skipped = tostring(run) }), "\n")
      goto continue
    end
    for _ = 1, o.warmup do run() end
    local ts, tas, ratios = {}, {}, {}
    for r = 1, o.reps do
      local ta = timed(run_avg)
      local t = name == "average" and ta or timed(run)
      ts[r], tas[r], ratios[r] = t, ta, t / ta
      collectgarbage("step")
    end
    local ms, ratio, mn = median(ts), median(ratios), math.min(unpack(ts))
    results[name] = ms
    local line = {
      bench = "gar", rule = name, n = n, f = f, d = d, threads = P.threads(), reps = o.reps,
      ms = math.floor(ms * 1000 + 0.5) / 1000,
      min_ms = math.floor(mn * 1000 + 0.5) / 1000,
      average_ms = math.floor(median(tas) * 1000 + 0.5) / 1000,
      gbps = math.floor(bytes / (ms * 1e-3) / 1e9 * 100 + 0.5) / 100,
      ratio_to_average = math.floor(ratio * 100 + 0.5) / 100,
    }
    if name == "geometric-median" then line.iterations = 8 end
    if TARGETS[name] then
      line.target_ratio = TARGETS[name]
      line.meets_target = ratio <= TARGETS[name]
    end
    io.write(cjson.encode(line), "\n")
    io.flush()
    ::continue::
  end

  if not o.torch then return 0 end
  local py = os.getenv("AGT_PYTHON") or "/usr/bin/python3"
  local probe = io.popen(py .. " -c 'import torch' 2>/dev/null && echo yes")
  local has = probe and probe:read("*l") == "yes"
  if probe then probe:close() end
  if not has then
    io.write(cjson.encode({ bench = "gar-torch", skipped = "python3-torch is not importable by " .. py }), "\n")
    return 0
  end
  local path = os.tmpname()
  local fh = assert(io.open(path, "wb"))
  fh:write(ffi.string(G.raw, bytes))
  fh:close()
  local torch_rules = {}
  for _, r in ipairs(order) do torch_rules[#torch_rules + 1] = r end
  local cmd = string.format("%s '%s/bench/gar_torch.py' --file '%s' --n %d --f %d --d %d --reps %d --threads %d --rules %s",
                            py, host.root, path, n, f, d, o["torch-reps"], P.threads(),
                            table.concat(torch_rules, ","))
  local p = io.popen(cmd)
  for l in p:lines() do
    local ok, rec = pcall(cjson.decode, l)
    if ok and type(rec) == "table" and rec.rule and results[rec.rule] and rec.ms then
      rec.bench = "gar-vs-torch"
      rec.agt_ms = math.floor(results[rec.rule] * 1000 + 0.5) / 1000
      rec.torch_ms = rec.ms
      rec.ms = nil
      rec.speedup = math.floor(rec.torch_ms / results[rec.rule] * 10 + 0.5) / 10
      io.write(cjson.encode(rec), "\n")
    elseif ok and type(rec) == "table" then
      io.write(l, "\n")
    end
    io.flush()
  end
  p:close()
  os.remove(path)
  return 0
end
