-- agt.gpu — the CUDA backend seen from Lua: the device, device tensors, host<->device copies,
-- and the GPU twin of every aggregation rule and pre-aggregation step (src/gpu.h).
--
--   local gpu = require("agt.gpu")
--   gpu.available() -> true | false, reason       gpu.describe() -> "NVIDIA H100 ..., sm_90, ..."
--   local Gd = gpu.new({n, d})  gpu.from_host(t)  Gd:upload(t)  Gd:download(t)  Gd:to_host()
--   Gd:fill_normal(seed, mean, std)  Gd:row(i) (a view)  Gd:free()
--   local r = gpu.rule("nnm,bucketing,krum", n, f, args)   -- agt.aggregators with backend "gpu"
--   r:aggregate(Gd, outd [, ctx]) -> info      -- G and out on the device
--   r:aggregate_host(G, out [, ctx]) -> info   -- host tensors: G is copied (pipelined with the
--                                              -- rule where the rule is per-coordinate), out back
--   r:state() / r:set_state(s)                 -- centered clipping's centre
--
-- Device tensors own their memory (ffi.gc once, at construction; :free() detaches it). A rule's
-- info is the CPU's: { selected = {1-based rows} } for the rules that choose rows. Errors: misuse
-- raises; with no device, gpu.rule raises "no CUDA device: ..." (callers check available()).
local F = require("agt.ffi")
local ffi, C = F.ffi, F.C
local check = F.check

local M = {}

local function cstr_err() return F.errmsg() end

function M.available()
  if C.agt_gpu_available() ~= 0 then return true end
  local buf = ffi.new("char[256]")
  local s = C.agt_gpu_describe(buf, 256)
  if s == 0 then return true end
  return false, cstr_err()
end

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

-- ---------------------------------------------------------------- device tensors
ffi.cdef([[
typedef struct agt_gpu_tensor {
  float *ptr;
  double n;
  int32_t nd;
  int32_t owner;   /* 1: frees ptr when collected; 0: a view */
  double dims[8];
} agt_gpu_tensor;
]])
local gt_t = ffi.typeof("agt_gpu_tensor")
local DT = {}
DT.__index = DT

local function finalize(t)
  if t.owner == 1 and t.ptr ~= nil then
    C.agt_gpu_free(t.ptr)
    t.ptr = nil
  end
end

local function make(shape, ptr, owner)
  local t = gt_t()
  local n = 1
  t.nd = #shape
  for i, v in ipairs(shape) do
    if type(v) ~= "number" or v < 0 or v ~= math.floor(v) then
      error(string.format("dimension %d must be a non-negative integer, got %s", i, tostring(v)), 3)
    end
    t.dims[i - 1] = v
    n = n * v
  end
  t.n = n
  t.ptr = ptr
  t.owner = owner
  if owner == 1 then return ffi.gc(t, finalize) end
  return t
end

-- A device f32 tensor of the given shape, zeroed.
function M.new(shape)
  if type(shape) == "number" then shape = { shape } end
  if type(shape) ~= "table" or #shape < 1 or #shape > 8 then
    error("gpu.new needs a shape table of 1 to 8 sizes", 2)
  end
  local n = 1
  for _, v in ipairs(shape) do n = n * v end
  local p = ffi.new("void *[1]")
  check(C.agt_gpu_malloc(p, math.max(n, 1) * 4), 2)
  local t = make(shape, ffi.cast("float *", p[0]), 1)
  check(C.agt_gpu_memset(t.ptr, 0, n * 4), 2)
  return t
end

function M.is_tensor(x) return ffi.istype(gt_t, x) end

function DT:numel() return self.n end
function DT:dim() return self.nd end
function DT:size(i) return self.dims[i - 1] end
function DT:shape()
  local s = {}
  for i = 0, self.nd - 1 do s[#s + 1] = self.dims[i] end
  return s
end
function DT:data() return self.ptr end

function DT:free()
  if self.owner == 1 and self.ptr ~= nil then
    ffi.gc(self, nil)
    C.agt_gpu_free(self.ptr)
  end
  self.ptr = nil
end

local function need_host(t, n, what)
  local T = require("agt.tensor")
  if not T.is_tensor(t) or t.dtype ~= "f32" then error(what .. " needs an f32 host tensor", 3) end
  if t:numel() ~= n then
    error(string.format("%s: %d host elements for %d device elements", what, t:numel(), n), 3)
  end
end

function DT:upload(t)
  need_host(t, self.n, "upload")
  check(C.agt_gpu_copy_h2d(self.ptr, t.ptr, self.n * 4), 2)
  return self
end

function DT:download(t)
  need_host(t, self.n, "download")
  check(C.agt_gpu_copy_d2h(t.ptr, self.ptr, self.n * 4), 2)
  return t
end

function DT:to_host()
  local T = require("agt.tensor")
  return self:download(T.new(self:shape()))
end

function DT:copy(src)
  if not M.is_tensor(src) or src.n ~= self.n then error("copy needs a device tensor of the same size", 2) end
  check(C.agt_gpu_copy_d2d(self.ptr, src.ptr, self.n * 4), 2)
  return self
end

function DT:fill_normal(seed, mean, std)
  check(C.agt_gpu_fill_normal(self.ptr, self.n, seed or 0, mean or 0, std or 1), 2)
  return self
end

-- View of row i (1-based) of a tensor of >= 2 dims; shares the memory (keep the parent alive).
function DT:row(i)
  local rows, w = self.dims[0], self.n / self.dims[0]
  if i < 1 or i > rows then error(string.format("row %d out of 1..%d", i, rows), 2) end
  local shape = {}
  for k = 1, self.nd - 1 do shape[k] = self.dims[k] end
  return make(shape, self.ptr + (i - 1) * w, 0)
end

function DT:__len() return self.n end

function DT:__tostring()
  return string.format("gpu tensor (%s) at %s", table.concat(self:shape(), "x"), tostring(self.ptr))
end

function M.from_host(t)
  local d = M.new(t.shape)
  return d:upload(t)
end

ffi.metatype(gt_t, DT)

-- ---------------------------------------------------------------- the rules
-- The GPU is a backend of agt.aggregators: the same rule files (names, aliases, arguments and
-- their defaults, requirements on n and f, state) run with the agt_gpu_gar_* twins of the CPU
-- kernels. Small index arrays (selected, perm, iterations) stay in host memory.
local backend = {
  kernels = setmetatable({}, { __index = function(t, name)
    local ok, fn = pcall(function() return C["agt_gpu_gar_" .. name] end)
    if ok and fn then rawset(t, name, fn); return fn end
    return nil
  end }),
  ptr = function(t) return t.ptr end,
  copy_in = function(dst, src_host, bytes) check(C.agt_gpu_copy_h2d(dst, src_host, bytes), 2) end,
  copy_out = function(dst_host, src, bytes) check(C.agt_gpu_copy_d2h(dst_host, src, bytes), 2) end,
  new = function(shape) return M.new(shape) end,
}
M.backend = backend

local A_loaded
local function aggregators()
  if not A_loaded then
    A_loaded = require("agt.aggregators")
    A_loaded.register_backend("gpu", backend)
  end
  return A_loaded
end

-- Per-coordinate rules whose device pass the pipelined upload runs chunk by chunk.
local coord = { ["average"] = C.AGT_GPU_RULE_AVERAGE, ["average-nan"] = C.AGT_GPU_RULE_AVERAGE_NAN,
                ["median"] = C.AGT_GPU_RULE_MEDIAN, ["trimmed-mean"] = C.AGT_GPU_RULE_TRIMMED_MEAN,
                ["averaged-median"] = C.AGT_GPU_RULE_MEAMED, ["phocas"] = C.AGT_GPU_RULE_PHOCAS }

local Rule = {}
Rule.__index = Rule

-- spec, n, f, args: as for agt.aggregators.new (a rule, an alias or a chain "step,...,rule";
-- args: key -> value or key:value words). Raises the same messages; raises when there is no
-- device, and for a rule file of the user's own (those run on the CPU).
function M.rule(spec, n, f, args)
  local ok, why = M.available()
  if not ok then error(why, 2) end
  local A = aggregators()
  local inner = A.new(spec, n, f, args, { backend = "gpu" })
  local builtin = {}
  for _, name in ipairs(A.list()) do builtin[name] = true end
  for _, el in ipairs(inner.elements) do
    if not builtin[el.name] then
      error(string.format("'%s' is a rule file of its own: it runs on the CPU, not the GPU", el.name), 2)
    end
  end
  return setmetatable({ inner = inner, name = spec, n = n, f = f, buffers = {} }, Rule)
end

function M.names() return aggregators().list() end

-- G (n x d) and out (d): device tensors. Pre-aggregation steps write device buffers the rule
-- keeps. info as on the CPU.
function Rule:aggregate(G, out, ctx)
  if not M.is_tensor(G) or not M.is_tensor(out) then
    error(self.name .. ": aggregate takes device tensors (aggregate_host takes host ones)", 2)
  end
  ctx = ctx or {}
  local n = self.n
  local d = G.n / n
  if d ~= math.floor(d) or d < 1 then
    error(string.format("%s: G has %d values, not n=%d rows", self.name, G.n, n), 2)
  end
  if out.n ~= d then error(string.format("%s: out has %d values, expected d=%d", self.name, out.n, d), 2) end
  local els, shapes = self.inner.elements, self.inner.shapes
  local X, keeps = G, true
  for i = 1, #els - 1 do
    local rows = shapes[i + 1].n
    local buf = self.buffers[i]
    if not buf or buf.n ~= rows * d then
      if buf then buf:free() end
      buf = M.new({ rows, d })
      self.buffers[i] = buf
    end
    local el = els[i]
    el.d = d
    el:aggregate(X, buf, ctx)
    keeps = keeps and el.keeps_rows
    X = buf
  end
  local last = els[#els]
  last.d = d
  local info = last:aggregate(X, out, ctx) or {}
  if #els > 1 and not keeps then info.selected = nil end
  return info
end

-- Host tensors G (n x d) and out (d). G is page-locked once (so that its copies are
-- asynchronous; a failure to lock only makes them synchronous) and copied to a device buffer
-- in column chunks; a lone per-coordinate rule computes each chunk as soon as it has arrived,
-- so its time hides under the copy. Then out comes back.
function Rule:aggregate_host(G, out, ctx)
  local n = self.n
  local d = G:numel() / n
  if d ~= math.floor(d) or d < 1 then
    error(string.format("%s: G has %d values, not n=%d rows", self.name, G:numel(), n), 2)
  end
  if not self.Gd or self.Gd.n ~= n * d then
    if self.Gd then self.Gd:free(); self.outd:free() end
    self.Gd, self.outd = M.new({ n, d }), M.new({ d })
  end
  local ptr = G.ptr
  if self.pinned ~= ptr then
    if self.pinned then C.agt_gpu_host_unregister(self.pinned) end
    self.pinned = (C.agt_gpu_host_register(ptr, n * d * 4) == 0) and ptr or nil
    C.agt_clear_error()
  end
  local els = self.inner.elements
  local code = #els == 1 and coord[els[1].name]
  local info
  if code then
    local a, p = els[1].args, 0
    if els[1].name == "trimmed-mean" or els[1].name == "phocas" then p = self.f end
    if els[1].name == "averaged-median" then p = a.beta end
    check(C.agt_gpu_upload_rule(ptr, n, d, self.Gd.ptr, code, p, self.outd.ptr), 2)
    info = {}
  else
    check(C.agt_gpu_upload_rule(ptr, n, d, self.Gd.ptr, C.AGT_GPU_RULE_NONE, 0, nil), 2)
    info = self:aggregate(self.Gd, self.outd, ctx)
  end
  self.outd:download(out)
  return info
end

function Rule:state() return self.inner:state() end
function Rule:set_state(s) return self.inner:set_state(s) end

function Rule:free()
  if self.pinned then C.agt_gpu_host_unregister(self.pinned); self.pinned = nil end
  if self.Gd then self.Gd:free(); self.outd:free(); self.Gd, self.outd = nil, nil end
  for _, b in pairs(self.buffers) do b:free() end
  self.buffers = {}
end

function M.help()
  return [[
agt.gpu — every aggregation rule on an NVIDIA GPU (CUDA), as a backend of agt.aggregators:
same names, aliases, arguments, requirements and results as the CPU rules
(`agt help aggregators`). Per-coordinate rules and row choices are bit-identical to the CPU;
NNM, clipping, ARC agree to float rounding, the iterative rules to 1e-4. With no device,
gpu.available() returns false and the reason.
  local gpu = require("agt.gpu")
  local r = gpu.rule("nnm,bucketing,krum", n, f, {s = 2})
  r:aggregate(G_dev, out_dev [, ctx])     -- device tensors (gpu.new, gpu.from_host)
  r:aggregate_host(G, out [, ctx])        -- host tensors; the copy of G overlaps the
                                          -- per-coordinate rules
Device tensors: gpu.new(shape), gpu.from_host(t), t:upload(h), t:download(h), t:to_host(),
t:fill_normal(seed, mean, std), t:row(i), t:free().
]]
end

return M
