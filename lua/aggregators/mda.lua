-- mda — minimum-diameter averaging: the n-f rows of smallest diameter, averaged.
local ffi = require("ffi")
local function binom(n, k)
  local r = 1
  for i = 1, k do r = r * (n - k + i) / i end
  return r
end
return {
  name = "mda",
  summary = "the mean of the subset of n-f rows with the smallest diameter (exact enumeration)",
  doc = [[S* = argmin over subsets S of n-f rows of max_{i,j in S} |x_i - x_j|^2 (a non-finite
distance is +inf; ties: the lexicographically first set of row indices); out = mean of S*.
Exact: all C(n,f) subsets are enumerated (branch and bound prunes those that cannot win);
refused at construction when C(n,f) exceeds the budget argument. Needs n >= 2f+1.
info.selected = S*.
Extra memory: n*n doubles, plus per-chunk partial Gram matrices.]],
  args = {
    { name = "budget", default = 1e7, type = "number", doc = "largest C(n,f) accepted" },
  },
  requires = { text = "n >= 2f+1 and C(n,f) <= budget", check = function(n, f, a)
    if n < 2 * f + 1 then return false end
    local c = binom(n, f)
    if c > a.budget then
      return false, string.format("C(%d,%d) = %.0f subsets exceed budget=%.0f", n, f, c, a.budget)
    end
    return true
  end },
  aggregate = function(self, G, out)
    local k = self.n - self.f
    local sel = self:indices(k)
    self:kernel("mda", self:ptr(G), self.n, self.d, self.f, self.args.budget, self:ptr(out), sel)
    return { selected = self:list(sel, k) }
  end,
}
