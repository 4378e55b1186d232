-- fang — Fang et al.'s full-knowledge local model poisoning, in gradient form (the server
-- steps against the aggregate, so "the direction the model would move" is -sign(mu)).
--   mode:trim  (against coordinate median and trimmed mean) where mu_j > 0 the attackers
--     send values below the honest minimum: uniform in [min/b, min] (min > 0) or [b*min, min]
--     (min <= 0); where mu_j < 0, above the honest maximum: uniform in [max, b*max] (max > 0)
--     or [max, max/b] (max <= 0); where mu_j = 0, mu_j. Each attacker draws its own values.
--   mode:krum  every attacker sends -lambda*sign(mu); lambda starts at the paper's upper
--     bound (1/((n-2r-1) sqrt d)) min_i sum_{l in N_i} ||h_l - h_i|| + max_i ||h_i|| / sqrt d
--     (N_i: the n-r-2 honest rows nearest h_i) and is halved until the run's rule selects a
--     Byzantine row, or below lambda-min, at most `evals` rule evaluations.
--   mode:auto  krum when the rule's name mentions krum or bulyan, trim otherwise.
local F = require("agt.ffi")
local C = F.C

local function sign_mu(self, c)
  local s = self:buffer("sign", { c.d })
  local sp, mu = s.raw, self:honest_mean(c).raw
  for j = 0, c.d - 1 do
    local m = mu[j]
    sp[j] = m > 0 and 1 or (m < 0 and -1 or 0)
  end
  return s
end

local function trim(self, c)
  local d = c.d
  local lo = self:buffer("min", { d }).raw
  local hi = self:buffer("max", { d }).raw
  F.check(C.agt_attack_minmax(self:honest_matrix(c).raw, #c.honest, d, lo, hi))
  local mu = self:honest_mean(c).raw
  local rng = self:rng(c)
  for _, i in ipairs(c.byz) do
    local row = self:raw_row(c, i)
    C.agt_rng_uniform(rng.s, row, d, 0, 1)
    F.check(C.agt_attack_fang_trim(row, mu, lo, hi, d, self.args.b))
  end
  return { mode = "trim" }
end

local function selects_byzantine(info, out, v, d, byz)
  if info and info.selected then
    local is_byz = {}
    for _, i in ipairs(byz) do is_byz[i] = true end
    for _, i in ipairs(info.selected) do if is_byz[i] then return true end end
    return false
  end
  return C.agt_vec_allclose(out.raw, v.raw, d, 1e-6, 0) == 1
end

local function krum(self, c)
  local d = c.d
  local H = self:honest_matrix(c).raw
  local h, n, r = #c.honest, c.n, #c.byz
  -- lambda's upper bound from the paper, in gradient units.
  local k = math.max(0, math.min(h - 1, n - r - 2))
  local min_sum = math.huge
  local max_norm = 0
  local D = self:honest_sqdist(c)
  for i = 1, h do
    local dist = {}
    for j = 1, h do
      if j ~= i then dist[#dist + 1] = math.sqrt(D[(i - 1) * h + (j - 1)]) end
    end
    table.sort(dist)
    local s = 0
    for q = 1, k do s = s + dist[q] end
    if s < min_sum then min_sum = s end
    local nm = C.agt_vec_norm2(H + (i - 1) * d, d)
    if nm > max_norm then max_norm = nm end
  end
  local sq = math.sqrt(d)
  local lambda = min_sum / (math.max(1, n - 2 * r - 1) * sq) + max_norm / sq
  local s = sign_mu(self, c)
  local v = self:buffer("v", { d })
  local function make(l)
    C.agt_vec_copy(v.raw, s.raw, d)
    C.agt_vec_scale(v.raw, d, -l)
  end
  local used, found = 0, false
  while lambda >= self.args["lambda-min"] and used < self.args.evals do
    make(lambda)
    used = used + 1
    local _, info, out = self:rule_distance(c, function(S) self:write(c, v, S) end)
    if selects_byzantine(info, out, v, d, c.byz) then found = true; break end
    lambda = lambda / 2
  end
  if not found then lambda = math.max(lambda, self.args["lambda-min"]) end
  make(lambda)
  self:write(c, v)
  return { mode = "krum", lambda = lambda, selected = found, evals = used }
end

return {
  name = "fang",
  doc = "Fang et al.'s trim attack (median, trimmed mean) or Krum attack (-lambda*sign(mu), lambda halved until selected)",
  paper = "Fang, Cao, Jia, Gong, 'Local Model Poisoning Attacks to Byzantine-Robust Federated Learning', USENIX Security 2020",
  args = {
    { name = "mode", default = "auto", choices = { "auto", "trim", "krum" },
      doc = "trim attack, krum attack, or auto (krum when the rule's name mentions krum or bulyan)" },
    { name = "b", default = 2, type = "number", doc = "trim attack: how far beyond the honest extremes (> 1)" },
    { name = "lambda-min", default = 1e-5, type = "number", doc = "krum attack: stop halving below this" },
    { name = "evals", default = 30, type = "integer", doc = "krum attack: rule evaluations per step at most" },
  },
  init = function(self)
    if not (self.args.b > 1) then error("attack fang needs b > 1, got b=" .. tostring(self.args.b), 3) end
    if not (self.args["lambda-min"] > 0) then error("attack fang needs lambda-min > 0", 3) end
    if self.args.evals < 1 then error("attack fang needs evals >= 1", 3) end
  end,
  apply = function(self, c)
    local mode = self.args.mode
    if mode == "auto" then
      local name = c.rule and tostring(c.rule.name or ""):lower() or ""
      mode = (name:find("krum", 1, true) or name:find("bulyan", 1, true)) and "krum" or "trim"
    end
    if mode == "krum" then return krum(self, c) end
    return trim(self, c)
  end,
}
