-- agt.session.summaries — the run's TensorBoard event file and summary.csv (agt.summary): the
-- means of each step's telemetry since the last write, and each evaluation's metrics.
--
--   local sm = Summaries.new(dir)    (dir nil: nothing is written, every call does nothing)
--   sm:open(step)                    opens the files (at the start of a run; raises "--summary-dir: ...")
--   sm:add(tel)                      adds one step's telemetry to the running sums
--   sm:write(step)                   writes the means since the last write, at step
--   sm:metrics(step, metrics)        writes an evaluation's {name, value} list as "eval-<name>"
--   sm:close(step)                   ends the event file (SessionLog STOP)
--   sm.last_step, sm.last_time       when the means were last written (monotonic seconds)
--   sm.counters                      nil, or a function -> { {tag, value}, ... }: cumulative
--                                    counts (a remote source's UDP chunks) written as they are
-- The sums are not checkpointed: a resumed run starts new means, as TensorFlow's summaries do.
local S = require("agt.summary")
local clock = require("agt.clock")

local M = {}

local KEYS = {
  { "loss", "loss" }, { "lr", "learning_rate" }, { "honest_norm", "robust/honest_norm" },
  { "byz_norm", "robust/byzantine_norm" }, { "agg_norm", "robust/aggregate_norm" },
  { "cosine", "robust/cosine_aggregate_honest_mean" }, { "selected", "robust/selected" },
  { "byz_selected", "robust/byzantine_selected" },
  { "variance_ratio", "robust/honest_variance_ratio" }, { "t_gradients", "time/gradients" },
  { "t_attack", "time/attack" }, { "t_aggregate", "time/aggregation" }, { "t_apply", "time/apply" },
  { "t_step", "time/step" },
}

local Summaries = {}
Summaries.__index = Summaries

function M.new(dir)
  return setmetatable({ dir = dir, sums = {}, count = 0 }, Summaries)
end

function Summaries:open(step)
  if not self.dir or self.file then return end
  local sm, err = S.open(self.dir, { step = step })
  if not sm then error("--summary-dir: " .. err, 0) end
  self.file = sm
end

function Summaries:add(tel)
  local sums = self.sums
  for _, kv in ipairs(KEYS) do
    local v = tel[kv[1]]
    if v then sums[kv[1]] = (sums[kv[1]] or 0) + v end
  end
  self.count = self.count + 1
end

function Summaries:write(step)
  if not self.file or self.count == 0 then return end
  local sc = {}
  for _, kv in ipairs(KEYS) do
    local v = self.sums[kv[1]]
    if v then sc[#sc + 1] = { kv[2], v / self.count } end
  end
  if self.counters then
    for _, c in ipairs(self.counters()) do sc[#sc + 1] = c end
  end
  self.file:scalars(step, clock.wall(), sc)
  self.file:flush()
  self.sums, self.count = {}, 0
  self.last_step, self.last_time = step, clock.mono()
end

function Summaries:metrics(step, wall, metrics)
  if not self.file then return end
  local sc = {}
  for _, m in ipairs(metrics) do sc[#sc + 1] = { "eval-" .. m[1], m[2] } end
  self.file:scalars(step, wall, sc)
  self.file:flush()
end

function Summaries:close(step)
  if self.file then self.file:close(step, clock.wall()); self.file = nil end
end

return M
