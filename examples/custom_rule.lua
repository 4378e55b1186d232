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
    -- The checked API: G:row(i) is row i (1-based) and row[k] its k-th value; an index outside
    -- the tensor is a Lua error naming the line, never a write into other memory. (G.ptr and
    -- out.ptr are raw 0-based pointers, faster and unchecked: reach for them once the loop is
    -- right, or call an engine kernel as said above. Run with AGT_DEBUG=1 in the environment
    -- and they are checked too: out.ptr[self.d] = 0 is then an error at its line naming the
    -- index and out's size, instead of a silent write past out.)
    local rows = {}
    for i = 1, n do rows[i] = G:row(i) end
    local col = {}
    for k = 1, d do
      for i = 1, n do
        local x = rows[i][k]
        col[i] = (x == x and x ~= inf and x ~= -inf) and x or inf
      end
      table.sort(col)
      local s = 0
      for i = t + 1, n - t do s = s + col[i] end
      out[k] = s / (n - 2 * t)
    end
    return {} -- info: put { selected = {...} } here if the rule picks rows
  end,
}
