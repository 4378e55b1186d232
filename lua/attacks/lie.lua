-- lie — "A little is enough": every Byzantine worker sends mu + z*sigma, with mu and sigma the
-- coordinate-wise mean and standard deviation of the honest gradients. z:auto derives z_max
-- from n and the number m = r of attackers as in the paper: s = floor(n/2 + 1) - m,
-- z = Phi^-1((n - s)/n). The paper subtracts or adds z*sigma; agt adds (z may be negative).
local K = require("agt.attacks")

return {
  name = "lie",
  doc = "a little is enough: every Byzantine row is mu + z*sigma over the honest rows",
  paper = "Baruch, Baruch, Goldberg, 'A Little Is Enough', NeurIPS 2019",
  devices = { "cpu", "cuda" },
  args = {
    { name = "z", default = "auto", type = "number", auto = true,
      doc = "the multiple of sigma; auto = z_max derived from n and r as in the paper" },
    { name = "ddof", default = 0, type = "integer", doc = "0: population std (as the paper), 1: sample std" },
  },
  init = function(self)
    if self.args.z == "auto" then self.z = K.lie_z(self.n, self.r) else self.z = self.args.z end
    if self.args.ddof ~= 0 and self.args.ddof ~= 1 then
      error("attack lie needs ddof 0 or 1, got ddof=" .. tostring(self.args.ddof), 3)
    end
  end,
  apply = function(self, c)
    local v = self:buffer("v", { c.d })
    v:copy(self:honest_mean(c)):axpy(self.z, self:honest_std(c, self.args.ddof))
    self:write(c, v)
    return { z = self.z }
  end,
}
