-- minmax — Shejwalkar & Houmansadr's AGR-agnostic attack: every Byzantine worker sends
-- g = mu + gamma*p, p a perturbation (-sigma, -mu/||mu|| or -sign(mu)), with the largest gamma
-- such that g is no farther from any honest gradient than two honest gradients are from each
-- other: max_i ||g - h_i|| <= max_{i,j} ||h_i - h_j||.
-- Since ||g - h_i||^2 = a_i + 2 gamma b_i + gamma^2 c (a_i = ||mu - h_i||^2,
-- b_i = <p, mu - h_i>, c = ||p||^2), the largest gamma has a closed form: the smallest
-- positive root over i. agt solves it exactly where the paper searches it by halving.
-- The same file exports the shared pieces that minsum uses.
local C = require("agt.ffi").C

local M = {}

-- Writes the perturbation p (d values) into the buffer "p" and returns it.
function M.perturbation(self, c)
  local d = c.d
  local p = self:buffer("p", { d })
  local pp = p.raw
  local mu = self:honest_mean(c).raw
  local kind = self.args.perturbation
  if kind == "std" then
    C.agt_vec_copy(pp, self:honest_std(c, 0).raw, d)
    C.agt_vec_scale(pp, d, -1)
  elseif kind == "unit" then
    local nm = C.agt_vec_norm2(mu, d)
    C.agt_vec_copy(pp, mu, d)
    C.agt_vec_scale(pp, d, nm > 0 and -1 / nm or 0)
  else -- sign
    for j = 0, d - 1 do
      local m = mu[j]
      pp[j] = m > 0 and -1 or (m < 0 and 1 or 0)
    end
  end
  return p
end

-- a_i, b_i for the honest rows, c = ||p||^2, and the honest pairwise squared distances.
function M.terms(self, c, p)
  local d = c.d
  local mu = self:honest_mean(c).raw
  local H = self:honest_matrix(c).raw
  local h = #c.honest
  local tmp = self:buffer("diff", { d }).raw
  local a, b = {}, {}
  for i = 1, h do
    C.agt_vec_sub(tmp, mu, H + (i - 1) * d, d)
    a[i] = C.agt_vec_dot(tmp, tmp, d)
    b[i] = C.agt_vec_dot(p.raw, tmp, d)
  end
  local Dp = self:honest_sqdist(c)
  local D = {}
  for i = 1, h do
    D[i] = {}
    for j = 1, h do D[i][j] = Dp[(i - 1) * h + (j - 1)] end
  end
  return a, b, C.agt_vec_dot(p.raw, p.raw, d), D
end

-- Largest gamma >= 0 with A + 2 gamma B + gamma^2 Cc <= bound (A <= bound holds here).
function M.root(A, B, Cc, bound)
  if Cc <= 0 then return 0 end
  local disc = B * B - Cc * (A - bound)
  if disc < 0 then disc = 0 end
  local g = (-B + math.sqrt(disc)) / Cc
  return g > 0 and g or 0
end

function M.finish(self, c, p, gamma)
  local v = self:buffer("v", { c.d })
  C.agt_vec_copy(v.raw, self:honest_mean(c).raw, c.d)
  C.agt_vec_axpy(v.raw, p.raw, c.d, gamma)
  self:write(c, v)
end

M.args = {
  { name = "perturbation", default = "std", choices = { "std", "unit", "sign" },
    doc = "direction p: -sigma (std), -mu/||mu|| (unit) or -sign(mu) (sign)" },
}

return {
  name = "minmax",
  doc = "mu + gamma*p, gamma the largest with max_i ||g - h_i|| <= max_ij ||h_i - h_j||",
  paper = "Shejwalkar, Houmansadr, 'Manipulating the Byzantine: Optimizing Model Poisoning Attacks and Defenses for Federated Learning', NDSS 2021",
  args = M.args,
  shared = M,
  apply = function(self, c)
    local p = M.perturbation(self, c)
    local a, b, cc, D = M.terms(self, c, p)
    local h = #a
    local bound = 0
    for i = 1, h do for j = 1, h do if D[i][j] > bound then bound = D[i][j] end end end
    local gamma = math.huge
    for i = 1, h do gamma = math.min(gamma, M.root(a[i], b[i], cc, bound)) end
    if gamma == math.huge then gamma = 0 end
    M.finish(self, c, p, gamma)
    return { gamma = gamma }
  end,
}
