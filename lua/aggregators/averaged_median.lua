-- averaged-median (meamed) — per coordinate, the mean of the beta values closest to the median.
return {
  name = "averaged-median",
  aliases = { "meamed" },
  summary = "per coordinate, the mean of the beta = n-f values closest to the median",
  doc = [[Per coordinate k, m = the coordinate median (as in 'median'); out[k] = mean of the
beta values nearest to m (|v - m|, ties to the smaller value; NaN, ±inf read as +inf, and
a value equal to m is at distance 0). beta defaults to n-f. Needs n >= 2f+1.
Extra memory: none.]],
  args = {
    { name = "beta", default = function(n, f) return n - f end, default_text = "n-f",
      doc = "how many values around the median are averaged (1..n)" },
  },
  requires = { text = "n >= 2f+1", check = function(n, f, a)
    if a.beta < 1 or a.beta > n then return false, "beta=" .. a.beta .. " must be in 1..n" end
    return n >= 2 * f + 1
  end },
  coordinate = function(self) return "meamed", self.args.beta end,
  aggregate = function(self, G, out)
    self:kernel("meamed", self:ptr(G), self.n, self.d, self.args.beta, self:ptr(out))
  end,
}
