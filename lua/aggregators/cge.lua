-- cge — comparative gradient elimination: the mean of the n-f rows of smallest norm.
return {
  name = "cge",
  summary = "the mean of the n-f rows of smallest L2 norm",
  doc = [[Sort rows by L2 norm (a non-finite norm is +inf; ties: lower index); out = mean of the
first n-f, summed in ascending row order. Needs n >= 2f+1. info.selected = those rows,
smallest norm first.
Extra memory: per-chunk partial norms (n doubles per 8192 coordinates).]],
  requires = { text = "n >= 2f+1", check = function(n, f) return n >= 2 * f + 1 end },
  aggregate = function(self, G, out)
    local k = self.n - self.f
    local sel = self:indices(k)
    self:kernel("cge", self:ptr(G), self.n, self.d, self.f, self:ptr(out), sel)
    return { selected = self:list(sel, k) }
  end,
}
