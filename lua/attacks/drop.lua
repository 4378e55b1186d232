-- drop — each Byzantine worker sends its own honest gradient with a random fraction of its
-- coordinates set to 0 (each coordinate independently, with probability `fraction`).
-- Garfield meant to do this but discarded the masked result and sent the gradient unchanged;
-- here the coordinates really are zeroed.
local C = require("agt.ffi").C

return {
  name = "drop",
  doc = "zero each coordinate of the attacker's own gradient with probability fraction",
  paper = "Garfield (Guerraoui et al., ICDCS 2021) 'drop' attack, done for real",
  args = {
    { name = "fraction", default = 0.3, type = "number", doc = "probability that a coordinate is zeroed" },
  },
  init = function(self)
    local p = self.args.fraction
    if not (p >= 0 and p <= 1) then
      error("attack drop needs 0 <= fraction <= 1, got fraction=" .. tostring(p), 3)
    end
  end,
  apply = function(self, c)
    local rng = self:rng(c)
    local u = self:buffer("u", { c.d })
    local up = u.ptr
    local p = self.args.fraction
    local dropped = 0
    for _, i in ipairs(c.byz) do
      C.agt_rng_uniform(rng.s, up, c.d, 0, 1)
      local row = self:row(c, i)
      for j = 0, c.d - 1 do
        if up[j] < p then row[j] = 0; dropped = dropped + 1 end
      end
    end
    return { dropped = dropped }
  end,
}
