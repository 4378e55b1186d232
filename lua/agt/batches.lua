-- agt.batches — what turns a data set into each worker's minibatches: shards of the training
-- indices among n workers (iid, dirichlet, sorted), gathering rows by index, in-place
-- preprocessing of image batches, and the per-worker sampler. Reached as agt.data's D.shard,
-- D.gather, D.preprocess and D.sampler.
--
-- Invariants: every worker draws ITS OWN minibatches from its shard with its own random stream,
-- reshuffling at each epoch; a sampler's state (epoch, position, the stream) saves and restores
-- exactly, and is refused when it belongs to another shard (a checksum of the indices).
-- Errors: misuse (a bad argument) raises.
local F = require("agt.ffi")
local ffi, C = F.ffi, F.C
local T = require("agt.tensor")

local D = {}

local i64p = ffi.typeof("int64_t *")
local rng_t = ffi.typeof("agt_rng")
local RNG_BYTES = ffi.sizeof(rng_t)

-- ---- shards -------------------------------------------------------------------------------

local SHARD_MODES = { iid = 0, sorted = 1, dirichlet = 2 }

local function rng_ptr(rng, what)
  if rng == nil then return nil end
  if type(rng) == "table" and rng.s ~= nil then return rng.s end
  if type(rng) == "cdata" and ffi.istype("agt_rng *", rng) then return rng end
  if type(rng) == "cdata" and ffi.istype(rng_t, rng) then return rng end
  error(what .. ": rng must be an agt.rng stream (R.new(seed, stream)), got " .. type(rng), 3)
end

-- Partitions the indices 0..N-1 of labels y (i32 tensor) among n workers.
-- opts: mode = "iid" (default) | "dirichlet" | "sorted"; alpha (dirichlet, default 0.5);
-- rng (needed by iid and dirichlet); classes (default max label + 1); min_size (dirichlet:
-- fewest examples per worker, default 1). Returns a list of n i64 tensors of 0-based row
-- indices.
function D.shard(y, n, opts)
  opts = opts or {}
  if not T.is_tensor(y) or y.dtype ~= "i32" then error("shard needs labels as an i32 tensor", 2) end
  if type(n) ~= "number" or n < 1 or n ~= math.floor(n) then
    error("shard needs a worker count n >= 1, got " .. tostring(n), 2)
  end
  local mode = opts.mode or "iid"
  local code = SHARD_MODES[mode]
  if not code then
    error("shard mode must be iid, dirichlet or sorted, got '" .. tostring(mode) .. "'", 2)
  end
  local alpha = opts.alpha or 0.5
  if mode == "dirichlet" and (type(alpha) ~= "number" or not (alpha > 0) or alpha == math.huge) then
    error("dirichlet shards need alpha > 0, got " .. tostring(alpha), 2)
  end
  for _, key in ipairs({ "classes", "min_size" }) do
    local v = opts[key]
    if v ~= nil and (type(v) ~= "number" or v ~= math.floor(v) or v < 1 or v > 2 ^ 31 - 1) then
      error(string.format("shard: opts.%s must be an integer >= 1, got %s", key, tostring(v)), 2)
    end
  end
  local r = rng_ptr(opts.rng, "shard")
  if mode ~= "sorted" and r == nil then error(mode .. " shards need opts.rng", 2) end
  local N = y.n
  if n > N then error(string.format("shard: n=%d workers but only N=%d examples", n, N), 2) end
  local classes = opts.classes
  if not classes then
    classes = 0
    local p = y.raw
    for i = 0, N - 1 do if p[i] + 1 > classes then classes = p[i] + 1 end end
  end
  local order = T.new({ N }, "i64")
  local offsets = ffi.new("int64_t[?]", n + 1)
  F.check(C.agt_data_shard(y.raw, N, classes, n, code, alpha, opts.min_size or 1, r,
                           order.raw, offsets), 2)
  local shards = {}
  for j = 0, n - 1 do
    local a, k = tonumber(offsets[j]), tonumber(offsets[j + 1] - offsets[j])
    local s = T.new({ k }, "i64")
    if k > 0 then ffi.copy(s.raw, order.raw + a, k * 8) end
    shards[j + 1] = s
  end
  order:free()
  return shards
end

-- ---- gather -------------------------------------------------------------------------------

local function row_len(x)
  local n1 = x.shape[1]
  return n1 > 0 and x.n / n1 or 0
end

-- Copies rows idx (i64 tensor of 0-based indices, or a cdata pointer with count k) of
-- split.x / split.y into x_out / y_out (y_out may be nil).
function D.gather(split, idx, x_out, y_out, k)
  if type(split) ~= "table" or not T.is_tensor(split.x) or split.x.dtype ~= "f32"
     or (y_out ~= nil and (not T.is_tensor(split.y) or split.y.dtype ~= "i32")) then
    error("gather needs a split {x = f32 tensor, y = i32 tensor}", 2)
  end
  if not T.is_tensor(x_out) or x_out.dtype ~= "f32" then error("gather: x_out must be an f32 tensor", 2) end
  if y_out ~= nil and (not T.is_tensor(y_out) or y_out.dtype ~= "i32") then
    error("gather: y_out must be an i32 tensor", 2)
  end
  if k ~= nil and (type(k) ~= "number" or k < 0 or k ~= math.floor(k)) then
    error("gather: k must be a count >= 0, got " .. tostring(k), 2)
  end
  local ptr
  if T.is_tensor(idx) then
    if idx.dtype ~= "i64" then error("gather needs i64 indices, got " .. idx.dtype, 2) end
    if k and k > idx.n then error(string.format("gather: k = %d indices of %d", k, idx.n), 2) end
    ptr, k = idx.raw, k or idx.n
  else
    if k == nil then error("gather: a pointer of indices needs its count k", 2) end
    local room
    ptr, room = T.unchecked(idx, "gather", 2)   -- a checked pointer (AGT_DEBUG) says how far it reaches
    if room and room < k then error(string.format("gather: k = %d indices, the pointer reaches %d", k, room), 2) end
    ptr = ffi.cast(i64p, ptr)
  end
  local rows, rl = split.x.shape[1], row_len(split.x)
  if x_out.n < k * rl then
    error(string.format("gather: x_out holds %d values, %d rows of %d need %d", x_out.n, k, rl,
                        k * rl), 2)
  end
  F.check(C.agt_data_gather_f32(split.x.raw, rows, rl, ptr, k, x_out.raw), 2)
  if y_out then
    if y_out.n < k then error(string.format("gather: y_out holds %d labels, need %d", y_out.n, k), 2) end
    F.check(C.agt_data_gather_i32(split.y.raw, rows, ptr, k, y_out.raw), 2)
  end
  return x_out, y_out
end

-- ---- sampler ------------------------------------------------------------------------------

local Sampler = {}
Sampler.__index = Sampler

local function checksum(idx)
  local h, p = 0, idx.raw
  for i = 0, idx.n - 1 do h = (h * 31 + tonumber(p[i]) + 1) % 2147483647 end
  return h
end

-- ---- preprocessing ------------------------------------------------------------------------

local function image_dims(x, what)
  if not T.is_tensor(x) or x.dtype ~= "f32" or x:dim() ~= 4 then
    error(what .. " needs an f32 tensor of images (N, C, H, W)", 3)
  end
  local s = x.shape
  return s[1], s[2], s[3], s[4]
end

-- In place on a batch x (f32, (N, C, H, W), pixels in [0, 1]):
--   "standardize": each image to zero mean, unit deviation (TF's per_image_standardization);
--   "cifarnet": the original system's CIFAR-10 preprocessing; with opts.train and opts.rng,
--   random crop (pad 4), flip, brightness and contrast, then standardisation; else only the
--   standardisation (as for evaluation).
function D.preprocess(x, kind, opts)
  opts = opts or {}
  local n, c, h, w = image_dims(x, "preprocess")
  if kind == "standardize" then
    F.check(C.agt_data_standardize(x.raw, n, c * h * w), 2)
  elseif kind == "cifarnet" then
    local r = opts.train and rng_ptr(opts.rng, "preprocess") or nil
    if opts.train and r == nil then error("cifarnet training preprocessing needs opts.rng", 2) end
    F.check(C.agt_data_cifarnet(x.raw, n, c, h, w, opts.train and 1 or 0, r), 2)
  else
    error("preprocess kind must be 'standardize' or 'cifarnet', got '" .. tostring(kind) .. "'", 2)
  end
  return x
end

-- A sampler over the rows `indices` (i64 tensor, 0-based; nil = every row) of split
-- ({x, y}), drawing with rng (an agt.rng stream, which the sampler then uses: give each
-- worker its own). opts.augment = "cifarnet" applies that training preprocessing to each
-- batch drawn (its random draws come from the same stream, so the state still restores
-- exactly).
function D.sampler(split, indices, rng, opts)
  opts = opts or {}
  if type(split) ~= "table" or not T.is_tensor(split.x) or not T.is_tensor(split.y) then
    error("sampler needs a split {x = f32 tensor, y = i32 tensor}", 2)
  end
  if split.x.dtype ~= "f32" or split.y.dtype ~= "i32" then
    error("sampler needs split.x f32 and split.y i32", 2)
  end
  local rows = split.x.shape[1]
  if split.y.n ~= rows then
    error(string.format("sampler: split.x has %d rows but split.y %d labels", rows, split.y.n), 2)
  end
  local idx
  if indices == nil then
    idx = T.new({ rows }, "i64")
    for i = 0, rows - 1 do idx.raw[i] = i end
  else
    if not T.is_tensor(indices) or indices.dtype ~= "i64" then
      error("sampler indices must be an i64 tensor of row indices", 2)
    end
    idx = indices:clone()
    for i = 0, idx.n - 1 do
      local v = idx.raw[i]
      if v < 0 or v >= rows then
        error(string.format("sampler: index %d is outside the split's rows 0..%d", tonumber(v),
                            rows - 1), 2)
      end
    end
  end
  if idx.n == 0 then error("sampler needs at least one index, got an empty shard", 2) end
  local r = rng_ptr(rng, "sampler")
  if r == nil then error("sampler needs an rng", 2) end
  local augment = opts.augment
  if augment ~= nil and augment ~= "cifarnet" then
    error("sampler augment must be nil or 'cifarnet', got '" .. tostring(augment) .. "'", 2)
  end
  if augment then image_dims(split.x, "sampler augment") end
  local self = setmetatable({
    augment = augment,
    split = split, idx = idx, m = idx.n, rl = row_len(split.x), rows = rows,
    perm = T.new({ idx.n }, "i64"), pos = idx.n, epoch = 0, rng = rng, r = r,
    epoch_rng = rng_t(), ck = checksum(idx),
  }, Sampler)
  return self
end

function Sampler:size() return self.m end

-- Starts the next epoch: the stream as it is now is remembered (to rebuild this
-- epoch's order on restore), then the shard is shuffled.
function Sampler:_new_epoch()
  ffi.copy(self.epoch_rng, self.r, RNG_BYTES)
  ffi.copy(self.perm.raw, self.idx.raw, self.m * 8)
  C.agt_rng_shuffle_i64(self.r, self.perm.raw, self.m)
  self.pos = 0
  self.epoch = self.epoch + 1
end

-- Fills the first bs rows of x_out (f32, at least bs × C×H×W values) and of y_out (i32;
-- optional) with the next bs examples of this worker's shard. A batch that runs past the
-- end of an epoch continues into the next, freshly shuffled, so every batch is full.
function Sampler:next(bs, x_out, y_out)
  if type(bs) ~= "number" or bs < 1 or bs ~= math.floor(bs) then
    error("next(bs, x_out, y_out) needs a batch size >= 1, got " .. tostring(bs), 2)
  end
  if not T.is_tensor(x_out) or x_out.dtype ~= "f32" or x_out.n < bs * self.rl then
    error(string.format("next: x_out must be an f32 tensor of at least %d x %d values", bs,
                        self.rl), 2)
  end
  if y_out ~= nil and (not T.is_tensor(y_out) or y_out.dtype ~= "i32" or y_out.n < bs) then
    error(string.format("next: y_out must be an i32 tensor of at least %d labels", bs), 2)
  end
  local x, y = self.split.x, self.split.y
  local filled = 0
  while filled < bs do
    if self.pos >= self.m then self:_new_epoch() end
    local k = math.min(bs - filled, self.m - self.pos)
    local ip = self.perm.raw + self.pos
    F.check(C.agt_data_gather_f32(x.raw, self.rows, self.rl, ip, k, x_out.raw + filled * self.rl), 2)
    if y_out ~= nil then
      F.check(C.agt_data_gather_i32(y.raw, self.rows, ip, k, y_out.raw + filled), 2)
    end
    self.pos = self.pos + k
    filled = filled + k
  end
  if self.augment then
    local s = x.shape
    F.check(C.agt_data_cifarnet(x_out.raw, bs, s[2], s[3], s[4], 1, self.r), 2)
  end
  return x_out, y_out
end

local STATE_TAG = "agt.sampler.1"

-- The exact state: epoch, position, the stream at the epoch's start (rebuilds the order)
-- and the stream now.
function Sampler:state()
  return string.format("%s %d %d %d %d\n", STATE_TAG, self.m, self.ck, self.epoch, self.pos)
      .. ffi.string(self.epoch_rng, RNG_BYTES) .. ffi.string(self.r, RNG_BYTES)
end

function Sampler:set_state(s)
  if type(s) ~= "string" then error("sampler state must be a string, got " .. type(s), 2) end
  local tag, m, ck, epoch, pos, rest = s:match("^(%S+) (%d+) (%d+) (%d+) (%d+)\n()")
  if tag ~= STATE_TAG or #s ~= rest - 1 + 2 * RNG_BYTES then
    error("not a sampler state (saved by a different agt version, or damaged)", 2)
  end
  m, ck, epoch, pos = tonumber(m), tonumber(ck), tonumber(epoch), tonumber(pos)
  if m ~= self.m or ck ~= self.ck then
    error(string.format("sampler state is for a different shard (%d indices, checksum %d; this "
                        .. "sampler has %d, checksum %d)", m, ck, self.m, self.ck), 2)
  end
  if pos > m then error("sampler state has position " .. pos .. " past the shard's " .. m, 2) end
  ffi.copy(self.epoch_rng, s:sub(rest, rest + RNG_BYTES - 1), RNG_BYTES)
  if epoch > 0 then
    ffi.copy(self.r, self.epoch_rng, RNG_BYTES)
    ffi.copy(self.perm.raw, self.idx.raw, m * 8)
    C.agt_rng_shuffle_i64(self.r, self.perm.raw, m)
  end
  ffi.copy(self.r, s:sub(rest + RNG_BYTES), RNG_BYTES)
  self.epoch, self.pos = epoch, epoch > 0 and pos or m
  return self
end

return D
