-- centered-clipping — Karimireddy et al. 2021: clip around the previous output, L times.
local ffi = require("ffi")
return {
  name = "centered-clipping",
  aliases = { "cclip" },
  summary = "v <- v + (1/n) sum_i (x_i - v) min(1, tau/|x_i - v|), L times, from the previous output",
  doc = [[v_0 = the previous step's output (zeros at the start; saved by rule:state(), so a
resumed run continues exactly). L times: v <- v + (1/n) sum_i (x_i - v) min(1, tau/|x_i - v|);
a row at a non-finite distance contributes 0. The output is v, which becomes the next v_0.
One read of G per iteration, plus one for the first distances. Needs n >= 2f+1.
Extra memory: d floats (the previous output), per-chunk partial sums.]],
  args = {
    { name = "tau", default = 10.0, type = "number", doc = "clipping radius (> 0)" },
    { name = "iters", default = 3, doc = "L, the number of clipping iterations" },
  },
  requires = { text = "n >= 2f+1", check = function(n, f, a)
    if not (a.tau > 0) then return false, "tau must be > 0" end
    if a.iters < 0 then return false, "iters must be >= 0" end
    return n >= 2 * f + 1
  end },
  aggregate = function(self, G, out)
    local d = self.d
    if not self.v or self.vd ~= d then
      self.v = ffi.new("float[?]", d) -- zeros
      self.vd = d
      if self.pending then
        ffi.copy(self.v, self.pending, math.min(#self.pending, 4 * d))
        self.pending = nil
      end
    end
    -- v lives in out during the kernel; the kernel reads it as the centre.
    ffi.copy(self:ptr(out), self.v, 4 * d)
    self:kernel("centered_clipping", self:ptr(G), self.n, d, self.args.tau, self.args.iters, self:ptr(out))
    ffi.copy(self.v, self:ptr(out), 4 * d)
  end,
  state = function(self)
    if not self.v then return self.pending end
    return ffi.string(self.v, 4 * self.vd)
  end,
  set_state = function(self, s)
    if self.v and #s == 4 * self.vd then
      ffi.copy(self.v, s, #s)
    else
      self.v, self.vd, self.pending = nil, nil, s
    end
  end,
}
