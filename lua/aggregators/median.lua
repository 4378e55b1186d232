-- median — the coordinate-wise median.
return {
  name = "median",
  summary = "coordinate-wise median (even n: mean of the two middle values)",
  doc = [[Per coordinate k, sort x_1[k] .. x_n[k] with NaN and ±inf read as +inf:
odd n: the middle value; even n: (v[n/2] + v[n/2+1]) / 2 (1-based; AggregaThor took the
upper middle value only). Robust while n >= 2f+1.
Extra memory: none (sorting networks on 16 coordinates at a time, in registers).]],
  requires = { text = "n >= 2f+1", check = function(n, f) return n >= 2 * f + 1 end },
  coordinate = function(_) return "median", 0 end,
  aggregate = function(self, G, out)
    self:kernel("median", self:ptr(G), self.n, self.d, self:ptr(out))
  end,
}
