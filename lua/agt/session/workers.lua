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
-- workers (rows received over the network, a missing or late one left faulty) are another
-- source with the same methods.
--
-- On a device (opts.device "cuda": θ and G there, --use-gpu) the same workers compute there,
-- and their batches move ahead of use: right after worker i's gradient of step k is queued,
-- its batch of step k+1 is drawn on the host into page-locked buffers and copied to its
-- device buffers on a copy stream, overlapping the device's work; step k+1's kernels wait for
-- the copies. A worker's checkpoint entry is its state before that draw (what the CPU workers
-- hold after step k), and set_state drops the batches drawn ahead, so a checkpoint of a
-- device run resumes on the CPU and the other way round.
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
local B = require("agt.backend")
local Momentum = require("agt.session.momentum")

local M = {}

local Workers = {}
Workers.__index = Workers

-- exp: a loaded experiment (agt.experiments); opts: {seed =, l1 =, l2 =, poison = fn(i) ->
-- nil | "label-flip" | "poison-data" (a data attack poisons the shards of its workers),
-- local_steps = K (default 1), momentum = β or nil (worker momentum), device = "cpu" (default)
-- or "cuda": where θ, G and the workers' vectors are, ahead = whether batches are drawn ahead
-- of use (default: on a device; on the CPU it changes nothing but the order of the draws)}.
function M.new(exp, n, opts)
  local dev = opts.device or "cpu"
  local ahead = opts.ahead
  if ahead == nil then ahead = dev ~= "cpu" end
  local self = setmetatable({ n = n, d = exp.d, exp = exp, workers = {}, losses = {}, ahead = {},
                              k = opts.local_steps or 1, beta = opts.momentum,
                              device = dev, draw_ahead = ahead }, Workers)
  for i = 1, n do
    self.workers[i] = exp:worker(i, { seed = opts.seed, l1 = opts.l1 or 0, l2 = opts.l2 or 0,
                                      poison = opts.poison and opts.poison(i) or nil })
  end
  if self.beta then
    self.m = {}
    for i = 1, n do self.m[i] = T.new({ self.d }, "f32", dev); self.m[i]:zero() end
  end
  if self.k > 1 then self.theta_k, self.g = T.new({ self.d }, "f32", dev), T.new({ self.d }, "f32", dev) end
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

-- Worker w's next batch, drawn on the host (page-locked where θ is on a device) and queued
-- for its buffers on θ's device (which the later work reads once it has joined the copies).
-- Its host buffers' last copy was queued in the previous fill, which fill waited for.
local function draw_ahead(w, theta, be)
  local x, y = w:next_batch()
  local xd, yd = w:device_batch(theta)
  if xd.addr ~= x.addr then
    be.write_async(xd:pointer(), x:pointer(), #x * 4)
    be.write_async(yd:pointer(), y:pointer(), #y * 4)
  end
end

-- Page-locked host buffers for every worker's batch, in one allocation locked once (locking
-- each worker's small tensors could lock one page twice, which CUDA refuses). Where it cannot be
-- locked, the copies are synchronous and the run the same.
function Workers:_stage()
  if self._staging then return end
  local exp = self.exp
  local B = exp.args and exp.args["batch-size"]
  if type(B) ~= "number" or not self.workers[1].set_batch_buffers then self._staging = true; return end
  local shape, per = { B }, 1
  for _, v in ipairs(exp.shape) do shape[#shape + 1] = v; per = per * v end
  local slot = math.ceil((B * per + B) / 16) * 16   -- 64-byte aligned slots, x then y
  local buf = T.new({ self.n * slot })
  buf:pin()
  local base = buf:pointer()
  for i, w in ipairs(self.workers) do
    local p = base + (i - 1) * slot
    w:set_batch_buffers(T.wrap(p, shape, "f32"), T.wrap(p + B * per, { B }, "i32"))
  end
  self._staging = buf   -- owns the memory of the workers' buffers
end

-- Worker i's gradient from its batch drawn ahead (or drawn now: the first time and after
-- set_state), then its next batch drawn ahead.
function Workers:_gradient_ahead(i, theta, row)
  local w, be = self.workers[i], B.of(theta)
  if not self.ahead[i] then draw_ahead(w, theta, be); be.join() end
  local x, y = w:device_batch(theta)
  local loss = w:batch_gradient(theta, row, x, y)
  self.ahead[i] = w:state()
  draw_ahead(w, theta, be)
  return loss
end

-- Where worker i computes its row: the row itself, or on a device when the row does not start
-- on a 256-byte boundary (row i of G starts at (i-1)·d floats: with d odd or d·4 not a multiple
-- of 256, most rows do not) a vector of d the device allocated, copied into the row after. The
-- layers' GEMM and convolution libraries write each parameter's gradient into the row at its
-- offset, and on misaligned memory they take slower kernels: a ResNet-18 pass on an H200 took
-- 20.9 ms into a row 8 bytes off, 8.2 ms into an aligned one (TF32); the copy costs ~0.03 ms.
function Workers:_aligned(row)
  if self.device == "cpu" or tonumber(ffi.cast("uintptr_t", row:pointer())) % 256 == 0 then return row end
  self._grad = self._grad or T.new({ self.d }, "f32", self.device)
  return self._grad
end

function Workers:fill(theta, G, step, ctx)
  local trace = ctx and ctx.trace
  local rows, losses = rows_of(self, G), self.losses
  local ahead = self.draw_ahead and self.k == 1
  if B.of(theta) ~= B.get(self.device) or B.of(G) ~= B.get(self.device) then
    error(string.format("the workers compute on %s: theta and G must be there, got %s and %s",
                        self.device, theta.device, G.device), 2)
  end
  if ahead then   -- this step's batches, drawn ahead, are there (long since: no wait)
    local be = B.of(theta)
    if be.name ~= "cpu" then self:_stage() end
    be.wait()
    be.join()
  end
  for i = 1, self.n do
    local what = trace and string.format("Worker %d: loss and gradient computation", i)
    if trace then trace(what, "begin") end
    local row = rows[i]
    local out = self:_aligned(row)
    if ahead then
      losses[i] = self:_gradient_ahead(i, theta, out)
    elseif self.k == 1 then
      losses[i] = self.workers[i]:gradient(theta, out)
    else
      local lr = ctx and ctx.lr
      if type(lr) ~= "number" then error("local steps need the step's learning rate (ctx.lr)", 2) end
      losses[i] = M.local_steps(self.workers[i], theta, self.k, lr, out, self.theta_k, self.g)
    end
    if out ~= row then row:copy(out) end
    if self.m then row:copy(Momentum.accumulate(self.m[i], row, self.beta)) end
    if trace then trace(what, "end") end
  end
  return losses
end

-- A vector's d float32 values as bytes (copied to the host first when it is on a device).
local function bytes_of(v)
  if v.device ~= "cpu" then v = v:to("cpu") end
  return ffi.string(v:pointer(), #v * 4)
end

function Workers:state()
  local map = {}
  for i, w in ipairs(self.workers) do
    map["worker." .. i] = self.ahead[i] or w:state()   -- before the batch drawn ahead
    if self.m then map["worker." .. i .. ".momentum"] = bytes_of(self.m[i]) end
  end
  return map
end

-- The session's copy before each step (put back when Ctrl-C stops the step): the streams as
-- in state(), the momenta copied into vectors kept on their device (no copy to the host).
function Workers:snapshot()
  local snap = {}
  for i, w in ipairs(self.workers) do snap[i] = self.ahead[i] or w:state() end
  if self.m then
    self._snap_m = self._snap_m or {}
    for i = 1, self.n do
      self._snap_m[i] = self._snap_m[i] or T.new({ self.d }, "f32", self.device)
      self._snap_m[i]:copy(self.m[i])
    end
  end
  return snap
end

function Workers:restore(snap)
  self.ahead = {}
  for i, w in ipairs(self.workers) do w:set_state(snap[i]) end
  if self.m then
    for i = 1, self.n do self.m[i]:copy(self._snap_m[i]) end
  end
end

function Workers:set_state(map)
  self.ahead = {}   -- the batches drawn ahead are drawn again from the restored streams
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
      local on_host = self.m[i].device == "cpu"
      local host = on_host and self.m[i] or T.new({ self.d })
      ffi.copy(host:pointer(), m, self.d * 4)
      if not on_host then self.m[i]:copy(host) end
    end
  end
end

-- Nothing to release here (the workers' tensors are collected); a remote source closes its
-- connections.
function Workers:close()
  self._G, self.rows = nil, nil
end

return M
