-- custom_attack.lua — a user's own attack in a few lines, loaded by path:
--   agt run --attack examples/custom_attack.lua --attack-args scale:4
-- or from Lua: require("agt.attacks").new("examples/custom_attack.lua", {"scale:4"}, {n = 11, f = 2})
--
-- It sends the honest mean pushed along its own coordinates' signs: mu - scale * sign(mu).
-- apply(self, c) gets c.G (n×d), c.honest and c.byz (1-based rows), c.step, c.rule, c.rng;
-- self:honest_mean(c), self:honest_std(c), self:row(c, i), self:write(c, v) and
-- self:rule_distance(c, fill) do the usual work through the engine's kernels.
return {
  name = "sign-push",
  doc = "every Byzantine row is mu - scale * sign(mu)",
  paper = "an example, not from a paper",
  args = { { name = "scale", default = 1, type = "number", doc = "how far to push" } },
  apply = function(self, c)
    local mu = self:honest_mean(c).ptr
    local v = self:buffer("v", { c.d }).ptr
    for j = 0, c.d - 1 do
      v[j] = mu[j] - self.args.scale * (mu[j] > 0 and 1 or (mu[j] < 0 and -1 or 0))
    end
    self:write(c, v)
  end,
}
