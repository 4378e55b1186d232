-- optimal-lie — "A little is enough" with the multiple of sigma searched at every step: the
-- Byzantine rows are mu + tau*sigma, with tau chosen by a line search (K.line_maximize, at most
-- `evals` rule evaluations) to maximise ||rule(G) - mu||, the distance between what the run's
-- actual rule (pre-aggregation pipeline included) outputs and the honest mean. Without a rule
-- it searches against the plain average.
local K = require("agt.attacks")

return {
  name = "optimal-lie",
  doc = "mu + tau*sigma with tau searched to maximise ||rule(G) - mu|| against the run's rule",
  paper = "Baruch et al., NeurIPS 2019, with the scale search of El-Mhamdi et al., ICLR 2021 (ByzantineMomentum) and ByzFL",
  devices = { "cpu", "cuda" },
  args = {
    { name = "evals", default = 16, type = "integer", doc = "rule evaluations per step (the search budget)" },
    { name = "start", default = 0, type = "number", doc = "initial tau" },
    { name = "delta", default = 1, type = "number", doc = "initial step of the search" },
    { name = "ratio", default = 0.8, type = "number", doc = "step contraction factor, in (0, 1)" },
    { name = "ddof", default = 0, type = "integer", doc = "0: population std, 1: sample std" },
  },
  init = function(self)
    local a = self.args
    if a.evals < 1 then error("attack optimal-lie needs evals >= 1, got evals=" .. a.evals, 3) end
    if not (a.ratio > 0 and a.ratio < 1) then error("attack optimal-lie needs 0 < ratio < 1, got ratio=" .. a.ratio, 3) end
    if not (a.delta > 0) then error("attack optimal-lie needs delta > 0, got delta=" .. a.delta, 3) end
  end,
  apply = function(self, c)
    local a = self.args
    local mu = self:honest_mean(c)
    local sigma = self:honest_std(c, a.ddof)
    local v = self:buffer("v", { c.d })
    local function make(tau) v:copy(mu):axpy(tau, sigma) end
    local function objective(tau)
      make(tau)
      return (self:rule_distance(c, function(S) self:write(c, v, S) end))
    end
    local tau, dist, used = K.line_maximize(objective,
      { evals = a.evals, start = a.start, delta = a.delta, ratio = a.ratio })
    make(tau)
    self:write(c, v)
    return { tau = tau, distance = dist, evals = used }
  end,
}
