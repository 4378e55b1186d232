-- nan — Byzantine workers send a vector of NaN: a rule that averages blindly outputs NaN.
local C = require("agt.ffi").C

return {
  name = "nan",
  doc = "every coordinate of every Byzantine row is NaN",
  paper = "ByzantineMomentum (El-Mhamdi et al., ICLR 2021) 'nan' attack",
  args = {},
  apply = function(self, c)
    for _, i in ipairs(c.byz) do C.agt_vec_fill(self:raw_row(c, i), c.d, 0 / 0) end
  end,
}
