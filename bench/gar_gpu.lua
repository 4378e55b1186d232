-- bench/gar_gpu.lua — `agt bench gar_gpu [quick] [n=25,51] [f=5] [d=10000000] [reps=10]`
--
-- Every rule on the GPU, timed with CUDA events on device-resident G (filled on the device with
-- normal values), after warm-up, the median of `reps` calls. Each (n, f, d) first times
-- `average` (one read of G: the floor) and then each rule, printing one JSON line per
-- measurement: ms, the read bandwidth n*d*4/t, and the ratio to average in the same run. A first
-- line gives the card and its device-to-device copy bandwidth (bytes read + written), the
-- ceiling `average` is held against. With no device, one line says why and it exits 0.
local cjson = require("cjson")
local gpu = require("agt.gpu")
local T = require("agt.tensor")
local A = require("agt.aggregators")
local F = require("agt.ffi")
local ffi, C = F.ffi, F.C
local check = F.check

local function list(s)
  local t = {}
  for w in s:gmatch("[^,]+") do t[#t + 1] = tonumber(w) end
  return t
end

local function median(t)
  table.sort(t)
  local k = #t
  return k % 2 == 1 and t[(k + 1) / 2] or 0.5 * (t[k / 2] + t[k / 2 + 1])
end

local function dev(shape) return T.new(shape, "f32", "cuda") end

local function emit(o) io.write(cjson.encode(o), "\n"); io.flush() end

local function time_ms(fn, reps, warm)
  for _ = 1, warm do fn() end
  check(C.agt_gpu_synchronize())
  local ts = {}
  local ms = ffi.new("double[1]")
  for _ = 1, reps do
    check(C.agt_gpu_timer_start())
    fn()
    check(C.agt_gpu_timer_stop(ms))
    ts[#ts + 1] = ms[0]
  end
  return median(ts), ts
end

local function binom(n, k)
  local r = 1
  for i = 1, k do r = r * (n - k + i) / i end
  return r
end

return function(args)
  local opt = { n = { 11, 25, 51 }, f = { 2, 5, 12 }, d = { 1000000, 10000000, 25000000 },
                reps = 10, warm = 2, only = nil }
  for _, a in ipairs(args or {}) do
    local k, v = a:match("^(%w+)=(.*)$")
    if a == "host" then opt.host = true
    elseif a == "quick" then opt.n, opt.f, opt.d, opt.reps = { 11, 25 }, { 2, 5 }, { 1000000 }, 5
    elseif k == "n" or k == "f" or k == "d" then opt[k] = list(v)
    elseif k == "reps" then opt.reps = tonumber(v)
    elseif k == "rules" then opt.only = {} for w in v:gmatch("[^,]+") do opt.only[w] = true end
    else io.stderr:write("gar_gpu: unknown argument '", a, "' (quick, n=, f=, d=, reps=, rules=)\n"); return 1 end
  end
  local ok, why = gpu.available()
  if not ok then
    emit({ bench = "gar_gpu", skipped = true, reason = why })
    return 0
  end
  local device = gpu.describe()
  local nmax, dmax = 0, 0
  for _, n in ipairs(opt.n) do nmax = math.max(nmax, n) end
  for _, d in ipairs(opt.d) do dmax = math.max(dmax, d) end

  -- the card's copy bandwidth, on the largest G
  do
    local a, b = dev({ nmax, dmax }), dev({ nmax, dmax })
    gpu.fill_normal(a, 1, 0, 1)
    local bytes = nmax * dmax * 4
    local pa, pb = a:pointer(), b:pointer()
    local copy = function() check(C.agt_gpu_copy_d2d(pb, pa, bytes)) end
    -- about half a second of copies first, so that the card's clocks are up for every figure
    local ms = ffi.new("double[1]")
    check(C.agt_gpu_timer_start())
    copy()
    check(C.agt_gpu_timer_stop(ms))
    for _ = 1, math.min(2000, math.ceil(500 / math.max(ms[0], 0.01))) do copy() end
    local t = time_ms(copy, opt.reps, 2)
    emit({ bench = "gar_gpu", device = device, copy_bytes = bytes, copy_ms = t,
           copy_GBps = 2 * bytes / t / 1e6 })
    a:free(); b:free()
  end

  if opt.host then
    -- host-resident G (page-locked once, by its storage): the copy alone, then rules on the
    -- GPU fed the host G, whose copy overlaps the per-coordinate rules chunk by chunk
    local R = require("agt.rng")
    local n, f, d = opt.n[#opt.n], opt.f[1], opt.d[1]
    local G, out = T.new({ n, d }), T.new({ d })
    R.new(7, "bench"):normal(G, 0, 1)
    local Gd = dev({ n, d })
    assert(G:pin())
    local t = time_ms(function()
      check(C.agt_gpu_upload_rule(G.raw, n, d, Gd:pointer(), C.AGT_GPU_RULE_NONE, 0, nil))
    end, opt.reps, 1)
    emit({ bench = "gar_gpu", device = device, host = true, rule = "copy-only", n = n, f = f, d = d,
           ms = t, h2d_GBps = n * d * 4 / t / 1e6 })
    Gd:free()
    for _, name in ipairs({ "average", "median", "trimmed-mean", "krum" }) do
      local r = A.new(name, n, f, {}, { backend = "cuda" })
      local th = time_ms(function() r:aggregate(G, out) end, opt.reps, 1)
      emit({ bench = "gar_gpu", device = device, host = true, rule = name, n = n, f = f, d = d,
             ms = th, ratio_to_copy = th / t })
      r:free()
    end
    return 0
  end

  for _, d in ipairs(opt.d) do
    local G = gpu.fill_normal(dev({ nmax, d }), 42, 0, 1)
    local out = dev({ d })
    local big = dev({ nmax, d })   -- pre-aggregation output
    local v = dev({ d })
    local po, pbig, pv = out:pointer(), big:pointer(), v:pointer()
    local sel = ffi.new("int64_t[?]", nmax)
    local it = ffi.new("int64_t[1]")
    local perm = ffi.new("int64_t[?]", nmax)
    for _, n in ipairs(opt.n) do
      for i = 0, n - 1 do perm[i] = n - 1 - i end   -- a fixed permutation (the cost is the same)
      for _, f in ipairs(opt.f) do
        local g = G:pointer()
        local cases = {
          { "average", true, function() check(C.agt_gpu_gar_average(g, n, d, po)) end },
          { "average-nan", true, function() check(C.agt_gpu_gar_average_nan(g, n, d, po)) end },
          { "median", true, function() check(C.agt_gpu_gar_median(g, n, d, po)) end },
          { "trimmed-mean", n > 2 * f, function() check(C.agt_gpu_gar_trimmed_mean(g, n, d, f, po)) end },
          { "meamed", n > f, function() check(C.agt_gpu_gar_meamed(g, n, d, n - f, po)) end },
          { "phocas", n > 2 * f, function() check(C.agt_gpu_gar_phocas(g, n, d, f, po)) end },
          { "krum", n >= 2 * f + 3, function() check(C.agt_gpu_gar_multi_krum(g, n, d, f, 1, po, sel)) end },
          { "multi-krum", n >= 2 * f + 3, function() check(C.agt_gpu_gar_multi_krum(g, n, d, f, n - f, po, sel)) end },
          { "bulyan", n >= 4 * f + 3, function() check(C.agt_gpu_gar_bulyan(g, n, d, f, po, sel)) end },
          { "geometric-median", true, function()
              check(C.agt_gpu_gar_geometric_median(g, n, d, 0.1, 8, 0, po, it)) end, 8 },
          { "centered-clipping", true, function()
              check(C.agt_gpu_gar_centered_clipping(g, n, d, 10, 3, pv)) end, 3 },
          { "mda", n > f and binom(n, f) <= 1e6, function()
              check(C.agt_gpu_gar_mda(g, n, d, f, 1e6, po, sel)) end },
          { "cge", n > f, function() check(C.agt_gpu_gar_cge(g, n, d, f, po, sel)) end },
          { "nnm", n > f, function() check(C.agt_gpu_gar_nnm(g, n, d, f, pbig)) end },
          { "bucketing", true, function() check(C.agt_gpu_gar_bucketing(g, n, d, 2, perm, pbig)) end },
          { "clipping", true, function() check(C.agt_gpu_gar_clipping(g, n, d, 2.0, pbig)) end },
          { "arc", f <= n, function() check(C.agt_gpu_gar_arc(g, n, d, f, pbig)) end },
        }
        local t_avg
        for _, cs in ipairs(cases) do
          local name, valid, fn, iters = cs[1], cs[2], cs[3], cs[4]
          if name == "average" or ((not opt.only or opt.only[name]) and valid) then
            local t = time_ms(fn, opt.reps, opt.warm)
            if name == "average" then t_avg = t end
            local o = { bench = "gar_gpu", device = device, rule = name, n = n, f = f, d = d,
                        ms = t, read_GBps = n * d * 4 / t / 1e6, ratio = t / t_avg }
            if iters then
              if name == "geometric-median" then iters = math.max(1, tonumber(it[0])) end
              o.iterations = iters
              o.ratio_per_iteration = t / t_avg / iters
            end
            emit(o)
          elseif not valid and (not opt.only or opt.only[name]) then
            emit({ bench = "gar_gpu", rule = name, n = n, f = f, d = d, skipped = true,
                   reason = name == "mda" and "C(n,f) over the 1e6 budget" or "n, f outside the rule's requirement" })
          end
        end
      end
    end
    G:free(); out:free(); big:free(); v:free()
    C.agt_gpu_release_scratch()
  end
  return 0
end
