-- bulyan — El Mhamdi et al. 2018: theta rows chosen by repeated Krum, then a trimmed median.
return {
  name = "bulyan",
  aliases = { "bulyan-co", "bulyan-py" },
  summary = "theta = n-2f rows chosen one by one by Krum, then per coordinate the mean of the beta = theta-2f values closest to the median",
  doc = [[theta = n-2f rounds: each picks the Krum choice among the rows not yet picked, with
scores recomputed exactly on the remaining set R (sum of the |R|-f-2 smallest squared
distances, at least 0 neighbours; ties: lower index); the pairwise distances are computed
once. Then per coordinate over the theta picked rows: m = median, out = mean of the
beta = theta-2f values closest to m (as in 'averaged-median'). Needs n >= 4f+3.
AggregaThor's bulyan-co/bulyan-py averaged shrinking Multi-Krum sets and updated scores
approximately; agt picks single rows with exact scores, as the paper defines.
info.selected = the theta rows in the order picked.
Extra memory: n*n doubles, plus per-chunk partial Gram matrices (<= 256 * n*n doubles).]],
  requires = { text = "n >= 4f+3", check = function(n, f) return n >= 4 * f + 3 end },
  aggregate = function(self, G, out)
    local theta = self.n - 2 * self.f
    local sel = self:indices(theta)
    self:kernel("bulyan", self:ptr(G), self.n, self.d, self.f, self:ptr(out), sel)
    return { selected = self:list(sel, theta) }
  end,
}
