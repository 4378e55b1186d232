-- average — the arithmetic mean of the n rows. Not robust: one Byzantine row moves it anywhere.
return {
  name = "average",
  summary = "the arithmetic mean of the rows (not robust; the speed baseline)",
  doc = [[out = (1/n) sum_i x_i, the rows summed in order in float32. A single NaN or inf row
makes the output non-finite.
Not robust (tolerates f = 0); it accepts any f so that it can serve as the baseline.
Extra memory: none.]],
  requires = { text = "n >= 1", check = function(n) return n >= 1 end },
  coordinate = function(_) return "average", 0 end,
  aggregate = function(self, G, out)
    self:kernel("average", self:ptr(G), self.n, self.d, self:ptr(out))
  end,
}
