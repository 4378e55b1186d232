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
-- Here the entries are "worker.<i>" (each worker's sampler and dropout streams). Remote
-- workers (rows received over the network, a missing or late one left faulty) and device
-- workers (rows computed on the GPU) are other sources with the same methods.
--
-- Invariant: the rows are filled in worker order 1..n, each from θ alone (no worker reads
-- another's row), so the result does not depend on how a source schedules them.
local M = {}

local Workers = {}
Workers.__index = Workers

-- exp: a loaded experiment (agt.experiments); opts: {seed =, l1 =, l2 =, poison = fn(i) ->
-- nil | "label-flip" | "poison-data"} (a data attack poisons the shards of its workers).
function M.new(exp, n, opts)
  local self = setmetatable({ n = n, workers = {}, losses = {} }, Workers)
  for i = 1, n do
    self.workers[i] = exp:worker(i, { seed = opts.seed, l1 = opts.l1 or 0, l2 = opts.l2 or 0,
                                      poison = opts.poison and opts.poison(i) or nil })
  end
  return self
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
    losses[i] = self.workers[i]:gradient(theta, rows[i])
    if trace then trace(what, "end") end
  end
  return losses
end

function Workers:state()
  local map = {}
  for i, w in ipairs(self.workers) do map["worker." .. i] = w:state() end
  return map
end

function Workers:set_state(map)
  for i, w in ipairs(self.workers) do
    local s = map["worker." .. i]
    if not s then error("--checkpoint-dir: the checkpoint has no state for worker " .. i, 0) end
    w:set_state(s)
  end
end

-- Nothing to release here (the workers' tensors are collected); a remote source closes its
-- connections.
function Workers:close()
  self._G, self.rows = nil, nil
end

return M
