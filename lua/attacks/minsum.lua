-- minsum — Shejwalkar & Houmansadr's second AGR-agnostic attack: g = mu + gamma*p with the
-- largest gamma such that the sum of squared distances from g to the honest gradients is at
-- most the largest such sum of one honest gradient:
-- sum_i ||g - h_i||^2 <= max_i sum_j ||h_i - h_j||^2. Solved in closed form (see minmax.lua).
local M = require("attacks.minmax").shared

return {
  name = "minsum",
  doc = "mu + gamma*p, gamma the largest with sum_i ||g - h_i||^2 <= max_i sum_j ||h_i - h_j||^2",
  paper = "Shejwalkar, Houmansadr, 'Manipulating the Byzantine: Optimizing Model Poisoning Attacks and Defenses for Federated Learning', NDSS 2021",
  args = M.args,
  apply = function(self, c)
    local p = M.perturbation(self, c)
    local a, b, cc, D = M.terms(self, c, p)
    local h = #a
    local bound = 0
    for i = 1, h do
      local s = 0
      for j = 1, h do s = s + D[i][j] end
      if s > bound then bound = s end
    end
    local A, B = 0, 0
    for i = 1, h do A = A + a[i]; B = B + b[i] end
    local gamma = M.root(A, B, h * cc, bound)
    M.finish(self, c, p, gamma)
    return { gamma = gamma }
  end,
}
