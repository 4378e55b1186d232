-- gaussian — each Byzantine worker sends a vector of independent N(mean, std) coordinates.
local C = require("agt.ffi").C

return {
  name = "gaussian",
  needs_honest = false, -- reads no honest row: each Byzantine process attacks alone
  doc = "each coordinate of each Byzantine row ~ N(mean, std^2), independently",
  paper = "Blanchard et al., NeurIPS 2017 (Gaussian Byzantine workers); ByzFL defaults mean 0, std 1",
  devices = { "cpu", "cuda" },
  args = {
    { name = "mean", default = 0, type = "number", doc = "mean of every coordinate" },
    { name = "std", default = 1, type = "number", doc = "standard deviation of every coordinate" },
  },
  init = function(self)
    if not (self.args.std >= 0) then
      error("attack gaussian needs std >= 0, got std=" .. tostring(self.args.std), 3)
    end
  end,
  apply = function(self, c)
    local rng = self:rng(c)
    for _, i in ipairs(c.byz) do
      self:draw_row(c, i, function(p) C.agt_rng_normal(rng.s, p, c.d, self.args.mean, self.args.std) end)
    end
  end,
}
