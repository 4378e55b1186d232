-- agt.backend — where a tensor's kernels are found: one table of ops per device (Torch7's
-- dispatch by tensor type, ggml's backend tables).
--
--   local B = require("agt.backend")
--   B.of(t)             -> the backend of t's device          B.get("cpu" | "cuda" | "gpu" | "cuda:0")
--   B.names()           -> { "cpu", "cuda" }                   B.list() -> the available ones
--   be.name, be.device (AGT_DEV_*), be:available() -> true | false, why
--   be:op("vec.axpy")   -> the kernel, or an error naming op and device
--   be:has(name), be:ops() -> sorted op names
--   be.gar[name]        -> the raw rule kernel agt_gar_<name> / agt_gpu_gar_<name> (a status)
--   be.write(dst, host_src, bytes), be.read(host_dst, src, bytes): host <-> backend memory
--   be.write_async(dst, host_src, bytes)  a copy ahead of use (CUDA: on a copy stream, from
--                       page-locked memory); be.join() makes later work wait for those copies,
--                       be.wait() waits for them on the host
--   be.upload           -> (CUDA) pipelined upload of a host G, optionally with a per-coordinate
--                          rule computed chunk by chunk as the chunks arrive (src/gpu.h)
--
-- An op is one C kernel, called with the C arguments (device pointers for the device's
-- backend: t:pointer()). Ops named "family.name" come from the engine's declarations: the CPU
-- backend has every agt_vec_*, agt_gar_*, agt_nn_*, agt_optim_* and agt_attack_* entry (vector
-- ops, rule passes, layers and losses, optimizers, attack helpers) and vec.rows_mean, _std,
-- _norm2, _sqdist and vec.gemm (vec.h's row reductions and GEMM); the CUDA backend has every
-- agt_gpu_gar_* entry, and the vector ops (element-wise, reductions, row mean and deviation),
-- GEMM, layers, loss and optimizers (src/gpu_nn.h) registered below, one line each. Every non-CPU op has
-- a CPU twin of the same name, and spec/backend_spec.lua holds each to it. An op that returns
-- an agt_status raises the engine's message on failure; other ops return their value.
--
-- The CPU backend is always there; the CUDA one is present in every build and available when
-- agt was built with CUDA and a device is seen (be:available() says why not otherwise).
local F = require("agt.ffi")
local cdef = require("agt.cdef")
local ffi, C = F.ffi, F.C

local B = {}

local Backend = {}
Backend.__index = Backend

-- Declared entries "<prefix><name>" of the engine: name -> return type.
local function declared(prefix)
  local out = {}
  for ret, name in ("\n" .. cdef):gmatch("\n([%w_]+)[%s%*]+" .. prefix .. "([%w_]+)%s*%(") do
    out[name] = ret
  end
  return out
end

local function new_backend(name, device, available)
  return setmetatable({ name = name, device = tonumber(device), available = available,
                        _ops = {}, gar = {} }, Backend)
end

-- Registers fn as op `name`; status = true when fn returns an agt_status to check.
function Backend:register(name, fn, status)
  local be = self
  if status then
    self._ops[name] = function(...)
      local s = fn(...)
      if s ~= 0 then error(name .. " on " .. be.name .. ": " .. F.errmsg(), 2) end
    end
  else
    self._ops[name] = fn
  end
end

-- Every declared C entry "<prefix><x>" as op "<family>.<x>"; gar entries also in be.gar (raw).
function Backend:register_family(family, prefix)
  for name, ret in pairs(declared(prefix)) do
    local fn = C[prefix .. name]
    self:register(family .. "." .. name, fn, ret == "agt_status")
    if family == "gar" then self.gar[name] = fn end
  end
end

function Backend:has(name) return self._ops[name] ~= nil end

function Backend:ops()
  local t = {}
  for k in pairs(self._ops) do t[#t + 1] = k end
  table.sort(t)
  return t
end

-- The kernel of op `name`, or an error naming the op and the device (level as for error()).
function Backend:op(name, level)
  local fn = self._ops[name]
  if fn then return fn end
  local fam = name:match("^([^.]+)%.") or name
  local same = {}
  for _, k in ipairs(self:ops()) do
    if k:sub(1, #fam + 1) == fam .. "." then same[#same + 1] = k end
  end
  error(string.format("%s has no kernel on %s (%s there: %s); copy the tensors with :to(\"cpu\")",
                      name, self.name, fam, #same > 0 and table.concat(same, ", ") or "none"),
        (level or 1) + 1)
end

-- ---- the CPU: always ------------------------------------------------------------------------
local cpu = new_backend("cpu", C.AGT_DEV_CPU, function() return true end)
cpu:register_family("vec", "agt_vec_")
cpu:register_family("gar", "agt_gar_")
cpu:register_family("nn", "agt_nn_")
cpu:register_family("optim", "agt_optim_")
cpu:register_family("attack", "agt_attack_")
cpu:register("vec.rows_mean", C.agt_rows_mean)
cpu:register("vec.rows_std", C.agt_rows_std)
cpu:register("vec.rows_norm2", C.agt_rows_norm2)
cpu:register("vec.rows_sqdist", C.agt_rows_sqdist)
cpu:register("vec.gemm", C.agt_gemm, true)
cpu.write = function(dst, src, bytes) ffi.copy(dst, src, bytes) end
cpu.read = function(dst, src, bytes) ffi.copy(dst, src, bytes) end
-- Copies ahead of use: queued (the host does not wait), joined (later work waits for them),
-- waited for (the host sources may change). On the CPU, a plain copy.
cpu.write_async = function(dst, src, bytes) ffi.copy(dst, src, bytes) end
cpu.join = function() end
cpu.wait = function() end

-- ---- CUDA: built in always (src/gpu_stub.c answers without CUDA), available with a device --
local cuda = new_backend("cuda", C.AGT_DEV_CUDA, function()
  if C.agt_gpu_available() ~= 0 then return true end
  local buf = ffi.new("char[256]")
  if C.agt_gpu_describe(buf, 256) == 0 then return true end
  return false, F.errmsg()
end)
cuda:register_family("gar", "agt_gpu_gar_")
cuda:register("vec.fill", C.agt_gpu_vec_fill, true)
cuda:register("vec.scale", C.agt_gpu_vec_scale, true)
cuda:register("vec.axpy", C.agt_gpu_vec_axpy, true)
cuda:register("vec.add", C.agt_gpu_vec_add, true)
cuda:register("vec.sub", C.agt_gpu_vec_sub, true)
cuda:register("vec.mul", C.agt_gpu_vec_mul, true)
cuda:register("vec.copy", function(dst, src, n)   -- vec.h's agt_vec_copy: dst ≠ src or nothing
  if dst ~= src then F.check(C.agt_gpu_copy_d2d(dst, src, n * 4), 2) end
end)
-- The reductions return their value, as the CPU's do (the kernel writes a host double).
local red_out = ffi.new("double[1]")
for _, r in ipairs({ "sum", "norm2" }) do
  local fn = C["agt_gpu_vec_" .. r]
  cuda:register("vec." .. r, function(x, n)
    F.check(fn(x, n, red_out), 2)
    return red_out[0]
  end)
end
for _, r in ipairs({ "dot", "sqdist" }) do
  local fn = C["agt_gpu_vec_" .. r]
  cuda:register("vec." .. r, function(x, y, n)
    F.check(fn(x, y, n, red_out), 2)
    return red_out[0]
  end)
end
cuda:register("vec.rows_mean", C.agt_gpu_rows_mean, true)
cuda:register("vec.rows_std", C.agt_gpu_rows_std, true)
cuda:register("vec.rows_norm2", C.agt_gpu_rows_norm2, true)
cuda:register("vec.rows_sqdist", C.agt_gpu_rows_sqdist, true)
cuda:register("vec.gemm", C.agt_gpu_gemm, true)   -- cuBLAS (src/gpu_nn.h: the training kernels)
cuda:register("nn.linear_forward", C.agt_gpu_nn_linear_forward, true)
cuda:register("nn.linear_backward", C.agt_gpu_nn_linear_backward, true)
cuda:register("nn.act_forward", C.agt_gpu_nn_act_forward, true)
cuda:register("nn.act_backward", C.agt_gpu_nn_act_backward, true)
cuda:register("nn.bias_act", C.agt_gpu_nn_bias_act, true)
cuda:register("nn.conv2d_forward", C.agt_gpu_nn_conv2d_forward, true)
cuda:register("nn.conv2d_backward", C.agt_gpu_nn_conv2d_backward, true)
cuda:register("nn.maxpool_forward", C.agt_gpu_nn_maxpool_forward, true)
cuda:register("nn.maxpool_backward", C.agt_gpu_nn_maxpool_backward, true)
cuda:register("nn.avgpool_forward", C.agt_gpu_nn_avgpool_forward, true)
cuda:register("nn.avgpool_backward", C.agt_gpu_nn_avgpool_backward, true)
cuda:register("nn.dropout_forward", C.agt_gpu_nn_dropout_forward, true)
cuda:register("nn.dropout_backward", C.agt_gpu_nn_dropout_backward, true)
cuda:register("nn.add_act", C.agt_gpu_nn_add_act, true)
cuda:register("nn.batchnorm_forward", C.agt_gpu_nn_batchnorm_forward, true)
cuda:register("nn.batchnorm_backward", C.agt_gpu_nn_batchnorm_backward, true)
cuda:register("nn.softmax_xent", C.agt_gpu_nn_softmax_xent, true)
cuda:register("nn.eval_batch", C.agt_gpu_nn_eval_batch, true)
cuda:register("optim.sgd", C.agt_gpu_optim_sgd, true)
cuda:register("optim.momentum", C.agt_gpu_optim_momentum, true)
cuda:register("optim.adam", C.agt_gpu_optim_adam, true)
cuda:register("optim.adagrad", C.agt_gpu_optim_adagrad, true)
cuda:register("optim.adadelta", C.agt_gpu_optim_adadelta, true)
cuda:register("optim.rmsprop", C.agt_gpu_optim_rmsprop, true)
cuda:register("optim.l1", C.agt_gpu_optim_l1, true)
cuda:register("optim.l2", C.agt_gpu_optim_l2, true)
-- The path the device's convolutions take, one line (cuDNN found at run time, or im2col +
-- cuBLAS and why), and true for cuDNN; use_cudnn(false) switches cuDNN off, (true) back on.
-- say_conv_path() writes the line to stderr once per process (the first convolution does).
function cuda.conv_path()
  local buf = ffi.new("char[512]")
  local c = C.agt_gpu_nn_conv_path(buf, 512)
  return ffi.string(buf), c == 1
end
function cuda.use_cudnn(on) C.agt_gpu_nn_use_cudnn(on and 1 or 0) end
-- The arithmetic of the device's convolutions and GEMMs (--gpu-math): "fp32" (the default:
-- float32, deterministic summing algorithms), "tf32" (TF32 tensor cores, opt-in) or "fp32-fast"
-- (float32, any cuDNN algorithm: Winograd, FFT, non-deterministic); cuda.math() says which is set.
local MATHS = { fp32 = 0, tf32 = 1, ["fp32-fast"] = 2 }
function cuda.set_math(m)
  if not MATHS[m] then error("gpu math must be fp32, tf32 or fp32-fast, got " .. tostring(m), 2) end
  C.agt_gpu_nn_set_math(MATHS[m])
end
function cuda.math()
  local k = C.agt_gpu_nn_math()
  for m, v in pairs(MATHS) do if v == k then return m end end
end
-- Convolution passes run so far: through im2col, through cuDNN.
function cuda.conv_calls()
  local a = ffi.new("size_t[2]")
  C.agt_gpu_nn_conv_calls(a, a + 1)
  return tonumber(a[0]), tonumber(a[1])
end
local said
function cuda.say_conv_path()
  if said then return end
  said = true
  io.stderr:write("agt: ", (cuda.conv_path()), "\n")
end
cuda.write = function(dst, src, bytes) F.check(C.agt_gpu_copy_h2d(dst, src, bytes), 2) end
cuda.read = function(dst, src, bytes) F.check(C.agt_gpu_copy_d2h(dst, src, bytes), 2) end
cuda.write_async = function(dst, src, bytes) F.check(C.agt_gpu_copy_h2d_async(dst, src, bytes), 2) end
cuda.join = function() F.check(C.agt_gpu_copy_async_join(), 2) end
cuda.wait = function() F.check(C.agt_gpu_copy_async_wait(), 2) end

-- G_host (n x d, host pointer) into G_dev in column chunks on a copy stream; with `kernel` (a
-- per-coordinate rule kernel with an AGT_GPU_RULE_<KERNEL> code: average, median, ...) and its
-- parameter p, the rule runs on each chunk as it arrives, into out_dev.
local no_rule = tonumber(C.AGT_GPU_RULE_NONE)
function cuda.upload(G_host, n, d, G_dev, kernel, p, out_dev)
  local code = no_rule
  if kernel then
    local ok, c = pcall(function() return C["AGT_GPU_RULE_" .. kernel:upper()] end)
    if not ok then error("upload: no pipelined per-coordinate kernel '" .. kernel .. "' on cuda", 2) end
    code = tonumber(c)
  end
  F.check(C.agt_gpu_upload_rule(G_host, n, d, G_dev, code, p or 0, out_dev), 2)
end

local by_name = { cpu = cpu, cuda = cuda, gpu = cuda }
local by_device = { [cpu.device] = cpu, [cuda.device] = cuda }

-- The backend called name: "cpu", "cuda" (alias "gpu"), or "cuda:k" for the device the engine
-- drives (agt drives one device at a time). level as for error().
function B.get(name, level)
  local be = by_name[name]
  if be then return be end
  local k = type(name) == "string" and name:match("^cuda:(%d+)$")
  if k then
    local cur = C.agt_gpu_device()
    if tonumber(k) ~= cur then
      error(string.format("device '%s': the engine drives cuda:%d (one device at a time)", name, cur),
            (level or 1) + 1)
    end
    return cuda
  end
  error(string.format("unknown device '%s' (known: cpu, cuda, cuda:%d, gpu)", tostring(name),
                      C.agt_gpu_device()), (level or 1) + 1)
end

-- The backend of a tensor's device.
function B.of(t) return by_device[t.dev] end

function B.names() return { "cpu", "cuda" } end

-- The backends that can run now (the CPU first).
function B.list()
  local t = {}
  for _, n in ipairs(B.names()) do
    if by_name[n]:available() then t[#t + 1] = n end
  end
  return t
end

return B
