-- mimic — every Byzantine worker sends a copy of one honest worker's gradient, which
-- over-weights that worker's data (harmful when data are heterogeneous).
--   variant:fixed      copies the target-th honest worker (1-based, in worker order).
--   variant:principal  Karimireddy et al.'s variant: during the first `warmup` steps it tracks
--                      the top principal direction z of the honest gradients by a streaming
--                      power iteration (acc += C_t z, z = acc/||acc||, C_t the scatter matrix
--                      of step t's centred honest rows), copying the honest worker with the
--                      largest <g_i, z>; at the end of the warm-up it fixes that worker for good.
-- State (checkpointed): the direction z, the accumulator, the step count and the chosen target.
local ffi = require("ffi")
local C = require("agt.ffi").C
local R = require("agt.rng")

local HEADER = "agt-mimic/1"

local function argmax_dot(self, c, z)
  local best, best_k = -math.huge, 1
  for k, i in ipairs(c.honest) do
    local v = C.agt_vec_dot(self:raw_row(c, i), z, c.d)
    if v > best then best, best_k = v, k end
  end
  return best_k
end

return {
  name = "mimic",
  doc = "every Byzantine row copies one honest worker: a fixed one, or the one along the top principal direction",
  paper = "Karimireddy, He, Jaggi, 'Byzantine-Robust Learning on Heterogeneous Datasets via Bucketing', ICLR 2022",
  args = {
    { name = "variant", default = "fixed", choices = { "fixed", "principal" },
      doc = "fixed: copy the target-th honest worker; principal: the paper's variant" },
    { name = "target", default = 1, type = "integer", doc = "variant:fixed, which honest worker (1-based among the honest ones)" },
    { name = "warmup", default = 100, type = "integer", doc = "variant:principal, steps spent estimating the direction" },
  },
  init = function(self)
    if self.args.target < 1 then error("attack mimic needs target >= 1, got target=" .. self.args.target, 3) end
    if self.args.warmup < 0 then error("attack mimic needs warmup >= 0, got warmup=" .. self.args.warmup, 3) end
    self.t = 0          -- warm-up steps seen
    self.target = nil   -- fixed target after the warm-up (position among the honest)
  end,
  apply = function(self, c)
    local h = #c.honest
    if h == 0 then error("attack mimic needs at least one honest worker", 2) end
    local k
    if self.args.variant == "fixed" then
      k = self.args.target
      if k > h then error(string.format("attack mimic: target=%d but only %d honest workers", k, h), 2) end
    elseif self.target then
      k = math.min(self.target, h)
    else
      local d = c.d
      if not self.z or self.z:numel() ~= d then
        self.z = self:buffer("z", { d })
        self.acc = self:buffer("acc", { d })
        local g = R.new(self.seed, R.stream_id("mimic-direction", 0))
        C.agt_rng_normal(g.s, self.z.raw, d, 0, 1)
        C.agt_vec_scale(self.z.raw, d, 1 / C.agt_vec_norm2(self.z.raw, d))
        C.agt_vec_fill(self.acc.raw, d, 0)
      end
      -- acc += sum_i <h_i - mu, z> (h_i - mu)
      local mu = self:honest_mean(c).raw
      local zp, ap = self.z.raw, self.acc.raw
      local dz = C.agt_vec_dot(mu, zp, d)
      local tmp = self:buffer("centred", { d }).raw
      for _, i in ipairs(c.honest) do
        C.agt_vec_sub(tmp, self:raw_row(c, i), mu, d)
        local w = C.agt_vec_dot(self:raw_row(c, i), zp, d) - dz
        C.agt_vec_axpy(ap, tmp, d, w)
      end
      local norm = C.agt_vec_norm2(ap, d)
      if norm > 0 and norm == norm then
        C.agt_vec_copy(zp, ap, d)
        C.agt_vec_scale(zp, d, 1 / norm)
      end
      self.t = self.t + 1
      k = argmax_dot(self, c, zp)
      if self.t >= self.args.warmup then self.target = k end
    end
    self:write(c, self:raw_row(c, c.honest[k]))
    return { target = c.honest[k] }
  end,
  state = function(self)
    if self.args.variant ~= "principal" then return nil end
    local parts = { string.format("%s %d %d %d\n", HEADER, self.t, self.target or 0, self.z and self.z:numel() or 0) }
    if self.z then
      parts[2] = ffi.string(self.z.raw, 4 * self.z:numel())
      parts[3] = ffi.string(self.acc.raw, 4 * self.acc:numel())
    end
    return table.concat(parts)
  end,
  set_state = function(self, s)
    local t, target, d, rest = s:match("^agt%-mimic/1 (%d+) (%d+) (%d+)\n()")
    if not t then error("attack mimic: not a mimic state", 2) end
    t, target, d = tonumber(t), tonumber(target), tonumber(d)
    if #s - rest + 1 ~= 8 * d then error("attack mimic: state has the wrong size", 2) end
    self.t = t
    self.target = target > 0 and target or nil
    if d > 0 then
      self.z = self:buffer("z", { d })
      self.acc = self:buffer("acc", { d })
      ffi.copy(self.z.raw, s:sub(rest, rest + 4 * d - 1), 4 * d)
      ffi.copy(self.acc.raw, s:sub(rest + 4 * d), 4 * d)
    else
      self.z, self.acc = nil, nil
    end
  end,
}
