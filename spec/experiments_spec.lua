-- agt.experiments: the registry, arguments, per-worker sampling, data attacks,
-- regularization, evaluation, a user's experiment file, cnnet on small CIFAR-format files,
-- and a real training run: fashion-mnist, 5 honest workers, plain averaging, >= 80% test
-- accuracy within 1,500 steps of batch 32.
local E = require("agt.experiments")
local O = require("agt.optim")
local T = require("agt.tensor")
local R = require("agt.rng")
local host = require("agt.host")

local function fresh(name, words, opts)
  local exp = E.load(name, words or {}, opts or { seed = 7 })
  local theta = exp:init_params(T.new({ exp.d }), R.new(7, R.stream_id("init", 0)))
  return exp, theta
end

local function same(a, b) return a:allclose(b, 0, 0) end

-- x is k/n for a whole k (up to rounding)
local function whole(x) return math.abs(x - math.floor(x + 0.5)) < 1e-9 end

describe("agt.experiments", function()
  it("lists the experiments and knows their sizes without loading data", function()
    local names = E.list()
    for _, n in ipairs({ "cnnet", "fashion-cnn", "fashion-mnist", "mnist", "resnet18-cifar10" }) do
      local found = false
      for _, x in ipairs(names) do if x == n then found = true end end
      assert.is_true(found, n)
    end
    assert.are.equal(79510, E.load("fashion-mnist").d)
    assert.are.equal(79510, E.load("mnist", { "download:false" }).d)
    assert.are.equal(1756426, E.load("cnnet").d)
    assert.is_truthy(E.help():find("squared norm", 1, true))
  end)

  it("parses typed arguments and refuses unknown keys, listing the known ones", function()
    local exp = E.load("fashion-mnist", { "batch-size:64", "eval-size:100" })
    assert.are.equal(64, exp.args["batch-size"])
    assert.are.equal(100, exp.args["eval-size"])
    assert.are.equal(32, E.load("fashion-mnist").args["batch-size"])
    local ok, err = pcall(E.load, "fashion-mnist", { "batchsize:64" })
    assert.is_false(ok)
    assert.is_truthy(err:find("unknown key 'batchsize'", 1, true))
    assert.is_truthy(err:find("batch-size, eval-batch-size", 1, true))
    assert.has_error(function() E.load("fashion-mnist", { "batch-size:x" }) end)
    assert.has_error(function() E.load("fashion-mnist", { "shard:dirichlet" }) end)
    assert.has_error(function() E.load("nope") end)
    assert.are.equal("dirichlet", E.load("fashion-mnist", { "noniid-alpha:0.5" }).args.shard)
  end)

  it("gives every worker its own minibatches, reproducibly, and resumes exactly", function()
    local exp, theta = fresh("fashion-mnist", {}, { seed = 3, n = 3 })
    local w1, w2 = exp:worker(1, { seed = 3 }), exp:worker(2, { seed = 3 })
    local g1, g2, g3 = T.new({ exp.d }), T.new({ exp.d }), T.new({ exp.d })
    w1:gradient(theta, g1)
    w2:gradient(theta, g2)
    assert.is_false(same(g1, g2))
    -- a second experiment with the same seed draws the same batches
    local exp2 = E.load("fashion-mnist", {}, { seed = 3, n = 3 })
    local v1 = exp2:worker(1, { seed = 3 })
    v1:gradient(theta, g3)
    assert.is_true(same(g1, g3))
    -- state after k batches, restored in a new worker, continues the same sequence
    local s = w1:state()
    w1:gradient(theta, g1)
    local u1 = E.load("fashion-mnist", {}, { seed = 3, n = 3 }):worker(1, { seed = 3 })
    u1:set_state(s)
    u1:gradient(theta, g3)
    assert.is_true(same(g1, g3))
    assert.has_error(function() u1:set_state("junk") end)
  end)

  it("splits the training set into disjoint shards, non-IID on request", function()
    local exp = E.load("fashion-mnist", { "noniid-alpha:0.1" }, { seed = 1, n = 4 })
    local sh = exp:shards(4)
    local seen, total = {}, 0
    for i = 1, 4 do
      for k = 1, sh[i]:numel() do
        local r = sh[i][k]
        assert.is_nil(seen[r])
        seen[r] = true
      end
      total = total + sh[i]:numel()
    end
    assert.are.equal(60000, total)
  end)

  it("data attacks: label-flip trains on C-1-y, poison-data on scaled pixels and shuffled labels", function()
    local exp, theta = fresh("fashion-mnist", {}, { seed = 5, n = 2 })
    local honest = exp:worker(1, { seed = 5 })
    local flip = exp:worker(1, { seed = 5, poison = "label-flip" })
    local bad = exp:worker(1, { seed = 5, poison = "poison-data" })
    local g, gf, gb = T.new({ exp.d }), T.new({ exp.d }), T.new({ exp.d })
    honest:gradient(theta, g)
    flip:gradient(theta, gf)
    bad:gradient(theta, gb)
    local counts_h, counts_b = {}, {}
    for k = 1, 32 do
      assert.are.equal(9 - honest.y[k], flip.y[k])
      counts_h[honest.y[k]] = (counts_h[honest.y[k]] or 0) + 1
      counts_b[bad.y[k]] = (counts_b[bad.y[k]] or 0) + 1
    end
    assert.are.same(counts_h, counts_b)   -- the same labels, shuffled
    assert.is_true(bad.x:max() <= 0)
    assert.is_true(bad.x:min() < -1e10)
    assert.is_false(same(g, gf))
    assert.has_error(function() exp:worker(1, { poison = "gaussian" }) end)
  end)

  it("l1 adds lambda*sum|w| and l2 adds (lambda/2)*sum w^2 to the loss and their gradients", function()
    local exp, theta = fresh("fashion-mnist", {}, { seed = 2, n = 1 })
    local g0, g1, g2 = T.new({ exp.d }), T.new({ exp.d }), T.new({ exp.d })
    local l0 = exp:worker(1, { seed = 2 }):gradient(theta, g0)
    local l1 = exp:worker(1, { seed = 2, l1 = 0.01 }):gradient(theta, g1)
    local l2 = exp:worker(1, { seed = 2, l2 = 0.01 }):gradient(theta, g2)
    local off = exp:worker(1, { seed = 2, l2 = -1 }):gradient(theta, T.new({ exp.d }))
    assert.are.equal(l0, off)
    local abs, sq = 0, 0
    for i = 1, exp.d do
      abs, sq = abs + math.abs(theta[i]), sq + theta[i] ^ 2
    end
    assert.is_true(math.abs((l1 - l0) - 0.01 * abs) < 1e-4 * abs)
    assert.is_true(math.abs((l2 - l0) - 0.005 * sq) < 1e-4 * sq)
    for _, i in ipairs({ 1, 100, 5000, exp.d }) do
      local s = theta[i] > 0 and 1 or -1
      assert.is_true(math.abs(g1[i] - g0[i] - 0.01 * s) < 1e-6)
      assert.is_true(math.abs(g2[i] - g0[i] - 0.01 * theta[i]) < 1e-6)
    end
  end)

  it("evaluates on the whole test set, or its first eval-size examples", function()
    local exp, theta = fresh("fashion-mnist")
    local m = exp:evaluate(theta)
    assert.are.equal("top1-X-acc", m[1][1])
    assert.are.equal("cross-entropy", m[2][1])
    assert.is_true(m[1][2] >= 0 and m[1][2] <= 1)
    -- chunking does not change the result
    local exp2 = E.load("fashion-mnist", { "eval-batch-size:333" }, { seed = 7 })
    local m2 = exp2:evaluate(theta)
    assert.are.equal(m[1][2], m2[1][2])
    assert.is_true(math.abs(m[2][2] - m2[2][2]) < 1e-9)
    local small = E.load("fashion-mnist", { "eval-size:50" }):evaluate(theta)
    assert.is_true(whole(small[1][2] * 50))
  end)

  it("loads a user's experiment file by path", function()
    local path = host.root .. "/examples/custom_experiment.lua"
    local exp = E.load(path, { "hidden:32", "dropout:0.5" }, { seed = 1, n = 2 })
    assert.are.equal("fashion-tanh", exp.name)
    assert.are.equal(784 * 32 + 32 + 32 * 32 + 32 + 330, exp.d)
    assert.are.equal(64, exp.args["batch-size"])
    local theta = exp:init_params(T.new({ exp.d }), R.new(1, 0))
    local g = T.new({ exp.d })
    local loss = exp:worker(2):gradient(theta, g)
    assert.is_true(loss > 0 and g:norm() > 0)
    assert.is_true(exp:evaluate(theta)[1][2] > 0)
    assert.has_error(function() E.load(path, { "width:3" }) end)
  end)

  it("runs cnnet on small CIFAR-10-format files", function()
    local dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir -p '" .. dir .. "'")
    local rng = R.new(4, 0)
    local function write(name, n)
      local f = assert(io.open(dir .. "/" .. name, "wb"))
      for k = 1, n do
        local rec = { string.char((k - 1) % 10) }
        for _ = 1, 3072 do rec[#rec + 1] = string.char(rng:below(256)) end
        f:write(table.concat(rec))
      end
      f:close()
    end
    for b = 1, 5 do write("data_batch_" .. b .. ".bin", 8) end
    write("test_batch.bin", 6)
    local exp = E.load("cnnet", { "data-dir:" .. dir, "download:false", "batch-size:4", "eval-batch-size:4" },
                       { seed = 1, n = 2 })
    local theta = exp:init_params(T.new({ exp.d }), R.new(1, 0))
    local g = T.new({ exp.d })
    local loss = exp:worker(1):gradient(theta, g)
    assert.is_true(loss > 0 and loss < 10)
    assert.is_true(g:norm() > 0)
    local m = exp:evaluate(theta)
    assert.is_true(whole(m[1][2] * 6))
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("runs resnet18-cifar10 on small CIFAR-10-format files; evaluation re-estimates batch norm at theta", function()
    local dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir -p '" .. dir .. "'")
    local rng = R.new(5, 0)
    local function write(name, n)
      local f = assert(io.open(dir .. "/" .. name, "wb"))
      for k = 1, n do
        local rec = { string.char((k - 1) % 10) }
        for _ = 1, 3072 do rec[#rec + 1] = string.char(rng:below(256)) end
        f:write(table.concat(rec))
      end
      f:close()
    end
    for b = 1, 5 do write("data_batch_" .. b .. ".bin", 4) end
    write("test_batch.bin", 4)
    local words = { "data-dir:" .. dir, "download:false", "batch-size:2", "eval-batch-size:4", "bn-batches:2" }
    local exp = E.load("resnet18-cifar10", words, { seed = 1, n = 2 })
    assert.are.equal(11173962, exp.d)
    local theta = exp:init_params(T.new({ exp.d }), R.new(1, 0))
    local g = T.new({ exp.d })
    local loss = exp:worker(1):gradient(theta, g)
    assert.is_true(loss > 0 and loss < 20, tostring(loss))
    assert.is_true(g:norm() > 0)
    local m1 = exp:evaluate(theta)
    assert.is_true(whole(m1[1][2] * 4))
    -- the running statistics depend on theta alone: a worker's further batches (which move them)
    -- do not change the next evaluation
    exp:worker(2):gradient(theta, g)
    local m2 = exp:evaluate(theta)
    assert.are.equal(m1[2][2], m2[2][2])
    -- a second experiment object, whose model never trained, evaluates the same
    local other = E.load("resnet18-cifar10", words, { seed = 1, n = 2 })
    assert.are.equal(m1[2][2], other:evaluate(theta)[2][2])
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("trains fashion-mnist with 5 honest workers and averaging to >= 80% in 1,500 steps", function()
    local n, steps = 5, 1500
    local exp, theta = fresh("fashion-mnist", {}, { seed = 1, n = n })
    local G = T.new({ n, exp.d })
    local rows, workers = {}, {}
    for i = 1, n do
      rows[i] = G:row(i)
      workers[i] = exp:worker(i, { seed = 1 })
    end
    local agg = T.new({ exp.d })
    local opt = O.new("sgd", {}, exp.d)
    local acc0 = exp:evaluate(theta)[1][2]
    for _ = 1, steps do
      for i = 1, n do workers[i]:gradient(theta, rows[i]) end
      T.rows_mean(G, agg)
      opt:step(theta, agg, 0.1)
    end
    local m = exp:evaluate(theta)
    assert.is_true(acc0 < 0.3)
    assert.is_true(m[1][2] >= 0.80, "test accuracy " .. m[1][2])
    assert.is_true(m[2][2] < 0.6, "cross-entropy " .. m[2][2])
  end)
end)
