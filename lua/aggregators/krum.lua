-- krum — Blanchard et al. 2017: the row whose n-f-2 nearest rows are closest.
return {
  name = "krum",
  summary = "the row with the smallest sum of squared distances to its n-f-2 nearest rows",
  doc = [[score(i) = sum of the n-f-2 smallest squared L2 distances from row i to the other
rows (a non-finite distance is +inf); out = the row of lowest score (ties: lower index).
Distances come from a Gram matrix (one read of G), pairs closer than a quarter of
|x_i|^2 + |x_j|^2 recomputed exactly. Needs n >= 2f+3. info.selected = {row}.
Extra memory: n*n doubles, plus per-chunk partial Gram matrices (<= 256 * n*n doubles).]],
  requires = { text = "n >= 2f+3", check = function(n, f) return n >= 2 * f + 3 end },
  aggregate = function(self, G, out)
    local sel = self:indices(1)
    self:kernel("multi_krum", self:ptr(G), self.n, self.d, self.f, 1, self:ptr(out), sel)
    return { selected = self:list(sel, 1) }
  end,
}
