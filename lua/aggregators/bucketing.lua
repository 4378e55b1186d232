-- bucketing — Karimireddy et al. 2022: shuffle the rows, average buckets of s rows.
local R = require("agt.rng")
return {
  name = "bucketing",
  kind = "pre",
  summary = "seeded shuffle of the rows, then the mean of each bucket of s consecutive rows",
  doc = [[A uniform random permutation of the n rows (from ctx.rng when the caller gives one,
else the step's own stream (seed, "bucketing"), whose position rule:state() saves), then
bucket b = mean of rows perm[b*s+1 .. min((b+1)*s, n)] in that order: ceil(n/s) rows out,
the last bucket possibly smaller. n becomes ceil(n/s); f stays f (each Byzantine row can
spoil one bucket), so the next rule is checked with those numbers.
Extra memory: the ceil(n/s)×d output matrix.]],
  args = {
    { name = "s", default = 2, doc = "bucket size (>= 1)" },
    { name = "seed", default = 1, doc = "seed of the step's own stream (used when ctx.rng is absent)" },
  },
  requires = { text = "s >= 1", check = function(n, f, a) return a.s >= 1 end },
  output = function(n, f, a) return math.ceil(n / a.s), f end,
  init = function(self) self.rng = R.new(self.args.seed, "bucketing") end,
  aggregate = function(self, G, out, ctx)
    local r = (ctx and ctx.rng) or self.rng
    local perm = r:permutation(self.n)
    self:kernel("bucketing", self:ptr(G), self.n, self.d, self.args.s, perm.raw, self:ptr(out))
    perm:free()
  end,
  state = function(self) return self.rng:state() end,
  set_state = function(self, s) self.rng:set_state(s) end,
}
