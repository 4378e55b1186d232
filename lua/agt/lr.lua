-- agt.lr — learning-rate schedules (`--learning-rate NAME --learning-rate-args key:value …`).
--
--   local L = require("agt.lr")
--   local sched = L.new("polynomial", {"initial-rate:0.05"})   -- words or a key -> value table
--   sched:rate(step)   -- the rate applied by the update of global step `step` (0-based)
--
-- The formulas are TensorFlow 1's, with the original system's names and defaults:
--   fixed        initial-rate
--   polynomial   (initial − end)·(1 − min(step, decay-step)/decay-step)^power + end   (cycle off)
--   exponential  initial·decay-rate^(step/decay-step)                 (continuous, no staircase)
-- A schedule holds no state: the rate is a pure function of the step, so a resumed run
-- needs only its global step.
local kv = require("agt.kv")

local L = {}

local function pos(v) return v > 0, "must be > 0" end
local function nonneg(v) return v >= 0, "must be >= 0" end

local SPECS = {
  fixed = {
    doc = "constant rate",
    args = { { name = "initial-rate", default = 1e-3, type = "number", check = pos, doc = "the rate" } },
    rate = function(a) return a["initial-rate"] end,
  },
  polynomial = {
    doc = "polynomial decay from initial-rate to end-rate over decay-step steps, then end-rate",
    args = {
      { name = "initial-rate", default = 1e-3, type = "number", check = pos, doc = "rate at step 0" },
      { name = "end-rate", default = 1e-4, type = "number", check = nonneg, doc = "rate from decay-step on" },
      { name = "decay-step", default = 10000, type = "integer", check = pos, doc = "steps of the decay" },
      { name = "power", default = 1.0, type = "number", check = pos, doc = "exponent of the decay" },
    },
    rate = function(a, step)
      local ds = a["decay-step"]
      local s = math.min(step, ds)
      return (a["initial-rate"] - a["end-rate"]) * (1 - s / ds) ^ a.power + a["end-rate"]
    end,
  },
  exponential = {
    doc = "continuous exponential decay: initial-rate·decay-rate^(step/decay-step)",
    args = {
      { name = "initial-rate", default = 1e-3, type = "number", check = pos, doc = "rate at step 0" },
      { name = "decay-step", default = 10000, type = "integer", check = pos, doc = "steps per decay-rate factor" },
      { name = "decay-rate", default = 0.96, type = "number", check = pos, doc = "factor per decay-step steps" },
    },
    rate = function(a, step) return a["initial-rate"] * a["decay-rate"] ^ (step / a["decay-step"]) end,
  },
}
local NAMES = { "exponential", "fixed", "polynomial" }

function L.list() return { unpack(NAMES) } end

-- The key:value spec of a schedule (for --help).
function L.spec(name)
  local s = SPECS[name]
  return s and s.args
end

local Sched = {}
Sched.__index = Sched

function Sched:rate(step)
  if type(step) ~= "number" or step < 0 then
    error("learning rate: step must be a number >= 0, got " .. tostring(step), 2)
  end
  return self._rate(self.args, step)
end

function L.new(name, args)
  local s = SPECS[name]
  if not s then
    error(string.format("--learning-rate: unknown schedule '%s' (known: %s)", tostring(name),
                        table.concat(NAMES, ", ")), 2)
  end
  local a = kv.parse(args, s.args, "--learning-rate-args (" .. name .. ")")
  return setmetatable({ name = name, args = a, _rate = s.rate }, Sched)
end

function L.help()
  local out = { "Learning-rate schedules (--learning-rate NAME --learning-rate-args key:value ...);",
                "the rate of global step k (0-based) follows TensorFlow 1's formulas:" }
  for _, n in ipairs(NAMES) do
    out[#out + 1] = string.format("\n%s — %s", n, SPECS[n].doc)
    out[#out + 1] = kv.help(SPECS[n].args, "  ")
  end
  return table.concat(out, "\n")
end

return L
