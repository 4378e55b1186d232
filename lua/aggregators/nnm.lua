-- nnm — nearest-neighbour mixing (Allouah et al. 2023), a pre-aggregation step.
return {
  name = "nnm",
  kind = "pre",
  keeps_rows = true,
  summary = "each row replaced by the mean of its n-f nearest rows, itself included",
  doc = [[Row i becomes the mean of row i and its n-f-1 nearest other rows (squared L2, a
non-finite distance is +inf, ties: lower index), summed in ascending row order.
Keeps n and f. Needs n >= f+1.
Extra memory: the n×d output matrix, n*n doubles of distances.]],
  requires = { text = "n >= f+1", check = function(n, f) return n >= f + 1 end },
  output = function(n, f) return n, f end,
  aggregate = function(self, G, out)
    self:kernel("nnm", self:ptr(G), self.n, self.d, self.f, self:ptr(out))
  end,
}
