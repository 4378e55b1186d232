-- multi-krum — the average of the m rows of lowest Krum score.
local function m_nf2(n, f) return { m = n - f - 2 } end
return {
  name = "multi-krum",
  aliases = { "krum-co", "krum-tf", "krum-py" },
  presets = { ["krum-co"] = m_nf2, ["krum-tf"] = m_nf2, ["krum-py"] = m_nf2 },
  summary = "the average of the m rows of lowest Krum score (m = n-f by default)",
  doc = [[Krum scores as in 'krum' (n-f-2 nearest rows); out = mean of the m rows of lowest
score (ties: lower index), summed in ascending row order. AggregaThor's krum-co, krum-tf and
krum-py are this rule with m = n-f-2. Needs n >= 2f+3. info.selected = the m rows, best first.
Extra memory: n*n doubles, plus per-chunk partial Gram matrices (<= 256 * n*n doubles).]],
  args = {
    { name = "m", default = function(n, f) return n - f end, default_text = "n-f",
      doc = "how many rows are averaged (1..n)" },
  },
  requires = { text = "n >= 2f+3", check = function(n, f, a)
    if a.m < 1 or a.m > n then return false, "m=" .. a.m .. " must be in 1..n" end
    return n >= 2 * f + 3
  end },
  aggregate = function(self, G, out)
    local m = self.args.m
    local sel = self:indices(m)
    self:kernel("multi_krum", self:ptr(G), self.n, self.d, self.f, m, self:ptr(out), sel)
    return { selected = self:list(sel, m) }
  end,
}
