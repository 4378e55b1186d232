-- geometric-median — smoothed Weiszfeld iterations from the coordinate median (RFA).
local ffi = require("ffi")
return {
  name = "geometric-median",
  aliases = { "geomed", "rfa" },
  summary = "approximate argmin_z sum_i |z - x_i| by smoothed Weiszfeld, from the coordinate median",
  doc = [[z_0 = the coordinate median. Each iteration: w_i = 1 / max(nu, |x_i - z|) for rows at a
finite distance (others weigh 0 and are skipped), z <- sum w_i x_i / sum w_i. Stops after
max-iter iterations, or when |z_new - z| <= tol |z|. One read of G per iteration (the new z
and the next distances are computed in the same pass). Robust while n >= 2f+1.
info.iterations = the number of iterations run.
Extra memory: per-chunk partial sums (<= (n+2) doubles per 8192 coordinates).]],
  args = {
    { name = "nu", default = 1e-6, type = "number", doc = "smoothing: distances below nu count as nu (> 0)" },
    { name = "max-iter", default = 100, doc = "at most this many iterations" },
    { name = "tol", default = 1e-7, type = "number", doc = "stop when |z_new - z| <= tol |z| (0: run max-iter)" },
  },
  requires = { text = "n >= 2f+1", check = function(n, f, a)
    if not (a.nu > 0) then return false, "nu must be > 0" end
    if a["max-iter"] < 0 or not (a.tol >= 0) then return false, "max-iter and tol must be >= 0" end
    return n >= 2 * f + 1
  end },
  init = function(self) self.iters = ffi.new("int64_t[1]") end,
  aggregate = function(self, G, out)
    local a = self.args
    self:kernel("geometric_median", self:ptr(G), self.n, self.d, a.nu, a["max-iter"], a.tol,
                self:ptr(out), self.iters)
    return { iterations = tonumber(self.iters[0]) }
  end,
}
