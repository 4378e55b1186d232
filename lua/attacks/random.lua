-- random — each Byzantine worker sends a vector drawn uniformly in [lo, hi) per coordinate.
-- Every attacker draws its own vector from the step's seeded stream.
local C = require("agt.ffi").C

return {
  name = "random",
  doc = "each coordinate of each Byzantine row ~ U[lo, hi), independently",
  paper = "Garfield (Guerraoui et al., ICDCS 2021) 'random' attack, U[0,1)",
  args = {
    { name = "lo", default = 0, type = "number", doc = "lower end of the range" },
    { name = "hi", default = 1, type = "number", doc = "upper end of the range (excluded)" },
  },
  init = function(self)
    if not (self.args.lo < self.args.hi) then
      error(string.format("attack random needs lo < hi, got lo=%g hi=%g", self.args.lo, self.args.hi), 3)
    end
  end,
  apply = function(self, c)
    local rng = self:rng(c)
    for _, i in ipairs(c.byz) do
      C.agt_rng_uniform(rng.s, self:raw_row(c, i), c.d, self.args.lo, self.args.hi)
    end
  end,
}
