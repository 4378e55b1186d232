-- agt.gpu — the CUDA device seen from Lua: is there one, which, its memory, and a device-side
-- random fill for benchmarks. Device tensors are agt.tensor's (T.new(shape, "f32", "cuda"),
-- t:to("cuda")); kernels are found in agt.backend; rules run on the GPU through
-- agt.aggregators (G on the device, or {backend = "cuda"}).
--
--   local gpu = require("agt.gpu")
--   gpu.available() -> true | false, reason       gpu.describe() -> "NVIDIA H200, sm_90, ..."
--   gpu.mem_info() -> free, total (bytes)          gpu.synchronize()
--   gpu.device_count(), gpu.set_device(k)          gpu.fill_normal(t, seed, mean, std)
local F = require("agt.ffi")
local B = require("agt.backend")
local ffi, C = F.ffi, F.C
local check = F.check

local M = {}

function M.available() return B.get("cuda"):available() end

function M.describe()
  local buf = ffi.new("char[256]")
  local ok, msg = F.try(C.agt_gpu_describe(buf, 256))
  if not ok then return nil, msg end
  return ffi.string(buf)
end

function M.mem_info()
  local fr, to = ffi.new("size_t[1]"), ffi.new("size_t[1]")
  check(C.agt_gpu_mem_info(fr, to), 2)
  return tonumber(fr[0]), tonumber(to[0])
end

function M.synchronize() check(C.agt_gpu_synchronize(), 2) end
function M.device_count() return C.agt_gpu_device_count() end
function M.set_device(k) check(C.agt_gpu_set_device(k), 2) end

-- t (an f32 tensor on the GPU) <- mean + std * N(0,1), from a counter-based generator keyed by
-- (seed, index): no host data and no host twin (benchmarks and device tests only).
function M.fill_normal(t, seed, mean, std)
  if t.device == "cpu" or t.dtype ~= "f32" then
    error("gpu.fill_normal needs an f32 tensor on the GPU, got one on " .. t.device, 2)
  end
  check(C.agt_gpu_fill_normal(t:pointer(), #t, seed or 0, mean or 0, std or 1), 2)
  return t
end

function M.help()
  return [[
agt.gpu — every aggregation rule on an NVIDIA GPU (CUDA), through agt.aggregators and
agt.backend: same names, aliases, arguments, requirements and results as the CPU rules
(`agt help aggregators`). Per-coordinate rules and row choices are bit-identical to the CPU;
NNM, clipping, ARC agree to float rounding, the iterative rules to 1e-4. With no device,
gpu.available() returns false and the reason.
  local A, T = require("agt.aggregators"), require("agt.tensor")
  local r = A.new("nnm,bucketing,krum", n, f, {s = 2}, {backend = "cuda"})
  r:aggregate(G, out [, ctx])   -- G, out on the GPU (G:to("cuda")) or on the host: a host G is
                                -- uploaded, its copy overlapping a per-coordinate rule
Device tensors: T.new(shape, "f32", "cuda"), t:to("cuda"), t:to("cpu"), dst:copy(src),
t:pointer() (the device pointer, for kernels), gpu.fill_normal(t, seed, mean, std).
Training: `agt run --use-gpu ...` keeps θ, G, the workers' forward and backward passes, the
attack, the rule, the optimizer and the evaluation on the device (batches copied ahead of use);
checkpoints resume on either device; without a device it is an error (docs/gpu.md).
]]
end

return M
