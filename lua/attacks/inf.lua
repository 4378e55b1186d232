-- inf — Byzantine workers send a vector of +inf (or -inf with sign:-1).

return {
  name = "inf",
  needs_honest = false, -- reads no honest row: each Byzantine process attacks alone
  doc = "every coordinate of every Byzantine row is sign*inf",
  paper = "ByzFL (LPD-EPFL) 'Inf' attack",
  devices = { "cpu", "cuda" },
  args = {
    { name = "sign", default = 1, type = "integer", doc = "1 for +inf, -1 for -inf" },
  },
  init = function(self)
    if self.args.sign ~= 1 and self.args.sign ~= -1 then
      error("attack inf needs sign 1 or -1, got sign=" .. tostring(self.args.sign), 3)
    end
  end,
  apply = function(self, c)
    for _, i in ipairs(c.byz) do self:row_view(c, i):fill(self.args.sign * math.huge) end
  end,
}
