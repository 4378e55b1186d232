-- optimal-empire — "Fall of empires" with epsilon searched at every step: the Byzantine rows
-- are -epsilon*mu, with epsilon chosen by a line search (at most `evals` rule evaluations) to
-- maximise ||rule(G) - mu|| against the run's actual rule (pre-aggregation included).
local K = require("agt.attacks")

return {
  name = "optimal-empire",
  doc = "-epsilon*mu with epsilon searched to maximise ||rule(G) - mu|| against the run's rule",
  paper = "Xie et al., UAI 2020, with the scale search of El-Mhamdi et al., ICLR 2021 (ByzantineMomentum) and ByzFL",
  devices = { "cpu", "cuda" },
  args = {
    { name = "evals", default = 16, type = "integer", doc = "rule evaluations per step (the search budget)" },
    { name = "start", default = 0, type = "number", doc = "initial epsilon" },
    { name = "delta", default = 1, type = "number", doc = "initial step of the search" },
    { name = "ratio", default = 0.8, type = "number", doc = "step contraction factor, in (0, 1)" },
  },
  init = function(self)
    local a = self.args
    if a.evals < 1 then error("attack optimal-empire needs evals >= 1, got evals=" .. a.evals, 3) end
    if not (a.ratio > 0 and a.ratio < 1) then error("attack optimal-empire needs 0 < ratio < 1, got ratio=" .. a.ratio, 3) end
    if not (a.delta > 0) then error("attack optimal-empire needs delta > 0, got delta=" .. a.delta, 3) end
  end,
  apply = function(self, c)
    local a = self.args
    local mu = self:honest_mean(c)
    local v = self:buffer("v", { c.d })
    local function make(eps) v:copy(mu):scale(-eps) end
    local function objective(eps)
      make(eps)
      return (self:rule_distance(c, function(S) self:write(c, v, S) end))
    end
    local eps, dist, used = K.line_maximize(objective,
      { evals = a.evals, start = a.start, delta = a.delta, ratio = a.ratio })
    make(eps)
    self:write(c, v)
    return { epsilon = eps, distance = dist, evals = used }
  end,
}
