-- reverse — sign flipping: the Byzantine workers send -factor times the honest mean (the
-- omniscient form), or -factor times their own honest gradient (of:own, as Garfield's
-- "reverse" with factor 100 and the bucketing paper's "bit flipping").

return {
  name = "reverse",
  -- of:own flips each attacker's own gradient (it runs in each Byzantine process alone)
  needs_honest = function(self) return self.args.of ~= "own" end,
  doc = "sign flipping: every Byzantine row is -factor * (honest mean | its own gradient)",
  paper = "Allen-Zhu et al., ICLR 2021 / ByzFL SignFlipping (-mu); Garfield 'reverse' (-100 g)",
  devices = { "cpu", "cuda" },
  args = {
    { name = "factor", default = 1, type = "number", doc = "scale of the flipped vector (Garfield used 100)" },
    { name = "of", default = "mean", choices = { "mean", "own" },
      doc = "flip the honest mean (omniscient) or the attacker's own honest gradient" },
  },
  apply = function(self, c)
    local a = -self.args.factor
    if self.args.of == "own" then
      for _, i in ipairs(c.byz) do self:row_view(c, i):scale(a) end
      return { factor = self.args.factor }
    end
    local v = self:buffer("v", { c.d })
    v:copy(self:honest_mean(c)):scale(a)
    self:write(c, v)
    return { factor = self.args.factor }
  end,
}
