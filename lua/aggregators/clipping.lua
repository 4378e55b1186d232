-- clipping — static norm clipping, a pre-aggregation step.
return {
  name = "clipping",
  kind = "pre",
  keeps_rows = true,
  summary = "each row scaled by min(1, c/|x_i|)",
  doc = [[x_i <- min(1, c/|x_i|) x_i. A row whose norm is not finite cannot be scaled and is
passed on unchanged (the next rule sees it as it is). G itself is never modified.
Keeps n and f.
Extra memory: the n×d output matrix.]],
  args = { { name = "c", default = 2.0, type = "number", doc = "the norm bound (>= 0)" } },
  requires = { text = "c >= 0", check = function(n, f, a) return a.c >= 0 end },
  output = function(n, f) return n, f end,
  aggregate = function(self, G, out)
    self:kernel("clipping", self:ptr(G), self.n, self.d, self.args.c, self:ptr(out))
  end,
}
