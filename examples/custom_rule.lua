-- custom_rule.lua — an aggregation rule of your own, written in plain Lua.
--
--   agt run --aggregator examples/custom_rule.lua --nb-decl-byz-workers 2 ...
--   agt run --aggregator nnm,examples/custom_rule.lua ...     (chained after a step)
--
-- A rule file returns a table with a name, its arguments, its requirement on n and f, and
-- an aggregate(self, G, out, ctx) function. G is the n×d gradient matrix (an f32 tensor,
-- row-major), out the d-vector to fill; self.n, self.f, self.d and self.args are set.
-- This one is a per-coordinate trimmed mean in pure Lua (slow, but plain): sort each
-- coordinate's n values (NaN and ±inf as +inf, like the built-in rules), drop the f
-- largest and f smallest, average the rest. For speed, call an engine kernel instead:
-- self:kernel("trimmed_mean", self:ptr(G), self.n, self.d, self.f, self:ptr(out)).
local inf = math.huge

return {
  name = "lua-trimmed-mean",
  summary = "per coordinate, the mean after dropping the f largest and f smallest values (plain Lua)",
  doc = "Per coordinate: sort (NaN, ±inf as +inf), drop f at each end, average the rest.",
  args = {
    -- key:value words on the command line (--aggregator-args trim:3) override the default
    { name = "trim", default = function(n, f) return f end, doc = "values dropped at each end (default f)" },
  },
  requires = {
    text = "n >= 2f+1",
    check = function(n, f, args)
      if 2 * args.trim >= n then return false, "trim must be < n/2" end
      return n >= 2 * f + 1
    end,
  },
  aggregate = function(self, G, out, ctx)
    local n, d, t = self.n, self.d, self.args.trim
    local g, o = G.ptr, out.ptr
    local col = {}
    for k = 0, d - 1 do
      for i = 0, n - 1 do
        local x = g[i * d + k]
        col[i + 1] = (x == x and x ~= inf and x ~= -inf) and x or inf
      end
      table.sort(col)
      local s = 0
      for i = t + 1, n - t do s = s + col[i] end
      o[k] = s / (n - 2 * t)
    end
    return {} -- info: put { selected = {...} } here if the rule picks rows
  end,
}
