-- agt.data — data sets (readers, downloads, the cache), and through agt.batches the worker
-- shards and per-worker minibatch samplers.
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
local fs = require("agt.fs")
local B = require("agt.batches")

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

local ndim_out = ffi.typeof("int[1]")
local dims_out = ffi.typeof("int64_t[4]")

local function exists(path) return fs.kind(path) == "file" end

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
  local p = y.raw
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
    if C.agt_data_cifar_read(p, x.raw + at * 3072, y.raw + at, counts[i], 1 / 255) ~= 0 then
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

-- Writes a CIFAR-10 set of random pixels in its binary format into dir (created): train
-- records in each of data_batch_1..5.bin, test in test_batch.bin, labels 0..9 in turn, pixels
-- rng:below(256) (an agt.rng stream) — for benchmarks and specs where the real set is not
-- downloaded. Returns dir.
function D.write_random_cifar10(dir, train, test, rng)
  local ok, err = fs.mkdir_p(dir)
  if not ok then error(err, 2) end
  local buf = ffi.new("uint8_t[?]", 3073)
  local function write(name, records)
    local f = assert(io.open(dir .. "/" .. name, "wb"))
    for k = 0, records - 1 do
      buf[0] = k % 10
      for j = 1, 3072 do buf[j] = rng:below(256) end
      f:write(ffi.string(buf, 3073))
    end
    f:close()
  end
  for _, name in ipairs(CIFAR_TRAIN) do write(name, train) end
  write(CIFAR_TEST, test)
  return dir
end

-- Shards, gathering, preprocessing and samplers live in agt.batches; agt.data is their public
-- face too (D.shard, D.gather, D.preprocess, D.sampler), as experiments and scripts use them.
D.shard, D.gather, D.preprocess, D.sampler = B.shard, B.gather, B.preprocess, B.sampler

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
