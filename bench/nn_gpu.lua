-- bench/nn_gpu.lua — `agt bench nn_gpu [reps=20] [models=cnnet,resnet18-cifar10] [math=fp32,tf32,fp32-fast]
--                    [profile=1]`
--
-- One worker's training pass on the GPU: forward, softmax cross-entropy and backward into a
-- gradient vector (agt.nn's loss_grad), θ and the batch device-resident, for cnnet at batch 32
-- and resnet18-cifar10 at batch 128 (the issue's benchmark sizes), through cuDNN (where
-- libcudnn.so.9 is found) and through im2col + cuBLAS, in the same run. CUDA events, the median
-- of `reps` passes after 3 warm-ups; one JSON line per (model, path): ms per pass and passes/s.
-- bench/nn_gpu_torch.py times the same passes in PyTorch on the same card. With no device,
-- one line says why and it exits 0. math: fp32 (default), tf32, fp32-fast (--gpu-math).
-- profile=1 adds, per (model, path, math), one line of where a pass's time goes: each device op
-- timed alone (CUDA events around it, the host waiting after each), summed over a pass, by op
-- and, for convolutions, by geometry (the sum exceeds the pass's time by the waits).
local cjson = require("cjson")
local gpu = require("agt.gpu")
local T = require("agt.tensor")
local R = require("agt.rng")
local nn = require("agt.nn")
local B = require("agt.backend")
local P = require("agt.plugins")
local F = require("agt.ffi")
local ffi, C = F.ffi, F.C
local check = F.check

local function emit(o) io.write(cjson.encode(o), "\n"); io.flush() end

local function median(t)
  table.sort(t)
  local k = #t
  return k % 2 == 1 and t[(k + 1) / 2] or 0.5 * (t[k / 2] + t[k / 2 + 1])
end

-- Where one pass's time goes: every op of the backend timed alone over `k` passes (ms per pass).
local function profile_pass(be, pass, info)
  local ms = ffi.new("double[1]")
  local acc, saved = {}, {}
  for name, fn in pairs(be._ops) do
    saved[name] = fn
    be._ops[name] = function(...)
      local key = name
      if name == "nn.conv2d_forward" or name == "nn.conv2d_backward" then
        local a = { ... }
        local o = name == "nn.conv2d_forward" and 6 or 8   -- the argument B
        key = string.format("%s B%d C%d H%d OC%d K%d s%d", name, tonumber(a[o]), tonumber(a[o + 1]),
                            tonumber(a[o + 2]), tonumber(a[o + 4]), tonumber(a[o + 5]), tonumber(a[o + 7]))
      end
      check(C.agt_gpu_timer_start())
      fn(...)
      check(C.agt_gpu_timer_stop(ms))
      acc[key] = (acc[key] or 0) + ms[0]
    end
  end
  local k = 5
  local ok, err = pcall(function() for _ = 1, k do pass() end end)
  for name, fn in pairs(saved) do be._ops[name] = fn end
  if not ok then error(err, 0) end
  local ops, total = {}, 0
  for key, t in pairs(acc) do ops[key] = t / k; total = total + t / k end
  local r = { bench = "nn_gpu", profile = true, ops_ms = ops, ops_total_ms = total }
  for key, v in pairs(info) do r[key] = v end
  return r
end

local BATCH = { cnnet = 32, ["resnet18-cifar10"] = 128 }

return function(args)
  local reps, models, maths, profile = 20, { "cnnet", "resnet18-cifar10" }, { "fp32" }, false
  for _, a in ipairs(args or {}) do
    local k, v = a:match("^(%w+)=(.*)$")
    if k == "reps" then reps = tonumber(v)
    elseif k == "models" or k == "math" then
      local t = {}
      for w in v:gmatch("[^,]+") do t[#t + 1] = w end
      if k == "models" then models = t else maths = t end
    elseif k == "profile" then profile = v == "1"
    else
      io.stderr:write("bench nn_gpu: unknown argument '" .. a .. "' (reps=N, models=a,b, math=fp32,tf32,fp32-fast, profile=1)\n")
      return 1
    end
  end
  local ok, why = gpu.available()
  if not ok then
    emit({ bench = "nn_gpu", skipped = true, reason = why })
    return 0
  end
  local device = gpu.describe()
  local cuda = B.get("cuda")
  local _, has_cudnn = cuda.conv_path()
  local ms = ffi.new("double[1]")
  for _, name in ipairs(models) do
    local m = P.load("experiments", name, "experiment").model(nn)
    local bs = BATCH[name] or 32
    local theta = m:init(T.new({ m.d }), R.new(1, "init")):to("cuda")
    local shape = { bs }
    for _, v in ipairs(m.input_shape) do shape[#shape + 1] = v end
    local x = R.new(2, "x"):uniform(T.new(shape), 0, 1):to("cuda")
    local yh = T.new({ bs }, "i32")
    for i = 0, bs - 1 do yh.raw[i] = i % m.classes end
    local y = yh:to("cuda")
    local g = T.new({ m.d }, "f32", "cuda")
    for _, path in ipairs(has_cudnn and { "cudnn", "im2col" } or { "im2col" }) do
      for _, gm in ipairs(maths) do
        cuda.use_cudnn(path == "cudnn")
        cuda.set_math(gm)
        for _ = 1, 3 do m:loss_grad(theta, x, y, bs, g) end
        check(C.agt_gpu_synchronize())
        local ts = {}
        for _ = 1, reps do
          check(C.agt_gpu_timer_start())
          m:loss_grad(theta, x, y, bs, g)
          check(C.agt_gpu_timer_stop(ms))
          ts[#ts + 1] = ms[0]
        end
        local t = median(ts)
        emit({ bench = "nn_gpu", device = device, model = name, batch = bs, path = path, math = gm,
               ms = t, passes_per_s = 1000 / t, reps = reps,
               conv_path = path == "cudnn" and (cuda.conv_path()) or nil })
        if profile then emit(profile_pass(cuda, function() m:loss_grad(theta, x, y, bs, g) end,
                                          { model = name, path = path, math = gm })) end
      end
    end
    cuda.use_cudnn(true)
    cuda.set_math("fp32")
    m:release()
  end
  return 0
end
