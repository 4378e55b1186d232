-- zero — Byzantine workers send the zero vector (a crashed or lazy worker that still answers).
local C = require("agt.ffi").C

return {
  name = "zero",
  doc = "every Byzantine row is 0",
  paper = "a silent worker; the baseline of Xie et al., 'Fall of empires', UAI 2020 (epsilon = 0)",
  args = {},
  apply = function(self, c)
    for _, i in ipairs(c.byz) do C.agt_vec_fill(self:raw_row(c, i), c.d, 0) end
  end,
}
