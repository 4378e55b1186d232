-- phocas — per coordinate, the mean of the n-f values closest to the trimmed mean.
return {
  name = "phocas",
  summary = "per coordinate, the mean of the n-f values closest to the f-trimmed mean",
  doc = [[Per coordinate k, t = the f-trimmed mean (as in 'trimmed-mean'); out[k] = mean of the
n-f values nearest to t (ties to the smaller value; NaN, ±inf read as +inf). Needs n >= 2f+1.
Extra memory: none.]],
  requires = { text = "n >= 2f+1", check = function(n, f) return n >= 2 * f + 1 end },
  coordinate = function(self) return "phocas", self.f end,
  aggregate = function(self, G, out)
    self:kernel("phocas", self:ptr(G), self.n, self.d, self.f, self:ptr(out))
  end,
}
