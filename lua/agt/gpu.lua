-- agt.gpu — the CUDA backend seen from Lua: the device, device tensors, host<->device copies,
-- and the GPU twin of every aggregation rule and pre-aggregation step (src/gpu.h).
--
--   local gpu = require("agt.gpu")
--   gpu.available() -> true | false, reason       gpu.describe() -> "NVIDIA H100 ..., sm_90, ..."
--   local Gd = gpu.new({n, d})  gpu.from_host(t)  Gd:upload(t)  Gd:download(t)  Gd:to_host()
--   Gd:fill_normal(seed, mean, std)  Gd:row(i) (a view)  Gd:free()
--   local r = gpu.rule("nnm,bucketing,krum", n, f, args)   -- same names and args as agt.aggregators
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

function DT:__tostring()
  return string.format("gpu tensor (%s) at %s", table.concat(self:shape(), "x"), tostring(self.ptr))
end

function M.from_host(t)
  local d = M.new(t.shape)
  return d:upload(t)
end

ffi.metatype(gt_t, DT)

-- ---------------------------------------------------------------- the rules
-- Each step: fn(state, G, n, d, f, out) -> info (G, out: float* on the device). Row-choosing
-- rules fill info.selected (1-based). Pre-aggregation steps give the new row count and f.
local function sel_buf(k) return ffi.new("int64_t[?]", math.max(k, 1)) end
local function sel_table(buf, k)
  local t = {}
  for i = 0, k - 1 do t[i + 1] = tonumber(buf[i]) + 1 end
  return t
end

local function arg(args, name, default)
  local v = args[name]
  if v == nil then v = args[(name:gsub("-", "_"))] end
  if v == nil then return default end
  return v
end

local rules = {}
local pre = {}

rules.average = function(_, G, n, d, f, out) check(C.agt_gpu_gar_average(G, n, d, out), 3) end
rules["average-nan"] = function(_, G, n, d, f, out) check(C.agt_gpu_gar_average_nan(G, n, d, out), 3) end
rules.median = function(_, G, n, d, f, out) check(C.agt_gpu_gar_median(G, n, d, out), 3) end
rules["trimmed-mean"] = function(_, G, n, d, f, out) check(C.agt_gpu_gar_trimmed_mean(G, n, d, f, out), 3) end
rules.meamed = function(st, G, n, d, f, out)
  check(C.agt_gpu_gar_meamed(G, n, d, arg(st.args, "beta", n - f), out), 3)
end
rules.phocas = function(_, G, n, d, f, out) check(C.agt_gpu_gar_phocas(G, n, d, f, out), 3) end
rules["multi-krum"] = function(st, G, n, d, f, out)
  local m = arg(st.args, "m", n - f)
  local s = sel_buf(m)
  check(C.agt_gpu_gar_multi_krum(G, n, d, f, m, out, s), 3)
  return { selected = sel_table(s, m) }
end
rules.krum = function(st, G, n, d, f, out)
  local s = sel_buf(1)
  check(C.agt_gpu_gar_multi_krum(G, n, d, f, 1, out, s), 3)
  return { selected = sel_table(s, 1) }
end
rules.bulyan = function(_, G, n, d, f, out)
  local k = n - 2 * f
  local s = sel_buf(k)
  check(C.agt_gpu_gar_bulyan(G, n, d, f, out, s), 3)
  return { selected = sel_table(s, k) }
end
rules.cge = function(_, G, n, d, f, out)
  local s = sel_buf(n - f)
  check(C.agt_gpu_gar_cge(G, n, d, f, out, s), 3)
  return { selected = sel_table(s, n - f) }
end
rules.mda = function(st, G, n, d, f, out)
  local s = sel_buf(n - f)
  check(C.agt_gpu_gar_mda(G, n, d, f, arg(st.args, "budget", 1e6), out, s), 3)
  return { selected = sel_table(s, n - f) }
end
rules["geometric-median"] = function(st, G, n, d, f, out)
  local it = ffi.new("int64_t[1]")
  check(C.agt_gpu_gar_geometric_median(G, n, d, arg(st.args, "nu", 0.1),
                                       arg(st.args, "max-iter", 8), arg(st.args, "tol", 1e-6),
                                       out, it), 3)
  return { iterations = tonumber(it[0]) }
end
rules["centered-clipping"] = function(st, G, n, d, f, out)
  if not st.v or st.v.n ~= d then st.v = M.new({ d }) end   -- the centre: zeros at the start
  check(C.agt_gpu_gar_centered_clipping(G, n, d, arg(st.args, "tau", 10), arg(st.args, "iters", 3),
                                        st.v.ptr), 3)
  check(C.agt_gpu_copy_d2d(out, st.v.ptr, d * 4), 3)
end

-- Pre-aggregation: fn(st, G, n, d, f, ctx) -> G2 (device tensor), n2, f2
pre.nnm = function(_, G, n, d, f)
  local o = M.new({ n, d })
  check(C.agt_gpu_gar_nnm(G, n, d, f, o.ptr), 3)
  return o, n, f
end
pre.bucketing = function(st, G, n, d, f, ctx)
  local s = arg(st.args, "s", 2)
  local perm
  if ctx and ctx.rng then
    perm = ctx.rng:permutation(n)
  else
    local R = require("agt.rng")
    perm = R.new(ctx and ctx.step or 0, "bucketing"):permutation(n)
  end
  local nb = math.ceil(n / s)
  local o = M.new({ nb, d })
  check(C.agt_gpu_gar_bucketing(G, n, d, s, perm.ptr, o.ptr), 3)
  return o, nb, f
end
pre.clipping = function(st, G, n, d, f)
  local o = M.new({ n, d })
  check(C.agt_gpu_gar_clipping(G, n, d, arg(st.args, "c", 2.0), o.ptr), 3)
  return o, n, f
end
pre.arc = function(_, G, n, d, f)
  local o = M.new({ n, d })
  check(C.agt_gpu_gar_arc(G, n, d, f, o.ptr), 3)
  return o, n, f
end

local aliases = {
  ["averaged-median"] = "meamed", ["krum-co"] = "multi-krum", ["krum-tf"] = "multi-krum",
  ["krum-py"] = "multi-krum", ["bulyan-co"] = "bulyan", ["bulyan-py"] = "bulyan",
  ["geomed"] = "geometric-median", ["cc"] = "centered-clipping",
}

-- Per-coordinate rules that the pipelined upload computes chunk by chunk.
local coord = { average = C.AGT_GPU_RULE_AVERAGE, ["average-nan"] = C.AGT_GPU_RULE_AVERAGE_NAN,
                median = C.AGT_GPU_RULE_MEDIAN, ["trimmed-mean"] = C.AGT_GPU_RULE_TRIMMED_MEAN,
                meamed = C.AGT_GPU_RULE_MEAMED, phocas = C.AGT_GPU_RULE_PHOCAS }

function M.names()
  local t = {}
  for k in pairs(rules) do t[#t + 1] = k end
  for k in pairs(pre) do t[#t + 1] = k end
  table.sort(t)
  return t
end

local Rule = {}
Rule.__index = Rule

-- spec: "krum" or "nnm,bucketing,krum"; args: key -> value (as for agt.aggregators).
function M.rule(spec, n, f, args)
  if type(spec) ~= "string" then error("gpu.rule needs a rule name, got " .. type(spec), 2) end
  args = args or {}
  local steps = {}
  for word in spec:gmatch("[^,%s]+") do
    local canon = aliases[word] or word
    local st = { name = word, canon = canon, args = {} }
    for k, v in pairs(args) do st.args[k] = v end
    if (word == "krum-co" or word == "krum-tf" or word == "krum-py") and st.args.m == nil then
      st.args.m = "n-f-2"
    end
    if pre[canon] then st.pre = pre[canon]
    elseif rules[canon] then st.fn = rules[canon]
    else error("no GPU rule '" .. word .. "' (known: " .. table.concat(M.names(), ", ") .. ")", 2) end
    steps[#steps + 1] = st
  end
  if #steps == 0 then error("gpu.rule needs a rule name", 2) end
  if not steps[#steps].fn then error("a rule pipeline ends with a rule, not '" .. steps[#steps].name .. "'", 2) end
  for i = 1, #steps - 1 do
    if not steps[i].pre then error("'" .. steps[i].name .. "' is a rule, not a pre-aggregation step", 2) end
  end
  local ok, why = M.available()
  if not ok then error(why, 2) end
  return setmetatable({ name = spec, n = n, f = f, steps = steps }, Rule)
end

-- G, out: device tensors (n x d, d) or raw device float pointers with d given in ctx.d.
function Rule:aggregate(G, out, ctx)
  ctx = ctx or {}
  local n, f = self.n, self.f
  local d = ctx.d or (M.is_tensor(G) and G.n / n)
  local Gp = M.is_tensor(G) and G.ptr or G
  local outp = M.is_tensor(out) and out.ptr or out
  local keep = {}
  for i = 1, #self.steps - 1 do
    local st = self.steps[i]
    local G2, n2, f2 = st.pre(st, Gp, n, d, f, ctx)
    keep[#keep + 1] = G2
    Gp, n, f = G2.ptr, n2, f2
  end
  local last = self.steps[#self.steps]
  if last.args.m == "n-f-2" then last.args = setmetatable({ m = n - f - 2 }, { __index = last.args }) end
  local info = last.fn(last, Gp, n, d, f, outp) or {}
  for _, t in ipairs(keep) do t:free() end
  if #self.steps > 1 then info.selected = nil end  -- indices of pre-aggregated rows, not workers
  return info
end

-- Host tensors G (n x d) and out (d): G goes to a device buffer kept by the rule (page-locked on
-- the host once, so that later copies are asynchronous), copied in column chunks while a
-- per-coordinate rule computes the chunks already there; out comes back.
function Rule:aggregate_host(G, out, ctx)
  local n = self.n
  local d = G:numel() / n
  if not self.Gd or self.Gd.n ~= n * d then
    if self.Gd then self.Gd:free() end
    self.Gd, self.outd = M.new({ n, d }), M.new({ d })
  end
  local ptr = G.ptr
  if self.pinned ~= ptr then
    if self.pinned then C.agt_gpu_host_unregister(self.pinned) end
    -- page-locking can fail (limits); the copy is then synchronous, still correct
    if C.agt_gpu_host_register(ptr, n * d * 4) == 0 then self.pinned = ptr else self.pinned = nil end
  end
  local last = self.steps[#self.steps]
  local code = #self.steps == 1 and coord[last.canon]
  local info
  if code then
    local p = 0
    if last.canon == "trimmed-mean" or last.canon == "phocas" then p = self.f end
    if last.canon == "meamed" then p = arg(last.args, "beta", n - self.f) end
    check(C.agt_gpu_upload_rule(ptr, n, d, self.Gd.ptr, code, p, self.outd.ptr), 2)
    info = {}
  else
    check(C.agt_gpu_upload_rule(ptr, n, d, self.Gd.ptr, C.AGT_GPU_RULE_NONE, 0, nil), 2)
    info = self:aggregate(self.Gd, self.outd, ctx)
  end
  self.outd:download(out)
  return info
end

function Rule:free()
  if self.pinned then C.agt_gpu_host_unregister(self.pinned); self.pinned = nil end
  if self.Gd then self.Gd:free(); self.outd:free(); self.Gd, self.outd = nil, nil end
  for _, st in ipairs(self.steps) do if st.v then st.v:free(); st.v = nil end end
end

-- Centered clipping's centre as bytes (nil for stateless rules).
function Rule:state()
  local st = self.steps[#self.steps]
  if not st.v then return nil end
  local T = require("agt.tensor")
  local h = st.v:to_host()
  return ffi.string(h.ptr, st.v.n * 4)
end

function Rule:set_state(s)
  local st = self.steps[#self.steps]
  if s == nil then if st.v then st.v:free(); st.v = nil end return end
  local T = require("agt.tensor")
  local d = #s / 4
  local h = T.new({ d })
  ffi.copy(h.ptr, s, #s)
  st.v = M.from_host(h)
end

function M.help()
  return [[
agt.gpu — every aggregation rule on an NVIDIA GPU (CUDA). Same names, arguments and results as
the CPU rules (`agt help aggregators`): selections are bit-identical, averages agree to float
rounding. With no device, gpu.available() returns false and the reason.
  gpu.rule(spec, n, f, args):aggregate(G_dev, out_dev)      G and out on the device
  gpu.rule(spec, n, f, args):aggregate_host(G, out)         host tensors; the copy of G to the
                                                             device overlaps per-coordinate rules
Rules: ]] .. table.concat(M.names(), ", ") .. "\n"
end

return M
