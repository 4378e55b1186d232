-- agt.session.momentum — where a run takes momentum (--momentum-at, --momentum β): the three
-- placements of El-Mhamdi, Guerraoui and Rouault ("Distributed momentum for Byzantine-resilient
-- SGD", ICLR 2021; their ByzantineMomentum code names them), with its definitions (dampening 0):
--
--   worker   each worker i keeps m_i ← β·m_i + g_i and sends m_i as its row (Karimireddy et al.,
--            ICML 2021): the rule sees momenta, whose spread is smaller than the gradients'.
--            The state is per worker and lives in the gradient source (agt.session.workers);
--            in distributed mode the worker keeps it and the server only sees the rows.
--   server   each row becomes x_i + β·m before the rule, m being the previous aggregate
--            (zeros at the start); the server applies the aggregate, and m ← aggregate.
--   update   the rule aggregates the rows as they are; the server keeps m ← β·m + aggregate
--            and applies m (classical momentum at the update: with sgd, the same as its
--            momentum:β argument).
--   none     no momentum (the default: a run is the same bit for bit as without this module).
--
--   Momentum.accumulate(m, x, beta)    m ← β·m + x (f32 tensors of d; the one recurrence)
--   local mo = Momentum.new(o, d [, device])  (o: checked options) the server side of a
--                                      placement; m on device ("cpu" by default, or θ's)
--   mo:rows(rows)                      before the attack: server adds β·m to each row (views of G)
--   mo:update(agg) -> v                after the rule: the vector the optimizer applies
--   mo:state() -> { momentum = bytes } (server and update only)   mo:set_state(map)
-- Byzantine rows: the attack runs after rows(), so an omniscient attacker writes the rows the
-- rule really sees, and the honest rows it reads (for μ, σ, ...) are momenta where the
-- placement is worker or server. Every value is plain float32 arithmetic, NaN and ±inf
-- included: a non-finite value in a row stays in that momentum (as it would in any SGD code).
local ffi = require("ffi")
local T = require("agt.tensor")

local M = {}

-- m ← β·m + x: two rounded float32 operations per value (fl(fl(β·m) + x)).
function M.accumulate(m, x, beta)
  m:scale(beta)
  m:axpy(1, x)
  return m
end

local Mo = {}
Mo.__index = Mo

function M.new(o, d, device)
  local self = setmetatable({ at = o.momentum_at, beta = o.momentum, d = d }, Mo)
  if self.at == "server" or self.at == "update" then
    self.m = T.new({ d }, "f32", device or "cpu")
    self.m:zero()
  end
  return self
end

function Mo:rows(rows)
  if self.at ~= "server" then return end
  for _, row in ipairs(rows) do row:axpy(self.beta, self.m) end
end

function Mo:update(agg)
  if self.at == "server" then
    self.m:copy(agg)
    return agg
  elseif self.at == "update" then
    return M.accumulate(self.m, agg, self.beta)
  end
  return agg
end

function Mo:state()
  if not self.m then return {} end
  local m = self.m.device == "cpu" and self.m or self.m:to("cpu")
  return { momentum = ffi.string(m:pointer(), self.d * 4) }
end

function Mo:set_state(map)
  if not self.m then return end
  local s = map.momentum
  if type(s) ~= "string" or #s ~= self.d * 4 then
    error(string.format("--momentum-at: the checkpoint has no server momentum of %d values "
      .. "(was it made with --momentum-at %s?)", self.d, self.at), 0)
  end
  local on_host = self.m.device == "cpu"
  local host = on_host and self.m or T.new({ self.d })
  ffi.copy(host:pointer(), s, self.d * 4)
  if not on_host then self.m:copy(host) end
end

return M
