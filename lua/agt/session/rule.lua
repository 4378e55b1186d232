-- agt.session.rule — the aggregation rule of a run (agt.aggregators, or a script's own rule
-- object) and the random stream it draws from, on the CPU or, with --use-gpu, on the GPU.
--
--   local rule = Rule.new(o, n, f, warn, d)  (o: checked options; warn(msg) prints a warning;
--                                            d: the model's size, self.d in the rule's init)
--   rule.rule                   the rule object (what an attack searches against)
--   rule.gpu_fallback           why --use-gpu fell back to the CPU, or nil
--   rule:aggregate(G, out, step) -> info   ({selected = rows kept, ...} as the rule says)
--   rule:state() -> { rule =, ["rng.rule"] = }   rule:set_state(map)
local A = require("agt.aggregators")
local B = require("agt.backend")
local R = require("agt.rng")
local FL = require("agt.cli.run.flags")

local M = {}

local Rule = {}
Rule.__index = Rule

-- --use-gpu: the same rule built for the GPU (agt.aggregators with backend "cuda": same
-- results), fed the host gradient matrix, which it uploads each step; the CPU rule has already
-- checked n, f and the arguments. Without a CUDA build or a device, the run says so and keeps
-- the CPU rule.
local function on_gpu(self, o, n, f, warn)
  local ok, why = B.get("cuda"):available()
  if not ok then
    why = tostring(why):gsub("^[^:\n]*:%d+: ", "")   -- the reason, without the file:line
    warn("--use-gpu: " .. why .. "; aggregating on the CPU")
    self.gpu_fallback = why
    return
  end
  self.rule = FL.as_flag("aggregator", A.new, o.aggregator, n, f, o.aggregator_args, { backend = "cuda" })
end

function M.new(o, n, f, warn, d)
  local self = setmetatable({}, Rule)
  if type(o.aggregator) == "table" then
    self.rule = o.aggregator
  else
    self.rule = FL.as_flag("aggregator", A.new, o.aggregator, n, f, o.aggregator_args, { d = d })
    if o.use_gpu then on_gpu(self, o, n, f, warn) end
  end
  self.rng = R.new(o.seed, R.stream_id("rule", 0))
  return self
end

function Rule:aggregate(G, out, step)
  return self.rule:aggregate(G, out, { step = step, rng = self.rng }) or {}
end

function Rule:state()
  local map = { ["rng.rule"] = self.rng:state() }
  local s = self.rule.state and self.rule:state()
  if s then map.rule = s end
  return map
end

function Rule:set_state(map)
  self.rng:set_state(map["rng.rule"])
  if map.rule and self.rule.set_state then self.rule:set_state(map.rule) end
end

return M
