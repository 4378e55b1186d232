-- trimmed-mean — per coordinate, drop the f largest and f smallest values, average the rest.
return {
  name = "trimmed-mean",
  summary = "per coordinate, the mean after dropping the f largest and the f smallest values",
  doc = [[Per coordinate k, sort the n values (NaN, ±inf read as +inf) and average
v[f+1] .. v[n-f] (1-based), summed in ascending order. Needs n > 2f.
Extra memory: none.]],
  requires = { text = "n >= 2f+1", check = function(n, f) return n >= 2 * f + 1 end },
  coordinate = function(self) return "trimmed_mean", self.f end,
  aggregate = function(self, G, out)
    self:kernel("trimmed_mean", self:ptr(G), self.n, self.d, self.f, self:ptr(out))
  end,
}
