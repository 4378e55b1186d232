-- agt.session.workers — the local gradient source: the n workers of an experiment in this
-- process, each computing at θ the gradient of its loss on its own minibatch into its row of G.
--
-- A gradient source is what the session asks for the rows of G; every source has
--   source.n                               the rows it fills
--   source:fill(theta, G, step, ctx)       -> losses: losses[i] is row i's loss (the session
--                                           reports the honest rows' mean). theta: f32 tensor
--                                           of d; G: n × d f32 tensor; ctx.trace(what, phase),
--                                           when given (--trace), marks the begin and end of
--                                           each row's work.
--   source:state() -> { [name] = bytes }   its checkpoint entries (names it owns)
--   source:set_state(map)                  reads them back from a checkpoint's map (raises
--                                           "--checkpoint-dir: ..." when one is missing)
--   source:close()
-- Here the entries are "worker.<i>" (each worker's sampler and dropout streams), and with
-- worker momentum "worker.<i>.momentum" (its m_i, d float32 values). Remote
-- workers (rows received over the network, a missing or late one left faulty) and device
-- workers (rows computed on the GPU) are other sources with the same methods.
--
-- Invariant: the rows are filled in worker order 1..n, each from θ alone (no worker reads
-- another's row), so the result does not depend on how a source schedules them.
--
-- What a worker sends (opts.local_steps K, opts.momentum β; every source honours both or
-- refuses them): with K = 1 the gradient g_i of its minibatch at θ; with K > 1 the model
-- difference θ − θ_K after K SGD steps θ_k = θ_{k−1} − lr·g(θ_{k−1}) on K minibatches at the
-- step's rate ctx.lr (FedAvg), its loss being the first step's (at θ, as with K = 1). With
-- worker momentum (β given), worker i keeps m_i ← β·m_i + x_i (x_i: what it would send) and
-- sends m_i, every worker alike (a Byzantine one's row holds its momentum on entry to the
-- attack). The state is the worker's, saved with it, so a resumed run continues bit for bit.
local ffi = require("ffi")
local T = require("agt.tensor")
local Momentum = require("agt.session.momentum")

local M = {}

local Workers = {}
Workers.__index = Workers

-- exp: a loaded experiment (agt.experiments); opts: {seed =, l1 =, l2 =, poison = fn(i) ->
-- nil | "label-flip" | "poison-data" (a data attack poisons the shards of its workers),
-- local_steps = K (default 1), momentum = β or nil (worker momentum)}.
function M.new(exp, n, opts)
  local self = setmetatable({ n = n, d = exp.d, workers = {}, losses = {},
                              k = opts.local_steps or 1, beta = opts.momentum }, Workers)
  for i = 1, n do
    self.workers[i] = exp:worker(i, { seed = opts.seed, l1 = opts.l1 or 0, l2 = opts.l2 or 0,
                                      poison = opts.poison and opts.poison(i) or nil })
  end
  if self.beta then
    self.m = {}
    for i = 1, n do self.m[i] = T.new({ self.d }); self.m[i]:zero() end
  end
  if self.k > 1 then self.theta_k, self.g = T.new({ self.d }), T.new({ self.d }) end
  return self
end

-- K local SGD steps of worker w from theta at rate lr: out ← θ − θ_K (theta_k and g: scratch
-- tensors of d). Returns the loss of the first step.
function M.local_steps(w, theta, k, lr, out, theta_k, g)
  theta_k:copy(theta)
  local first
  for j = 1, k do
    local loss = w:gradient(theta_k, g)
    first = first or loss
    theta_k:axpy(-lr, g)
  end
  out:copy(theta)
  out:sub(theta_k)
  return first
end

local function rows_of(self, G)
  if self._G ~= G then
    self._G, self.rows = G, {}
    for i = 1, self.n do self.rows[i] = G:row(i) end
  end
  return self.rows
end

function Workers:fill(theta, G, step, ctx)
  local trace = ctx and ctx.trace
  local rows, losses = rows_of(self, G), self.losses
  for i = 1, self.n do
    local what = trace and string.format("Worker %d: loss and gradient computation", i)
    if trace then trace(what, "begin") end
    if self.k == 1 then
      losses[i] = self.workers[i]:gradient(theta, rows[i])
    else
      local lr = ctx and ctx.lr
      if type(lr) ~= "number" then error("local steps need the step's learning rate (ctx.lr)", 2) end
      losses[i] = M.local_steps(self.workers[i], theta, self.k, lr, rows[i], self.theta_k, self.g)
    end
    if self.m then rows[i]:copy(Momentum.accumulate(self.m[i], rows[i], self.beta)) end
    if trace then trace(what, "end") end
  end
  return losses
end

function Workers:state()
  local map = {}
  for i, w in ipairs(self.workers) do
    map["worker." .. i] = w:state()
    if self.m then map["worker." .. i .. ".momentum"] = ffi.string(self.m[i].raw, self.d * 4) end
  end
  return map
end

function Workers:set_state(map)
  for i, w in ipairs(self.workers) do
    local s = map["worker." .. i]
    if not s then error("--checkpoint-dir: the checkpoint has no state for worker " .. i, 0) end
    w:set_state(s)
    if self.m then
      local m = map["worker." .. i .. ".momentum"]
      if type(m) ~= "string" or #m ~= self.d * 4 then
        error(string.format("--momentum-at: the checkpoint has no momentum of %d values for worker "
          .. "%d (was it made with --momentum-at worker?)", self.d, i), 0)
      end
      ffi.copy(self.m[i].raw, m, self.d * 4)
    end
  end
end

-- Nothing to release here (the workers' tensors are collected); a remote source closes its
-- connections.
function Workers:close()
  self._G, self.rows = nil, nil
end

return M
