-- nan — Byzantine workers send a vector of NaN: a rule that averages blindly outputs NaN.

return {
  name = "nan",
  needs_honest = false, -- reads no honest row: each Byzantine process attacks alone
  doc = "every coordinate of every Byzantine row is NaN",
  paper = "ByzantineMomentum (El-Mhamdi et al., ICLR 2021) 'nan' attack",
  devices = { "cpu", "cuda" },
  args = {},
  apply = function(self, c)
    for _, i in ipairs(c.byz) do self:row_view(c, i):fill(0 / 0) end
  end,
}
