-- average-nan — per coordinate, the mean of the finite values (AggregaThor's rule for lossy transport).
return {
  name = "average-nan",
  summary = "per coordinate, the mean of the finite values; 0 where there is none",
  doc = [[out[k] = mean of the finite values among x_1[k] .. x_n[k] (NaN and ±inf skipped);
0 where no value is finite (AggregaThor returned NaN there). Not robust to finite outliers.
Extra memory: none.]],
  requires = { text = "n >= 1", check = function(n) return n >= 1 end },
  coordinate = function(_) return "average_nan", 0 end,
  aggregate = function(self, G, out)
    self:kernel("average_nan", self:ptr(G), self.n, self.d, self:ptr(out))
  end,
}
