-- random — each Byzantine worker sends a vector drawn uniformly in [lo, hi) per coordinate.
-- Every attacker draws its own vector from the step's seeded stream.
local C = require("agt.ffi").C

return {
  name = "random",
  needs_honest = false, -- reads no honest row: each Byzantine process attacks alone
  doc = "each coordinate of each Byzantine row ~ U[lo, hi), independently",
  paper = "Garfield (Guerraoui et al., ICDCS 2021) 'random' attack, U[0,1)",
  devices = { "cpu", "cuda" },
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
      self:draw_row(c, i, function(p) C.agt_rng_uniform(rng.s, p, c.d, self.args.lo, self.args.hi) end)
    end
  end,
}
