-- inf — Byzantine workers send a vector of +inf (or -inf with sign:-1).
local C = require("agt.ffi").C

return {
  name = "inf",
  doc = "every coordinate of every Byzantine row is sign*inf",
  paper = "ByzFL (LPD-EPFL) 'Inf' attack",
  args = {
    { name = "sign", default = 1, type = "integer", doc = "1 for +inf, -1 for -inf" },
  },
  init = function(self)
    if self.args.sign ~= 1 and self.args.sign ~= -1 then
      error("attack inf needs sign 1 or -1, got sign=" .. tostring(self.args.sign), 3)
    end
  end,
  apply = function(self, c)
    for _, i in ipairs(c.byz) do C.agt_vec_fill(self:raw_row(c, i), c.d, self.args.sign * math.huge) end
  end,
}
