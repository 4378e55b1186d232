-- empire — "Fall of empires" (inner-product manipulation): every Byzantine worker sends
-- -epsilon times the honest mean, so that a rule whose output stays close to the honest mean
-- in norm can still lose its positive inner product with the true gradient.

return {
  name = "empire",
  doc = "inner-product manipulation: every Byzantine row is -epsilon * mu",
  paper = "Xie, Koyejo, Gupta, 'Fall of Empires: Breaking Byzantine-tolerant SGD by Inner Product Manipulation', UAI 2020",
  devices = { "cpu", "cuda" },
  args = {
    { name = "epsilon", default = 0.1, type = "number", doc = "scale of the reversed mean (the paper uses 0.1 and 100)" },
  },
  apply = function(self, c)
    local v = self:buffer("v", { c.d })
    v:copy(self:honest_mean(c)):scale(-self.args.epsilon)
    self:write(c, v)
    return { epsilon = self.args.epsilon }
  end,
}
