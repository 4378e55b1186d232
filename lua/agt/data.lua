-- agt.data — data sets, worker shards and per-worker minibatch samplers.
--
-- Loaders return { train = {x, y}, test = {x, y}, classes = 10, shape = {C, H, W},
-- names = {...} }: x an f32 tensor (N, C, H, W) with pixels in [0, 1], y an i32 tensor (N).
-- Decoding happens in C (src/data.c) straight into the tensors. A loaded set is cached
-- (weakly) per directory, so the workers and the evaluator of one run share one copy: treat
-- its tensors as read-only.
--
-- Downloads (MNIST, CIFAR-10) go to the cache directory ($AGT_DATA, else ~/.cache/agt) and
-- are SHA-256 checked before they are used (src/download.c).
--
-- Shards partition the training indices among n workers (iid, dirichlet, sorted); each
-- worker's sampler draws ITS OWN minibatches from its shard with its own random stream,
-- reshuffling at each epoch; its state (epoch, position, the stream) saves and restores
-- exactly.
--
-- Errors: misuse (a bad argument) raises; a runtime failure (missing, truncated or corrupt
-- file, no network) returns nil and a message.
local F = require("agt.ffi")
local ffi, C = F.ffi, F.C
local T = require("agt.tensor")

local D = {}

local FASHION_DIR = "/usr/share/datasets/fashion-mnist"

-- SHA-256 and sizes of the MNIST files as published (the same bytes on every mirror).
local MNIST_FILES = {
  { name = "train-images-idx3-ubyte.gz", bytes = 9912422,
    sha256 = "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609" },
  { name = "train-labels-idx1-ubyte.gz", bytes = 28881,
    sha256 = "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c" },
  { name = "t10k-images-idx3-ubyte.gz", bytes = 1648877,
    sha256 = "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6" },
  { name = "t10k-labels-idx1-ubyte.gz", bytes = 4542,
    sha256 = "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6" },
}
D.MNIST_MIRRORS = {
  "https://storage.googleapis.com/cvdf-datasets/mnist/",
  "https://ossci-datasets.s3.amazonaws.com/mnist/",
}

D.CIFAR10_ARCHIVE = {
  name = "cifar-10-binary.tar.gz", bytes = 170052171,
  sha256 = "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
}
D.CIFAR10_URLS = { "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz" }
local CIFAR_TRAIN = { "data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                      "data_batch_4.bin", "data_batch_5.bin" }
local CIFAR_TEST = "test_batch.bin"

local NAMES = {
  fashion = { "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
              "Sneaker", "Bag", "Ankle boot" },
  mnist = { "0", "1", "2", "3", "4", "5", "6", "7", "8", "9" },
  cifar10 = { "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
              "truck" },
}

local i64p = ffi.typeof("int64_t *")
local ndim_out = ffi.typeof("int[1]")
local dims_out = ffi.typeof("int64_t[4]")
local rng_t = ffi.typeof("agt_rng")
local RNG_BYTES = ffi.sizeof(rng_t)

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

local function errmsg() return ffi.string(C.agt_last_error()) end

-- The cache directory for downloads: $AGT_DATA, else ~/.cache/agt.
function D.cache_dir()
  local d = os.getenv("AGT_DATA")
  if d and d ~= "" then return d end
  local home = os.getenv("HOME")
  if not home or home == "" then return nil, "neither AGT_DATA nor HOME is set" end
  return home .. "/.cache/agt"
end

-- Downloads url to dest unless dest already holds the file (checked). opts.sha256 and/or
-- opts.bytes say what the file must be; opts.quiet hides the progress bar.
-- Returns true, or nil and a message.
function D.download(url, dest, opts)
  opts = opts or {}
  if type(url) ~= "string" or type(dest) ~= "string" then
    error("download(url, dest, opts) needs two strings", 2)
  end
  if not opts.sha256 and not opts.bytes then
    error("download of " .. url .. " needs opts.sha256 or opts.bytes to check the file", 2)
  end
  local s = C.agt_download_fetch(url, dest, opts.sha256, opts.bytes or 0,
                                 opts.quiet and C.AGT_DOWNLOAD_QUIET or 0)
  if s ~= 0 then return nil, errmsg() end
  return true
end

-- SHA-256 of a file as 64 hex digits, or nil and a message.
function D.sha256(path)
  local hex = ffi.new("char[65]")
  if C.agt_download_sha256_file(path, hex) ~= 0 then return nil, errmsg() end
  return ffi.string(hex)
end

-- An IDX file (gzip'd or not) as a tensor of its own shape: u8 by default; dtype "f32"
-- multiplies each byte by scale (default 1). Returns tensor, or nil and a message.
function D.read_idx(path, dtype, scale)
  dtype = dtype or "u8"
  local nd, dims = ndim_out(), dims_out()
  if C.agt_data_idx_info(path, nd, dims) ~= 0 then return nil, errmsg() end
  local shape = {}
  for i = 0, nd[0] - 1 do shape[i + 1] = tonumber(dims[i]) end
  local t = T.new(shape, dtype)
  if C.agt_data_idx_read(path, t.dt, scale or 1, t.data, t.n) ~= 0 then
    t:free()
    return nil, errmsg()
  end
  return t
end

-- Checks that every label lies in 0..classes-1.
local function check_labels(y, classes, what)
  local p = y.ptr
  for i = 0, y.n - 1 do
    if p[i] < 0 or p[i] >= classes then
      return nil, string.format("%s: label %d at index %d is outside 0..%d", what, p[i], i,
                                classes - 1)
    end
  end
  return true
end

-- Images (N, H, W) and labels (N) from two IDX files into {x = (N, 1, H, W), y}.
local function load_idx_split(img_path, lab_path, classes)
  local nd, dims = ndim_out(), dims_out()
  if C.agt_data_idx_info(img_path, nd, dims) ~= 0 then return nil, errmsg() end
  if nd[0] ~= 3 then
    return nil, string.format("%s: expected images (N, H, W), found %d dimensions", img_path, nd[0])
  end
  local N, H, W = tonumber(dims[0]), tonumber(dims[1]), tonumber(dims[2])
  if C.agt_data_idx_info(lab_path, nd, dims) ~= 0 then return nil, errmsg() end
  if nd[0] ~= 1 or tonumber(dims[0]) ~= N then
    return nil, string.format("%s: expected %d labels to match %s, found shape %s", lab_path, N,
                              img_path, nd[0] == 1 and tostring(tonumber(dims[0])) or
                              (nd[0] .. " dimensions"))
  end
  local x = T.new({ N, 1, H, W }, "f32")
  if C.agt_data_idx_read(img_path, C.AGT_F32, 1 / 255, x.data, x.n) ~= 0 then
    x:free()
    return nil, errmsg()
  end
  local y = T.new({ N }, "i32")
  if C.agt_data_idx_read(lab_path, C.AGT_I32, 1, y.data, y.n) ~= 0 then
    x:free(); y:free()
    return nil, errmsg()
  end
  local ok, msg = check_labels(y, classes, lab_path)
  if not ok then x:free(); y:free(); return nil, msg end
  return { x = x, y = y }
end

-- dir/base.gz, else dir/base (gunzip'd by hand), else nil.
local function find_idx(dir, base)
  for _, p in ipairs({ dir .. "/" .. base .. ".gz", dir .. "/" .. base }) do
    if exists(p) then return p end
  end
  return nil
end

local cache = setmetatable({}, { __mode = "v" })

local function load_mnist_like(kind, dir)
  local paths = {}
  for _, base in ipairs({ "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                          "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte" }) do
    local p = find_idx(dir, base)
    if not p then return nil, base end
    paths[#paths + 1] = p
  end
  local train, msg = load_idx_split(paths[1], paths[2], 10)
  if not train then return nil, nil, msg end
  local test
  test, msg = load_idx_split(paths[3], paths[4], 10)
  if not test then return nil, nil, msg end
  local sh, st = train.x.shape, test.x.shape
  if sh[3] ~= st[3] or sh[4] ~= st[4] then
    return nil, nil, string.format("%s: test images are %dx%d but training images %dx%d",
                                   paths[3], st[3], st[4], sh[3], sh[4])
  end
  return { train = train, test = test, classes = 10, shape = { 1, sh[3], sh[4] },
           names = NAMES[kind], dir = dir, name = kind }
end

local function opts_table(opts, what)
  if opts == nil then return {} end
  if type(opts) ~= "table" then error(what .. " takes a table of options, got " .. type(opts), 3) end
  return opts
end

-- Fashion-MNIST from dir (default /usr/share/datasets/fashion-mnist, Debian's
-- dataset-fashion-mnist). Offline only.
function D.fashion_mnist(opts)
  opts = opts_table(opts, "fashion_mnist")
  local dir = opts.dir or FASHION_DIR
  local key = "fashion\0" .. dir
  if cache[key] then return cache[key] end
  local set, missing, msg = load_mnist_like("fashion", dir)
  if not set then
    if msg then return nil, msg end
    return nil, string.format("Fashion-MNIST: %s(.gz) not found in %s; install the Debian "
                              .. "package dataset-fashion-mnist (make setup) or pass dir = "
                              .. "a directory holding the four IDX files", missing, dir)
  end
  cache[key] = set
  return set
end

-- MNIST from dir (default <cache>/mnist), downloaded there first when missing (unless
-- download = false). opts.mirrors: list of base URLs to try in order. Every .gz file is
-- checked against the published SHA-256 (also one put there by hand), unless verify = false
-- (for a variant of the data set); files gunzip'd by hand are checked by the reader only.
function D.mnist(opts)
  opts = opts_table(opts, "mnist")
  local dir = opts.dir
  if not dir then
    local c, err = D.cache_dir()
    if not c then return nil, err end
    dir = c .. "/mnist"
  end
  local key = "mnist\0" .. dir
  if cache[key] then return cache[key] end
  for _, f in ipairs(MNIST_FILES) do
    local gz = dir .. "/" .. f.name
    if exists(gz) then
      if opts.verify ~= false then
        local hex, err = D.sha256(gz)
        if not hex then return nil, err end
        if hex ~= f.sha256 then
          return nil, string.format("MNIST: %s has SHA-256 %s, expected %s: remove it (it will "
                                    .. "be downloaded again) or replace it with the right file",
                                    gz, hex, f.sha256)
        end
      end
    elseif not exists(dir .. "/" .. f.name:gsub("%.gz$", "")) then
      if opts.download == false then
        return nil, string.format("MNIST: %s not found (download = false)", gz)
      end
      local ok, err, first
      local mirrors = opts.mirrors or D.MNIST_MIRRORS
      for _, base in ipairs(mirrors) do
        ok, err = D.download(base .. f.name, gz,
                             { sha256 = f.sha256, bytes = f.bytes, quiet = opts.quiet })
        if ok then break end
        first = first or err
      end
      if not ok then
        local also = #mirrors > 1 and " (also tried: " .. table.concat(mirrors, ", ", 2) .. ")" or ""
        return nil, "MNIST: " .. first .. also .. "; 'agt help data' lists every file"
      end
    end
  end
  local set, missing, msg = load_mnist_like("mnist", dir)
  if not set then
    return nil, msg or string.format("MNIST: %s not found in %s", missing, dir)
  end
  cache[key] = set
  return set
end

-- Records of several CIFAR-10 batch files into one split {x = (N, 3, 32, 32), y}.
local function load_cifar_split(paths)
  local counts, N = {}, 0
  local rec = ffi.new("int64_t[1]")
  for i, p in ipairs(paths) do
    if C.agt_data_cifar_info(p, rec) ~= 0 then return nil, errmsg() end
    counts[i] = tonumber(rec[0])
    N = N + counts[i]
  end
  local x = T.new({ N, 3, 32, 32 }, "f32")
  local y = T.new({ N }, "i32")
  local at = 0
  for i, p in ipairs(paths) do
    if C.agt_data_cifar_read(p, x.ptr + at * 3072, y.ptr + at, counts[i], 1 / 255) ~= 0 then
      x:free(); y:free()
      return nil, errmsg()
    end
    at = at + counts[i]
  end
  return { x = x, y = y }
end

local function cifar_paths(dir)
  for _, d in ipairs({ dir .. "/cifar-10-batches-bin", dir }) do
    local all = true
    for _, f in ipairs(CIFAR_TRAIN) do all = all and exists(d .. "/" .. f) end
    if all and exists(d .. "/" .. CIFAR_TEST) then
      local train = {}
      for i, f in ipairs(CIFAR_TRAIN) do train[i] = d .. "/" .. f end
      return train, d .. "/" .. CIFAR_TEST
    end
  end
  return nil
end

-- CIFAR-10 (binary version) from dir (default <cache>/cifar-10): data_batch_1..5.bin and
-- test_batch.bin, in dir or dir/cifar-10-batches-bin. Downloaded and extracted there first
-- when missing (unless download = false). opts.urls: archive URLs to try in order.
function D.cifar10(opts)
  opts = opts_table(opts, "cifar10")
  local dir = opts.dir
  if not dir then
    local c, err = D.cache_dir()
    if not c then return nil, err end
    dir = c .. "/cifar-10"
  end
  local key = "cifar10\0" .. dir
  if cache[key] then return cache[key] end
  local train_paths, test_path = cifar_paths(dir)
  if not train_paths then
    if opts.download == false then
      return nil, string.format("CIFAR-10: data_batch_1..5.bin and test_batch.bin not found in "
                                .. "%s or %s/cifar-10-batches-bin (download = false)", dir, dir)
    end
    local A = D.CIFAR10_ARCHIVE
    local archive = dir .. "/" .. A.name
    local ok, err, first
    for _, url in ipairs(opts.urls or D.CIFAR10_URLS) do
      ok, err = D.download(url, archive, { sha256 = A.sha256, bytes = A.bytes, quiet = opts.quiet })
      if ok then break end
      first = first or err
    end
    if not ok then
      return nil, "CIFAR-10: " .. first .. "; or extract it yourself so that " .. dir
                  .. "/cifar-10-batches-bin holds data_batch_1..5.bin and test_batch.bin"
    end
    if C.agt_download_untar(archive, dir) ~= 0 then return nil, "CIFAR-10: " .. errmsg() end
    train_paths, test_path = cifar_paths(dir)
    if not train_paths then
      return nil, "CIFAR-10: " .. archive .. " did not hold the expected batch files"
    end
    os.remove(archive)
  end
  local train, msg = load_cifar_split(train_paths)
  if not train then return nil, msg end
  local test
  test, msg = load_cifar_split({ test_path })
  if not test then return nil, msg end
  local set = { train = train, test = test, classes = 10, shape = { 3, 32, 32 },
                names = NAMES.cifar10, dir = dir, name = "cifar10" }
  cache[key] = set
  return set
end

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
  local r = rng_ptr(opts.rng, "shard")
  if mode ~= "sorted" and r == nil then error(mode .. " shards need opts.rng", 2) end
  local N = y.n
  if n > N then error(string.format("shard: n=%d workers but only N=%d examples", n, N), 2) end
  local classes = opts.classes
  if not classes then
    classes = 0
    local p = y.ptr
    for i = 0, N - 1 do if p[i] + 1 > classes then classes = p[i] + 1 end end
  end
  local order = T.new({ N }, "i64")
  local offsets = ffi.new("int64_t[?]", n + 1)
  F.check(C.agt_data_shard(y.ptr, N, classes, n, code, alpha, opts.min_size or 1, r,
                           order.ptr, offsets), 2)
  local shards = {}
  for j = 0, n - 1 do
    local a, k = tonumber(offsets[j]), tonumber(offsets[j + 1] - offsets[j])
    local s = T.new({ k }, "i64")
    if k > 0 then ffi.copy(s.ptr, order.ptr + a, k * 8) end
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
  local ptr
  if T.is_tensor(idx) then
    if idx.dtype ~= "i64" then error("gather needs i64 indices, got " .. idx.dtype, 2) end
    ptr, k = idx.ptr, k or idx.n
  else
    ptr = ffi.cast(i64p, idx)
  end
  local rows, rl = split.x.shape[1], row_len(split.x)
  if x_out.n < k * rl then
    error(string.format("gather: x_out holds %d values, %d rows of %d need %d", x_out.n, k, rl,
                        k * rl), 2)
  end
  F.check(C.agt_data_gather_f32(split.x.ptr, rows, rl, ptr, k, x_out.ptr), 2)
  if y_out then
    if y_out.n < k then error(string.format("gather: y_out holds %d labels, need %d", y_out.n, k), 2) end
    F.check(C.agt_data_gather_i32(split.y.ptr, rows, ptr, k, y_out.ptr), 2)
  end
  return x_out, y_out
end

-- ---- sampler ------------------------------------------------------------------------------

local Sampler = {}
Sampler.__index = Sampler

local function checksum(idx)
  local h, p = 0, idx.ptr
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
    F.check(C.agt_data_standardize(x.ptr, n, c * h * w), 2)
  elseif kind == "cifarnet" then
    local r = opts.train and rng_ptr(opts.rng, "preprocess") or nil
    if opts.train and r == nil then error("cifarnet training preprocessing needs opts.rng", 2) end
    F.check(C.agt_data_cifarnet(x.ptr, n, c, h, w, opts.train and 1 or 0, r), 2)
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
    for i = 0, rows - 1 do idx.ptr[i] = i end
  else
    if not T.is_tensor(indices) or indices.dtype ~= "i64" then
      error("sampler indices must be an i64 tensor of row indices", 2)
    end
    idx = indices:clone()
    for i = 0, idx.n - 1 do
      local v = idx.ptr[i]
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
  ffi.copy(self.perm.ptr, self.idx.ptr, self.m * 8)
  C.agt_rng_shuffle_i64(self.r, self.perm.ptr, self.m)
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
    local ip = self.perm.ptr + self.pos
    F.check(C.agt_data_gather_f32(x.ptr, self.rows, self.rl, ip, k, x_out.ptr + filled * self.rl), 2)
    if y_out ~= nil then
      F.check(C.agt_data_gather_i32(y.ptr, self.rows, ip, k, y_out.ptr + filled), 2)
    end
    self.pos = self.pos + k
    filled = filled + k
  end
  if self.augment then
    local s = x.shape
    F.check(C.agt_data_cifarnet(x_out.ptr, bs, s[2], s[3], s[4], 1, self.r), 2)
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
    ffi.copy(self.perm.ptr, self.idx.ptr, m * 8)
    C.agt_rng_shuffle_i64(self.r, self.perm.ptr, m)
  end
  ffi.copy(self.r, s:sub(rest + RNG_BYTES), RNG_BYTES)
  self.epoch, self.pos = epoch, epoch > 0 and pos or m
  return self
end

function D.help()
  local files = {}
  for _, f in ipairs(MNIST_FILES) do
    files[#files + 1] = string.format("  mnist/%-27s %9d bytes  SHA-256 %s", f.name, f.bytes, f.sha256)
  end
  local A = D.CIFAR10_ARCHIVE
  files[#files + 1] = string.format("  cifar-10/%-24s %9d bytes  SHA-256 %s", A.name, A.bytes, A.sha256)
  return ([[
Data sets (agt.data)

  fashion-mnist  Fashion-MNIST, 60,000 + 10,000 grey 28x28 images, 10 classes, read from
                 /usr/share/datasets/fashion-mnist (Debian package dataset-fashion-mnist,
                 installed by `make setup`). No network needed.
  mnist          MNIST digits, same shapes. Downloaded on first use into the cache
                 directory and checked against its published SHA-256.
  cifar10        CIFAR-10, 50,000 + 10,000 colour 32x32 images, binary version; the 170 MB
                 archive is downloaded, checked (SHA-256) and extracted on first use.

Cache directory: $AGT_DATA, else ~/.cache/agt (mnist/ and cifar-10/ below it). Without
network access, put the files there by hand (the error message names each file, where it
goes and its SHA-256), or point an experiment at another directory with data-dir:PATH.
Files may be gzip'd or not (IDX); each is validated (magic, dimensions, sizes) when read.

Shards (experiment arg noniid-alpha etc.): iid (a random equal split), dirichlet (for each
label, the shares given to the n workers follow Dirichlet(alpha): small alpha = strong label
skew), sorted (sorted by label, cut in n pieces). Each worker samples its own minibatches
from its own shard with its own random stream, reshuffled every epoch.

Files fetched into the cache directory (put them there by hand when offline):
]] .. table.concat(files, "\n") .. "\n" .. [[
MNIST mirrors: ]] .. table.concat(D.MNIST_MIRRORS, " ") .. "\nCIFAR-10: " ..
  table.concat(D.CIFAR10_URLS, " ") .. " (or extract it into cifar-10/ yourself)")
end

return D
