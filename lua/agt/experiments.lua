-- agt.experiments — the registry and loader of experiments (one model + one data set).
--
--   local E = require("agt.experiments")
--   E.list() -> sorted names; E.help() -> text
--   local exp = E.load("fashion-mnist", {"batch-size:64"}, {seed = 1, n = 5})
--   exp.name, exp.d, exp.args, exp.model (an agt.nn model)
--   exp:init_params(theta, rng)
--   local w = exp:worker(i, {seed = s, poison = nil|"label-flip"|"poison-data", l1 = 0, l2 = 0})
--   local loss = w:gradient(theta, grad)     -- mean loss of its own minibatch (+ penalties)
--   w:state() -> string; w:set_state(s)      -- exact resume of its sampling and dropout
--   exp:evaluate(theta) -> { {"top1-X-acc", a}, {"cross-entropy", l} }
--
-- An experiment is a Lua file returning a table (lua/experiments/NAME.lua, or any path):
--   { name = "...", doc = "...", shape = {C, H, W}, classes = K,
--     args = { {name = "...", default = ..., doc = "..."} },   -- extra keys (optional)
--     defaults = { ["eval-batch-size"] = 500 },                 -- other defaults (optional)
--     data = function(args, D) return D.fashion_mnist{ dir = args["data-dir"] } end,
--     model = function(nn, args) return nn.sequential({C, H, W}, { ... }) end,
--     preprocess = function(x, B, args) ... end }               -- in place on a batch (optional)
--
-- Invariants. Every worker draws its own minibatches from its own shard of the training set
-- with its own random stream (seed, worker index): no two workers share a batch. The shards
-- are a function of the experiment seed only, so every process of a distributed run computes
-- the same split. The data set is read once per process and shared by the experiments that
-- use it. Evaluation covers the whole test set unless eval-size says otherwise.
local ffi = require("ffi")
local F = require("agt.ffi")
local T = require("agt.tensor")
local R = require("agt.rng")
local U = require("agt.util")
local kv = require("agt.kv")
local P = require("agt.plugins")
local contract = require("agt.contract")
local D = require("agt.data")
local nn = require("agt.nn")
local Bk = require("agt.backend")
local C = F.C

local E = {}

local function nonneg(v) return v >= 0, "must be >= 0" end
local function pos(v) return v >= 1, "must be >= 1" end

-- The keys every experiment accepts (an experiment may change a default or add keys).
local COMMON = {
  { name = "batch-size", default = 32, type = "integer", check = pos, doc = "examples per worker minibatch" },
  { name = "eval-batch-size", default = 1000, type = "integer", check = pos,
    doc = "examples per forward pass in evaluation (memory only; the result does not depend on it)" },
  { name = "eval-size", default = 0, type = "integer", check = nonneg,
    doc = "test examples evaluated, from the start of the test set (0 = all)" },
  { name = "data-dir", default = "", doc = "directory of the data set (empty: the experiment's default)" },
  { name = "shard", default = "iid", doc = "split of the training set among workers: iid, dirichlet, sorted",
    check = function(v) return v == "iid" or v == "dirichlet" or v == "sorted", "must be iid, dirichlet or sorted" end },
  { name = "noniid-alpha", default = -1, type = "number",
    doc = "Dirichlet(alpha) label skew of the shards; > 0 selects shard:dirichlet, <= 0 leaves it off" },
}

local registry = {}    -- name -> definition table (registered in memory)

function E.register(def)
  if type(def) ~= "table" or type(def.name) ~= "string" then
    error("E.register needs an experiment table with a name", 2)
  end
  registry[def.name] = def
end

function E.list()
  local seen, names = {}, {}
  for _, n in ipairs(P.list("experiments")) do seen[n] = true; names[#names + 1] = n end
  for n in pairs(registry) do
    if not seen[n] then seen[n] = true; names[#names + 1] = n end
  end
  table.sort(names)
  return names
end

-- The keys every experiment takes (its `defaults` may change them).
function E.common_keys()
  local keys = {}
  for i, e in ipairs(COMMON) do keys[i] = e.name end
  return keys
end

local function validate(def, where) contract.experiment(def, where, E.common_keys()) end

local function definition(name_or_path)
  if type(name_or_path) == "table" then
    validate(name_or_path, "table")
    return name_or_path
  end
  if type(name_or_path) ~= "string" then
    error("--experiment: expected a name or a path, got " .. type(name_or_path), 0)
  end
  local def
  if name_or_path:find("/") or name_or_path:find("%.lua$") then
    def = U.load_lua_file(name_or_path, "experiment")
  elseif registry[name_or_path] then
    def = registry[name_or_path]
  elseif P.find("experiments", name_or_path) then
    def = P.load("experiments", name_or_path, "experiment")
  else
    error(string.format("--experiment: unknown experiment '%s' (known: %s)", name_or_path,
                        table.concat(E.list(), ", ")), 0)
  end
  validate(def, name_or_path)
  return def
end

-- The table an experiment file returns, checked against its contract (a name, a path or a table).
E.definition = definition

-- The full key:value spec of an experiment: the common keys (with its defaults) + its own.
local function arg_spec(def)
  local spec, index = {}, {}
  for _, e in ipairs(COMMON) do
    local c = {}
    for k, v in pairs(e) do c[k] = v end
    if def.defaults and def.defaults[e.name] ~= nil then c.default = def.defaults[e.name] end
    spec[#spec + 1] = c
    index[e.name] = c
  end
  for _, e in ipairs(def.args or {}) do
    if index[e.name] then
      for k, v in pairs(e) do index[e.name][k] = v end
    else
      spec[#spec + 1] = e
      index[e.name] = e
    end
  end
  return spec
end

-- Data sets, read once per process (key: experiment name and data-dir).
local data_cache = setmetatable({}, { __mode = "v" })

---------------------------------------------------------------------------------------------
local Exp = {}
Exp.__index = Exp

-- E.load(name_or_path_or_table, words_or_table, {seed = s, n = workers})
function E.load(name_or_path, words, opts)
  opts = opts or {}
  local def = definition(name_or_path)
  local args = kv.parse(words, arg_spec(def), "--experiment-args (" .. def.name .. ")")
  if args["noniid-alpha"] > 0 then
    if args.shard == "sorted" then
      error("--experiment-args: noniid-alpha selects the dirichlet shards; it cannot go with shard:sorted", 0)
    end
    args.shard = "dirichlet"
  elseif args.shard == "dirichlet" then
    error("--experiment-args: shard:dirichlet needs noniid-alpha > 0 (e.g. noniid-alpha:0.5)", 0)
  end
  local model = def.model(nn, args)
  if type(model) ~= "table" or type(model.d) ~= "number" then
    error("experiment " .. def.name .. ": model() must return an agt.nn model", 0)
  end
  local exp = setmetatable({
    name = def.name, def = def, args = args, model = model, d = model.d,
    seed = opts.seed or 1, n = opts.n, shape = def.shape, classes = def.classes, nworkers = 0,
  }, Exp)
  if model.classes ~= def.classes then
    error(string.format("experiment %s: the model has %d outputs for %d classes", def.name,
                        model.classes, def.classes), 0)
  end
  return exp
end

-- The data set, loaded on first use.
function Exp:dataset()
  if self._data then return self._data end
  local key = self.name .. "\0" .. self.args["data-dir"]
  local ds = data_cache[key]
  if not ds then
    local err
    ds, err = self.def.data(self.args, D)
    if ds == nil then error("experiment " .. self.name .. ": " .. tostring(err), 0) end
    if type(ds) ~= "table" or not ds.train or not ds.test then
      error("experiment " .. self.name .. ": data() must return {train = ..., test = ...}", 0)
    end
    data_cache[key] = ds
  end
  local want = 1
  for _, v in ipairs(self.shape) do want = want * v end
  for _, part in ipairs({ "train", "test" }) do
    local x = ds[part].x
    if not x or x:dim() < 1 or x:size(1) == 0 then
      error(string.format("experiment %s: the %s set is empty (no examples): check the data "
                          .. "files or the data() function", self.name, part), 0)
    end
  end
  local got = ds.train.x:numel() / ds.train.x:size(1)
  if got ~= want then
    error(string.format("experiment %s: examples have %d values, the model expects %d", self.name, got, want), 0)
  end
  self._data = ds
  return ds
end

function Exp:init_params(theta, rng)
  self.model:init(theta, rng)
  return theta
end

-- The shards of n workers (computed once, from the experiment seed).
function Exp:shards(n)
  if self._shards and self._shards_n == n then return self._shards end
  if self._shards then
    error(string.format("experiment %s: the training set is split for %d workers, not %d", self.name,
                        self._shards_n, n), 2)
  end
  local ds = self:dataset()
  local sh = D.shard(ds.train.y, n, { mode = self.args.shard, alpha = self.args["noniid-alpha"],
                                      rng = R.new(self.seed, R.stream_id("shard", 0)) })
  self._shards, self._shards_n = sh, n
  return sh
end

---------------------------------------------------------------------------------------------
local Worker = {}
Worker.__index = Worker

-- exp:worker(i, {seed, poison, l1, l2, n}): worker i's shard is i of n, where n is opts.n, else
-- the n given to E.load, else the number of workers created before its first gradient.
function Exp:worker(i, opts)
  opts = opts or {}
  if type(i) ~= "number" or i < 1 or i % 1 ~= 0 then
    error("exp:worker needs a worker index >= 1, got " .. tostring(i), 2)
  end
  local poison = opts.poison
  if poison ~= nil and poison ~= "label-flip" and poison ~= "poison-data" then
    error("exp:worker: poison must be nil, 'label-flip' or 'poison-data', got " .. tostring(poison), 2)
  end
  if opts.n then self.n = self.n or opts.n end
  if i > self.nworkers then self.nworkers = i end
  local seed = opts.seed or self.seed
  local l1, l2 = opts.l1 or 0, opts.l2 or 0
  return setmetatable({
    exp = self, i = i, seed = seed, poison = poison,
    l1 = l1 > 0 and l1 or 0, l2 = l2 > 0 and l2 or 0,
    data_rng = R.new(seed, R.stream_id("data", i)),
    drop_rng = R.new(seed, R.stream_id("dropout", i)),
    poison_rng = R.new(seed, R.stream_id("poison", i)),
    pen = ffi.new("double[1]"),
  }, Worker)
end

function Worker:_setup()
  local exp = self.exp
  local ds = exp:dataset()
  local n = exp.n or exp.nworkers
  if self.i > n then
    error(string.format("worker %d of an experiment split for %d workers", self.i, n), 0)
  end
  local shard = exp:shards(n)[self.i]
  self.sampler = D.sampler(ds.train, shard, self.data_rng)
  if self._pending_state then
    self.sampler:set_state(self._pending_state)
    self._pending_state = nil
  end
  local B = exp.args["batch-size"]
  local shape = { B }
  for _, v in ipairs(exp.shape) do shape[#shape + 1] = v end
  self.B = B
  self.x = T.new(shape)
  self.y = T.new({ B }, "i32")
  self.xp = ffi.cast("float *", self.x.data)
  self.yp = ffi.cast("int32_t *", self.y.data)
end

local function apply_poison(self)
  local B, K = self.B, self.exp.classes
  local yp = self.yp
  if self.poison == "label-flip" then
    for k = 0, B - 1 do yp[k] = K - 1 - yp[k] end
  else  -- poison-data: pixels scaled by −1e12, labels shuffled within the batch
    C.agt_vec_scale(self.xp, self.x:numel(), -1e12)
    for k = B - 1, 1, -1 do
      local j = self.poison_rng:below(k + 1)
      yp[k], yp[j] = yp[j], yp[k]
    end
  end
end

-- Draws the worker's next minibatch into its host buffers (poisoned and preprocessed as the
-- worker's are) and returns them: x (B, shape...) f32 and y (B) i32, valid until the next draw.
function Worker:next_batch()
  if not self.sampler then self:_setup() end
  local exp = self.exp
  self.sampler:next(self.B, self.x, self.y)
  if self.poison then apply_poison(self) end
  if exp.def.preprocess then exp.def.preprocess(self.x, self.B, exp.args) end
  return self.x, self.y
end

-- Writes the gradient of the mean loss of the batch (x, y) at theta into grad (every value
-- is written); theta, grad, x and y are on one device, whose kernels run. Returns the loss,
-- regularization penalties included.
function Worker:batch_gradient(theta, grad, x, y)
  if not self.sampler then self:_setup() end
  local exp = self.exp
  local loss = exp.model:loss_grad(theta, x, y, self.B, grad, self.drop_rng)
  if self.l1 > 0 or self.l2 > 0 then
    local be = Bk.of(theta)
    local th, g = ffi.cast("float *", theta:pointer()), ffi.cast("float *", grad:pointer())
    if self.l1 > 0 then
      be:op("optim.l1")(th, g, exp.d, self.l1, self.pen)
      loss = loss + self.pen[0]
    end
    if self.l2 > 0 then
      be:op("optim.l2")(th, g, exp.d, self.l2, self.pen)
      loss = loss + self.pen[0]
    end
  end
  return loss
end

-- Makes x and y (host tensors of the batch's shape and of its labels, f32 and i32: page-locked
-- ones, say) the buffers the worker draws its batches into.
function Worker:set_batch_buffers(x, y)
  if not self.sampler then self:_setup() end
  if not (T.is_tensor(x) and T.is_tensor(y) and x.dtype == "f32" and y.dtype == "i32"
          and #x == #self.x and #y == #self.y and x.device == "cpu" and y.device == "cpu") then
    error(string.format("set_batch_buffers: needs host tensors of %d f32 and %d i32 values", #self.x, #self.y), 2)
  end
  self.x, self.y = x, y
  self.xp = ffi.cast("float *", x.data)
  self.yp = ffi.cast("int32_t *", y.data)
end

-- The worker's batch buffers on theta's device (made once): x and y themselves on the CPU.
function Worker:device_batch(theta)
  if theta.dev == self.x.dev then return self.x, self.y end
  local xd = self.xd
  if not xd or xd.dev ~= theta.dev then
    self.xd, self.yd = T.new(self.x.shape, "f32", theta.device), T.new({ self.B }, "i32", theta.device)
  end
  return self.xd, self.yd
end

-- Draws the worker's next minibatch and writes the gradient of its mean loss at theta into
-- grad (every value is written). Returns the loss, regularization penalties included. With
-- theta on a device, the batch is copied there (agt.session.workers copies it ahead of use).
function Worker:gradient(theta, grad)
  local x, y = self:next_batch()
  if theta.dev ~= x.dev then
    local xd, yd = self:device_batch(theta)
    x, y = xd:copy(x), yd:copy(y)
  end
  return self:batch_gradient(theta, grad, x, y)
end

local function pack(parts)
  local out = {}
  for _, p in ipairs(parts) do out[#out + 1] = string.format("%d:", #p) .. p end
  return table.concat(out)
end

local function unpack_parts(s)
  local parts, pos = {}, 1
  while pos <= #s do
    local len, at = s:match("^(%d+):()", pos)
    if not len then error("worker state: malformed", 3) end
    len = tonumber(len)
    if at + len - 1 > #s then error("worker state: truncated", 3) end
    parts[#parts + 1] = s:sub(at, at + len - 1)
    pos = at + len
  end
  return parts
end

-- "agt-worker 1" + its sampler's state (empty before its first batch) + its streams.
function Worker:state()
  local sampler = self.sampler and self.sampler:state() or (self._pending_state or "")
  return pack({ "agt-worker 1", sampler, self.data_rng:state(), self.drop_rng:state(),
                self.poison_rng:state() })
end

function Worker:set_state(s)
  if type(s) ~= "string" then error("worker state must be a string", 2) end
  local p = unpack_parts(s)
  if p[1] ~= "agt-worker 1" or #p ~= 5 then error("worker state: not an agt worker state", 2) end
  self.data_rng:set_state(p[3])
  self.drop_rng:set_state(p[4])
  self.poison_rng:set_state(p[5])
  if p[2] ~= "" then
    if self.sampler then self.sampler:set_state(p[2]) else self._pending_state = p[2] end
  end
end

---------------------------------------------------------------------------------------------

-- The first N test examples on a device (copied once and kept): x, y tensors there.
function Exp:_test_on(device, N)
  local c = self._test_dev
  if c and c.device == device and c.N == N then return c.x, c.y end
  local ds = self:dataset()
  local per = ds.test.x:numel() / ds.test.x:size(1)
  local x = T.new({ N * per }, "f32", device)
  local y = T.new({ N }, "i32", device)
  x:copy(ds.test.x:reshape({ ds.test.x:numel() }):narrow(1, N * per))
  y:copy(ds.test.y:narrow(1, N))
  self._test_dev = { device = device, N = N, x = x, y = y }
  return x, y
end

-- Batch norm's running statistics at θ, re-estimated before an evaluation: the mean of the
-- statistics of bn-batches (default 20) training batches of batch-size examples, the same ones
-- at every evaluation and in every process (slices of the training set at offsets drawn from
-- the experiment seed). Evaluation so depends on θ alone: not on which workers' batches
-- (Byzantine ones included) went through this process's model before, and a parameter server
-- that computes no gradient evaluates like a local run. θ may be on a device: the batches are
-- copied there.
function Exp:recalibrate(theta)
  local ds = self:dataset()
  local x = ds.train.x
  local N = x:size(1)
  local B = math.min(self.args["batch-size"], N)
  local per = x:numel() / N
  local shape = { B }
  for _, v in ipairs(self.shape) do shape[#shape + 1] = v end
  local buf = self._bnbuf
  if not buf or buf:numel() ~= B * per then buf = T.new(shape); self._bnbuf = buf end
  local dev = T.is_tensor(theta) and theta.device ~= "cpu" and theta.device
  local dbuf = dev and self._bnbuf_dev
  if dev and (not dbuf or dbuf.device ~= dev or dbuf:numel() ~= B * per) then
    dbuf = T.new(shape, "f32", dev)
    self._bnbuf_dev = dbuf
  end
  local xp = ffi.cast("float *", x.data)
  local rng = R.new(self.seed, R.stream_id("bn", 0))
  for k = 1, self.args["bn-batches"] or 20 do
    local start = rng:below(N - B + 1)
    ffi.copy(buf.data, xp + start * per, B * per * 4)
    if self.def.preprocess then self.def.preprocess(buf, B, self.args) end
    if dev then dbuf:copy(buf) end
    self.model:recalibrate(theta, dev and dbuf or buf, B, k)
  end
end

-- Top-1 accuracy and mean cross-entropy over the test set (or its first eval-size examples);
-- a model with batch norm has its running statistics re-estimated at θ first (recalibrate).
-- With theta on a device the model runs there, on a copy of the test set kept on it (the
-- per-example sums come back in example order, so the metrics match the CPU's to rounding).
function Exp:evaluate(theta)
  if self.model:has_batchnorm() then self:recalibrate(theta) end
  local ds = self:dataset()
  local x, y = ds.test.x, ds.test.y
  local N = y:numel()
  if self.args["eval-size"] > 0 and self.args["eval-size"] < N then N = self.args["eval-size"] end
  local per = x:numel() / x:size(1)
  local bs = self.args["eval-batch-size"]
  local pre = self.def.preprocess
  local on_host = theta.dev == x.dev
  local xp, yp
  if on_host then
    xp, yp = ffi.cast("float *", x.data), ffi.cast("int32_t *", y.data)
  else
    local xd, yd = self:_test_on(theta.device, N)
    xp, yp = xd:pointer(), yd:pointer()
  end
  local buf
  if pre then
    local shape = { bs }
    for _, v in ipairs(self.shape) do shape[#shape + 1] = v end
    buf = self._evalbuf
    if not buf or buf:numel() ~= bs * per then buf = T.new(shape); self._evalbuf = buf end
  end
  local loss, correct = 0, 0
  local start = 0
  while start < N do
    local b = math.min(bs, N - start)
    local xb = xp + start * per
    if pre then
      if on_host then
        ffi.copy(buf.data, xb, b * per * 4)
      else
        buf:narrow(1, b):copy(x:narrow(1 + start, b))
      end
      pre(buf, b, self.args)
      xb = ffi.cast("float *", buf.data)
      if not on_host then
        local bd = self._evalbuf_dev
        if not bd or bd:numel() ~= buf:numel() or bd.dev ~= theta.dev then
          bd = T.new(buf.shape, "f32", theta.device); self._evalbuf_dev = bd
        end
        xb = bd:narrow(1, b):copy(buf:narrow(1, b)):pointer()
      end
    end
    local l, c = self.model:eval_batch(theta, xb, yp + start, b)
    loss, correct = loss + l, correct + c
    start = start + b
  end
  return { { "top1-X-acc", correct / N }, { "cross-entropy", loss / N } }
end

function E.help()
  local out = { "Experiments (--experiment NAME or a path to a .lua file of the same form):" }
  for _, n in ipairs(E.list()) do
    local ok, def = pcall(definition, n)
    out[#out + 1] = string.format("  %-14s %s", n, ok and (def.doc or "") or ("(broken: " .. tostring(def) .. ")"))
  end
  out[#out + 1] = "\n--experiment-args key:value ... (every experiment):"
  out[#out + 1] = kv.help(COMMON, "  ")
  for _, n in ipairs(E.list()) do
    local ok, def = pcall(definition, n)
    if ok and (def.args or def.defaults) then
      local extra = {}
      for _, e in ipairs(def.args or {}) do extra[#extra + 1] = e end
      for k, v in pairs(def.defaults or {}) do
        extra[#extra + 1] = { name = k, default = v, doc = "(default for " .. n .. ")" }
      end
      table.sort(extra, function(a, b) return a.name < b.name end)
      out[#out + 1] = "\n" .. n .. ":"
      out[#out + 1] = kv.help(extra, "  ")
    end
  end
  out[#out + 1] = [[

Workers draw their own minibatches from their own shard with their own random stream.
Regularization (--l1-regularize, --l2-regularize): l1 adds λ·Σ|w|, l2 adds (λ/2)·Σw² — the
squared norm (the original system added the plain norm λ·√Σw²); λ <= 0 turns them off.]]
  return table.concat(out, "\n")
end

return E
