-- zero — Byzantine workers send the zero vector (a crashed or lazy worker that still answers).

return {
  name = "zero",
  needs_honest = false, -- reads no honest row: each Byzantine process attacks alone
  doc = "every Byzantine row is 0",
  paper = "a silent worker; the baseline of Xie et al., 'Fall of empires', UAI 2020 (epsilon = 0)",
  devices = { "cpu", "cuda" },
  args = {},
  apply = function(self, c)
    for _, i in ipairs(c.byz) do self:row_view(c, i):fill(0) end
  end,
}
