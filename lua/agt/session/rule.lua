-- agt.session.rule — the aggregation rule of a run (agt.aggregators, or a script's own rule
-- object) and the random stream it draws from, on the CPU or, with --use-gpu, on the GPU
-- (without a device, --use-gpu is an error that says why).
--
--   local rule = Rule.new(o, n, f, warn, d)  (o: checked options; warn(msg) prints a warning;
--                                            d: the model's size, self.d in the rule's init)
--   rule.rule                   the rule object (what an attack searches against)
--   rule:aggregate(G, out, step [, faulty]) -> info   ({selected = rows kept, ...} as the rule
--                               says). faulty: ascending rows that did not arrive this step (a
--                               distributed run): m of them count against f, the rule runs on
--                               the n−m others with f−m (refused, naming the rows, when m > f).
--   rule:state() -> { rule =, ["rng.rule"] = }   rule:set_state(map)
local A = require("agt.aggregators")
local B = require("agt.backend")
local R = require("agt.rng")
local T = require("agt.tensor")
local FL = require("agt.cli.run.flags")

local M = {}

local Rule = {}
Rule.__index = Rule

-- --use-gpu: the same rule built for the GPU (agt.aggregators with backend "cuda": same
-- results), fed G where it is (the device; a host G is uploaded each step); the CPU rule has
-- already checked n, f and the arguments. Without a CUDA build or a device, an error.
-- A rule given as an object gets G where it is.
local function on_gpu(self, o, n, f, d)
  local ok, why = B.get("cuda"):available()
  if not ok then
    why = tostring(why):gsub("^[^:\n]*:%d+: ", "")   -- the reason, without the file:line
    error("--use-gpu: " .. why .. " (run without --use-gpu to train on the CPU)", 0)
  end
  if type(o.aggregator) == "table" then return end
  self.rule = FL.as_flag("aggregator", A.new, o.aggregator, n, f, o.aggregator_args, { d = d, backend = "cuda" })
end

function M.new(o, n, f, warn, d)
  local self = setmetatable({ o = o, n = n, f = f, sub = {} }, Rule)
  if type(o.aggregator) == "table" then
    self.rule = o.aggregator
  else
    self.rule = FL.as_flag("aggregator", A.new, o.aggregator, n, f, o.aggregator_args, { d = d })
  end
  if o.use_gpu then on_gpu(self, o, n, f, d) end
  self.rng = R.new(o.seed, R.stream_id("rule", 0))
  return self
end

-- The rule for n−m rows and f−m Byzantine ones (on the same backend as the run's rule), and its
-- (n−m) × d matrix on G's device, made on first use.
function Rule:_without(m, d, device)
  local sub = self.sub[m]
  if not sub then
    if type(self.o.aggregator) == "table" then
      error("a rule given as an object cannot aggregate without the rows of faulty workers", 0)
    end
    local on_cuda = self.o.use_gpu
    sub = { rule = FL.as_flag("aggregator", A.new, self.o.aggregator, self.n - m, self.f - m,
                              self.o.aggregator_args, { d = d, backend = on_cuda and "cuda" or nil }),
            G = T.new({ self.n - m, d }, "f32", device) }
    self.sub[m] = sub
  end
  return sub
end

-- Raises when m = #faulty rows are more than f.
function Rule:check_faulty(step, faulty)
  local m = faulty and #faulty or 0
  if m > self.f then
    local names = {}
    for k, i in ipairs(faulty) do names[k] = tostring(i) end
    error(string.format("step %d: %d rows are faulty (rows %s), more than f = %d: the rule cannot "
      .. "aggregate without them (see the faults above; a larger --step-timeout or "
      .. "--nb-decl-byz-workers may help)", step, m, table.concat(names, ", "), self.f), 0)
  end
end

function Rule:aggregate(G, out, step, faulty)
  local ctx = { step = step, rng = self.rng }
  local m = faulty and #faulty or 0
  if m == 0 then return self.rule:aggregate(G, out, ctx) or {} end
  self:check_faulty(step, faulty)
  local d = G:size(2)
  local sub = self:_without(m, d, G.device)
  local is_faulty, kept = {}, {}
  for _, i in ipairs(faulty) do is_faulty[i] = true end
  for i = 1, self.n do
    if not is_faulty[i] then
      kept[#kept + 1] = i
      sub.G:row(#kept):copy(G:row(i))
    end
  end
  local info = sub.rule:aggregate(sub.G, out, ctx) or {}
  if info.selected then
    local sel = {}
    for k, j in ipairs(info.selected) do sel[k] = kept[j] end
    info.selected = sel
  end
  return info
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
