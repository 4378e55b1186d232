-- arc — adaptive robust clipping (Allouah et al. 2024), a pre-aggregation step.
return {
  name = "arc",
  kind = "pre",
  keeps_rows = true,
  summary = "the k = floor(2(f/n)(n-f)) largest-norm rows clipped to the (k+1)-th largest norm",
  doc = [[k = floor(2 f (n-f) / n). Rows ordered by norm, largest first (a non-finite norm is
+inf; ties: lower index); the first k are scaled to the norm of the (k+1)-th. A row of
non-finite norm cannot be scaled and is passed on unchanged. Keeps n and f. Needs n >= f.
Extra memory: the n×d output matrix.]],
  requires = { text = "n >= f", check = function(n, f) return n >= f end },
  output = function(n, f) return n, f end,
  aggregate = function(self, G, out)
    self:kernel("arc", self:ptr(G), self.n, self.d, self.f, self:ptr(out))
  end,
}
