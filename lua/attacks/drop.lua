-- drop — each Byzantine worker sends its own honest gradient with a random fraction of its
-- coordinates set to 0 (each coordinate independently, with probability `fraction`).
-- Garfield meant to do this but discarded the masked result and sent the gradient unchanged;
-- here the coordinates really are zeroed.
local ffi = require("ffi")
local F = require("agt.ffi")
local C = F.C

return {
  name = "drop",
  needs_honest = false, -- reads no honest row: each Byzantine process attacks alone
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
    local count = ffi.new("size_t[1]")
    local dropped = 0
    for _, i in ipairs(c.byz) do
      C.agt_rng_uniform(rng.s, u.raw, c.d, 0, 1)
      F.check(C.agt_attack_drop(self:raw_row(c, i), u.raw, c.d, self.args.fraction, count))
      dropped = dropped + tonumber(count[0])
    end
    return { dropped = dropped }
  end,
}
