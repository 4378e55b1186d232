-- Specs of agt.data: the IDX and CIFAR-10 readers (on small files written here, gzip'd and
-- plain, whole, truncated and foreign), Fashion-MNIST as installed, shards and samplers.
local H = require("helpers")
local write = H.write
local D = require("agt.data")
local T = require("agt.tensor")
local R = require("agt.rng")

local function tmpdir()
  local p = io.popen("mktemp -d /tmp/agt-data-spec-XXXXXX")
  local d = p:read("*l")
  p:close()
  return d
end


local function be32(v)
  return string.char(math.floor(v / 16777216) % 256, math.floor(v / 65536) % 256,
                     math.floor(v / 256) % 256, v % 256)
end

-- An IDX file of unsigned bytes with the given dims; element i (0-based) is f(i).
local function idx_bytes(dims, f)
  local parts = { string.char(0, 0, 8, #dims) }
  local n = 1
  for _, d in ipairs(dims) do parts[#parts + 1] = be32(d); n = n * d end
  local body = {}
  for i = 0, n - 1 do body[#body + 1] = string.char(f(i) % 256) end
  parts[#parts + 1] = table.concat(body)
  return table.concat(parts)
end

local function gzip(path) assert(os.execute("gzip -nf " .. path) == 0) end

-- A small MNIST-like directory: N train and M test images of H×W, label = i % 10.
local function write_mnist_dir(dir, N, M, H, W, gz)
  write(dir .. "/train-images-idx3-ubyte", idx_bytes({ N, H, W }, function(i) return i end))
  write(dir .. "/train-labels-idx1-ubyte", idx_bytes({ N }, function(i) return i % 10 end))
  write(dir .. "/t10k-images-idx3-ubyte", idx_bytes({ M, H, W }, function(i) return 255 - i end))
  write(dir .. "/t10k-labels-idx1-ubyte", idx_bytes({ M }, function(i) return (i * 3) % 10 end))
  if gz then
    for _, f in ipairs({ "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte" }) do
      gzip(dir .. "/" .. f)
    end
  end
end

-- A CIFAR-10 batch of n records: label (r + k) % 10, pixel j = (r + j + k) % 256.
local function cifar_batch(n, k)
  local recs = {}
  for r = 0, n - 1 do
    local px = {}
    for j = 0, 3071 do px[j + 1] = string.char((r + j + k) % 256) end
    recs[#recs + 1] = string.char((r + k) % 10) .. table.concat(px)
  end
  return table.concat(recs)
end

describe("agt.data readers", function()
  local dir
  setup(function() dir = tmpdir() end)
  teardown(function() if dir then os.execute("rm -rf " .. dir) end end)

  it("reads IDX files, plain and gzip'd, into f32 images in [0,1] and i32 labels", function()
    for _, gz in ipairs({ false, true }) do
      local d = dir .. (gz and "/gz" or "/plain")
      os.execute("mkdir -p " .. d)
      write_mnist_dir(d, 12, 5, 4, 3, gz)
      if gz then
        -- not the published MNIST bytes: refused unless told it is a variant
        local no, msg = D.mnist({ dir = d, download = false })
        assert.is_nil(no)
        assert.matches("train%-images%-idx3%-ubyte%.gz has SHA%-256 %x+, expected 440fcabf", msg)
      end
      local set = assert(D.mnist({ dir = d, download = false, verify = false }))
      assert.are.same({ 12, 1, 4, 3 }, set.train.x.shape)
      assert.are.same({ 12 }, set.train.y.shape)
      assert.are.same({ 5, 1, 4, 3 }, set.test.x.shape)
      assert.are.same({ 1, 4, 3 }, set.shape)
      assert.are.equal(10, set.classes)
      assert.are.equal("i32", set.train.y.dtype)
      assert.are.equal(0, set.train.x[1])
      assert.is_true(math.abs(set.train.x[14] - 13 / 255) < 1e-7)
      assert.is_true(math.abs(set.test.x[1] - 1) < 1e-7)
      assert.are.equal(7, set.train.y[8])
      assert.are.equal(2, set.test.y[5])
      assert.is_true(set.train.x:max() <= 1 and set.train.x:min() >= 0)
    end
  end)

  it("reads a single IDX file in its own shape", function()
    write(dir .. "/one-idx2", idx_bytes({ 3, 2 }, function(i) return 10 * i end))
    local t = assert(D.read_idx(dir .. "/one-idx2"))
    assert.are.same({ 3, 2 }, t.shape)
    assert.are.equal("u8", t.dtype)
    assert.are.equal(50, t[6])
  end)

  it("refuses a truncated IDX file, naming it", function()
    local d = dir .. "/cut"
    os.execute("mkdir -p " .. d)
    write_mnist_dir(d, 12, 5, 4, 3, false)
    local p = d .. "/train-images-idx3-ubyte"
    local f = assert(io.open(p, "rb")); local s = f:read("*a"); f:close()
    write(p, s:sub(1, #s - 7))
    local set, msg = D.mnist({ dir = d, download = false, verify = false })
    assert.is_nil(set)
    assert.matches("train%-images%-idx3%-ubyte", msg)
    assert.matches("truncated", msg)
  end)

  it("refuses a truncated gzip'd IDX file", function()
    local d = dir .. "/cutgz"
    os.execute("mkdir -p " .. d)
    write_mnist_dir(d, 40, 5, 8, 8, true)
    local p = d .. "/train-images-idx3-ubyte.gz"
    local f = assert(io.open(p, "rb")); local s = f:read("*a"); f:close()
    write(p, s:sub(1, math.floor(#s / 2)))
    local set, msg = D.mnist({ dir = d, download = false, verify = false })
    assert.is_nil(set)
    assert.matches("train%-images%-idx3%-ubyte%.gz", msg)
    assert.matches("truncated", msg)
  end)

  it("refuses a file with the wrong magic", function()
    write(dir .. "/foreign", "PK\3\4 this is a zip file, not IDX at all")
    local t, msg = D.read_idx(dir .. "/foreign")
    assert.is_nil(t)
    assert.matches("not an IDX file", msg)
    assert.matches("foreign", msg)
    -- images where labels belong
    local d = dir .. "/swapped"
    os.execute("mkdir -p " .. d)
    write_mnist_dir(d, 12, 5, 4, 3, false)
    os.execute("cp " .. d .. "/train-images-idx3-ubyte " .. d .. "/train-labels-idx1-ubyte")
    local set, msg2 = D.mnist({ dir = d, download = false, verify = false })
    assert.is_nil(set)
    assert.matches("train%-labels", msg2)
  end)

  it("says which file is missing and how to get it", function()
    local set, msg = D.fashion_mnist({ dir = dir .. "/nowhere" })
    assert.is_nil(set)
    assert.matches("dataset%-fashion%-mnist", msg)
    assert.matches("train%-images%-idx3%-ubyte", msg)
  end)

  it("reads CIFAR-10 binary batches and refuses truncated or foreign ones", function()
    local d = dir .. "/cifar/cifar-10-batches-bin"
    os.execute("mkdir -p " .. d)
    for k = 1, 5 do write(d .. "/data_batch_" .. k .. ".bin", cifar_batch(3, k)) end
    write(d .. "/test_batch.bin", cifar_batch(2, 0))
    local set = assert(D.cifar10({ dir = dir .. "/cifar", download = false }))
    assert.are.same({ 15, 3, 32, 32 }, set.train.x.shape)
    assert.are.same({ 2, 3, 32, 32 }, set.test.x.shape)
    assert.are.same({ 3, 32, 32 }, set.shape)
    -- record 4 of the train split is record 1 of batch 2: label 3, pixel j = (1 + j + 2)
    assert.are.equal(3, set.train.y[5])
    assert.is_true(math.abs(set.train.x[4 * 3072 + 1025] - ((1 + 1024 + 2) % 256) / 255) < 1e-7)
    assert.are.equal(1, set.test.y[2])

    local d2 = dir .. "/cifar2"
    os.execute("mkdir -p " .. d2)
    for k = 1, 5 do write(d2 .. "/data_batch_" .. k .. ".bin", cifar_batch(3, k)) end
    write(d2 .. "/test_batch.bin", cifar_batch(2, 0):sub(1, 3073 + 100))
    local s2, msg = D.cifar10({ dir = d2, download = false })
    assert.is_nil(s2)
    assert.matches("test_batch%.bin", msg)
    assert.matches("3073", msg)
    local bad = cifar_batch(2, 0)
    write(d2 .. "/test_batch.bin", string.char(200) .. bad:sub(2))
    s2, msg = D.cifar10({ dir = d2, download = false })
    assert.is_nil(s2)
    assert.matches("label 200", msg)
    s2, msg = D.cifar10({ dir = dir .. "/nocifar", download = false })
    assert.is_nil(s2)
    assert.matches("data_batch_1", msg)
  end)

  it("writes a random CIFAR-10 set that loads, the same bytes for the same stream", function()
    local a = D.write_random_cifar10(dir .. "/rand-a", 7, 3, R.new(4, "x"))
    local b = D.write_random_cifar10(dir .. "/rand-b", 7, 3, R.new(4, "x"))
    local c = D.write_random_cifar10(dir .. "/rand-c", 7, 3, R.new(5, "x"))
    local set = assert(D.cifar10({ dir = a, download = false }))
    assert.are.same({ 35, 3, 32, 32 }, set.train.x.shape)
    assert.are.same({ 3, 3, 32, 32 }, set.test.x.shape)
    for i = 1, 35 do assert.are.equal((i - 1) % 7 % 10, set.train.y[i]) end
    local function bytes(d, f) return H.read(d .. "/" .. f) end
    assert.are.equal(bytes(a, "data_batch_3.bin"), bytes(b, "data_batch_3.bin"))
    assert.are.equal(bytes(a, "test_batch.bin"), bytes(b, "test_batch.bin"))
    assert.are_not.equal(bytes(a, "data_batch_3.bin"), bytes(c, "data_batch_3.bin"))
    -- the pixels are the stream's draws, in order: record 1 of batch 1, its first pixel
    local r = R.new(4, "x")
    assert.are.equal(r:below(256), bytes(a, "data_batch_1.bin"):byte(2))
  end)

  it("loads the installed Fashion-MNIST", function()
    local set = assert(D.fashion_mnist())
    assert.are.same({ 60000, 1, 28, 28 }, set.train.x.shape)
    assert.are.same({ 10000, 1, 28, 28 }, set.test.x.shape)
    local count = {}
    for i = 1, set.train.y.n do local c = set.train.y[i]; count[c] = (count[c] or 0) + 1 end
    for c = 0, 9 do assert.are.equal(6000, count[c]) end
    assert.is_true(set.train.x:max() == 1 and set.train.x:min() == 0)
    -- loaded once, shared
    assert.are.equal(set, D.fashion_mnist())
  end)
end)

-- Labels 0..9 of N examples, label i % 10 (balanced).
local function labels(N)
  local y = T.new({ N }, "i32")
  for i = 1, N do y[i] = (i - 1) % 10 end
  return y
end

local function is_partition(shards, N)
  local seen, total = {}, 0
  for _, s in ipairs(shards) do
    for i = 1, s.n do
      local v = s[i]
      if v < 0 or v >= N or seen[v] then return false end
      seen[v] = true
    end
    total = total + s.n
  end
  return total == N
end

local function mean_top_share(shards, y)
  local acc = 0
  for _, s in ipairs(shards) do
    local cnt, top = {}, 0
    for i = 1, s.n do
      local c = y[s[i] + 1]
      cnt[c] = (cnt[c] or 0) + 1
      if cnt[c] > top then top = cnt[c] end
    end
    acc = acc + top / s.n
  end
  return acc / #shards
end

describe("agt.data shards", function()
  local y = labels(3000)

  it("iid: a partition into near-equal random parts, reproducible from the seed", function()
    local a = D.shard(y, 7, { mode = "iid", rng = R.new(1, 1) })
    assert.are.equal(7, #a)
    assert.is_true(is_partition(a, 3000))
    for _, s in ipairs(a) do assert.is_true(s.n == 428 or s.n == 429) end
    local b = D.shard(y, 7, { rng = R.new(1, 1) })
    assert.are.same(a[3]:totable(), b[3]:totable())
    local c = D.shard(y, 7, { rng = R.new(2, 1) })
    assert.are_not.same(a[3]:totable(), c[3]:totable())
    assert.is_true(mean_top_share(a, y) < 0.2)
  end)

  it("dirichlet: a partition, skewed for small alpha and near-iid for large alpha", function()
    local skew = D.shard(y, 10, { mode = "dirichlet", alpha = 0.1, rng = R.new(3, 1), min_size = 10 })
    assert.is_true(is_partition(skew, 3000))
    for _, s in ipairs(skew) do assert.is_true(s.n >= 10) end
    local flat = D.shard(y, 10, { mode = "dirichlet", alpha = 1000, rng = R.new(3, 1) })
    assert.is_true(is_partition(flat, 3000))
    assert.is_true(mean_top_share(skew, y) > 0.5)
    assert.is_true(mean_top_share(flat, y) < 0.2)
  end)

  it("sorted: each worker holds a run of sorted labels", function()
    local s = D.shard(y, 10, { mode = "sorted" })
    assert.is_true(is_partition(s, 3000))
    for j, sh in ipairs(s) do
      for i = 1, sh.n do assert.are.equal(j - 1, y[sh[i] + 1]) end
    end
  end)

  it("refuses bad arguments with the value and what was expected", function()
    assert.has_error(function() D.shard(y, 4, { mode = "random", rng = R.new(1, 1) }) end,
                     "shard mode must be iid, dirichlet or sorted, got 'random'")
    assert.has_error(function() D.shard(y, 4, { mode = "dirichlet", alpha = 0, rng = R.new(1, 1) }) end)
    assert.has_error(function() D.shard(y, 4, { mode = "iid" }) end, "iid shards need opts.rng")
    assert.has_error(function() D.shard(y, 5000, { rng = R.new(1, 1) }) end)
  end)
end)

describe("agt.data sampler", function()
  -- A split whose row i holds (i, -i), so a batch tells which rows it drew.
  local N = 50
  local split = { x = T.new({ N, 1, 1, 2 }), y = labels(N) }
  for i = 0, N - 1 do split.x[2 * i + 1] = i; split.x[2 * i + 2] = -i end
  local shard = D.shard(split.y, 3, { rng = R.new(9, 0) })[2]   -- 17 rows

  local function draw(s, bs)
    local x, yb = T.new({ bs, 1, 1, 2 }), T.new({ bs }, "i32")
    s:next(bs, x, yb)
    local rows = {}
    for i = 1, bs do
      rows[i] = x[2 * i - 1]
      assert.are.equal(-rows[i], x[2 * i])
      assert.are.equal(rows[i] % 10, yb[i])
    end
    return rows
  end

  it("draws each shard row once per epoch, in a new order each epoch", function()
    local s = D.sampler(split, shard, R.new(5, 1))
    assert.are.equal(17, s:size())
    local e1 = draw(s, 17)
    local e2 = draw(s, 17)
    local want = shard:totable()
    table.sort(want)
    local a, b = { unpack(e1) }, { unpack(e2) }
    table.sort(a); table.sort(b)
    assert.are.same(want, a)
    assert.are.same(want, b)
    assert.are_not.same(e1, e2)
    assert.are.equal(2, s.epoch)
  end)

  it("is reproducible from its stream, and streams differ", function()
    local s1, s2 = D.sampler(split, shard, R.new(5, 1)), D.sampler(split, shard, R.new(5, 1))
    local s3 = D.sampler(split, shard, R.new(5, 2))
    for _ = 1, 5 do
      local a = draw(s1, 7)
      assert.are.same(a, draw(s2, 7))
    end
    assert.are_not.same(draw(D.sampler(split, shard, R.new(5, 1)), 17), draw(s3, 17))
  end)

  it("saves and restores its state exactly, mid-epoch and across epochs", function()
    for _, k in ipairs({ 0, 1, 2, 5 }) do
      local s = D.sampler(split, shard, R.new(11, 3))
      for _ = 1, k do draw(s, 7) end
      local st = s:state()
      local ahead = {}
      for i = 1, 6 do ahead[i] = draw(s, 7) end
      -- a fresh sampler (fresh stream of any seed) restored from the state
      local t = D.sampler(split, shard, R.new(999, 0))
      t:set_state(st)
      for i = 1, 6 do assert.are.same(ahead[i], draw(t, 7)) end
      -- and the original, rewound
      s:set_state(st)
      for i = 1, 6 do assert.are.same(ahead[i], draw(s, 7)) end
    end
  end)

  it("refuses a state from another shard or garbage", function()
    local s = D.sampler(split, shard, R.new(1, 1))
    local other = D.sampler(split, nil, R.new(1, 1))
    assert.has_error(function() other:set_state(s:state()) end)
    assert.has_error(function() s:set_state("nonsense") end)
  end)

  it("refuses a batch buffer too small and indices out of range", function()
    local s = D.sampler(split, shard, R.new(1, 1))
    assert.has_error(function() s:next(8, T.new({ 4, 1, 1, 2 })) end)
    assert.has_error(function() D.sampler(split, T.from_table({ 0, 50 }, "i64"), R.new(1, 1)) end)
  end)

  it("applies cifarnet augmentation, still reproducible and exactly resumable", function()
    local imgs = { x = R.new(4, 4):uniform(T.new({ 20, 3, 32, 32 }), 0, 1), y = labels(20) }
    local s = D.sampler(imgs, nil, R.new(8, 1), { augment = "cifarnet" })
    local x, yb = T.new({ 6, 3, 32, 32 }), T.new({ 6 }, "i32")
    s:next(6, x, yb)
    for b = 1, 6 do
      local img = x:row(b)
      assert.is_true(math.abs(img:mean()) < 1e-4)
      assert.is_true(math.abs(img:norm() ^ 2 / img:numel() - 1) < 1e-3)
    end
    local st = s:state()
    local a = s:next(6, x, yb):clone()
    local t = D.sampler(imgs, nil, R.new(1, 1), { augment = "cifarnet" })
    t:set_state(st)
    local x2 = T.new({ 6, 3, 32, 32 })
    t:next(6, x2, yb)
    assert.is_true(x2:allclose(a, 0, 0))
    -- evaluation preprocessing: standardisation only
    local e = imgs.x:narrow(1, 2):clone()
    D.preprocess(e, "cifarnet")
    local f = imgs.x:narrow(1, 2):clone()
    D.preprocess(f, "standardize")
    assert.is_true(e:allclose(f, 0, 0))
    assert.has_error(function() D.preprocess(e, "cifarnet", { train = true }) end)
    assert.has_error(function() D.sampler(imgs, nil, R.new(1, 1), { augment = "zoom" }) end)
  end)

  it("draws batches from the real Fashion-MNIST shards", function()
    local set = assert(D.fashion_mnist())
    local shards = D.shard(set.train.y, 11, { mode = "dirichlet", alpha = 0.5, rng = R.new(1, 0) })
    local x, yb = T.new({ 32, 1, 28, 28 }), T.new({ 32 }, "i32")
    local s = D.sampler(set.train, shards[4], R.new(1, 4))
    s:next(32, x, yb)
    assert.is_true(x:max() <= 1 and x:sum() > 0)
    -- every drawn label is one that the shard holds
    local held = {}
    for i = 1, shards[4].n do held[set.train.y[shards[4][i] + 1]] = true end
    for i = 1, 32 do assert.is_true(held[yb[i]]) end
  end)
end)
