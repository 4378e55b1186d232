-- agt.session.optimizer — how the aggregate moves θ: the optimizer (agt.optim, or a script's
-- object) at the learning rate of the schedule (agt.lr, or a script's object).
--
--   local opt = Optimizer.new(o)   checks the names and arguments (cheap: before any data)
--   opt:bind(d)                    makes the optimizer's slots for d parameters
--   opt:rate(step) -> the schedule's learning rate at step
--   opt:apply(theta, g, step [, rate]) -> lr  (applies g at rate, by default the schedule's lr:
--                                              local steps' model differences are applied at 1)
--   opt:state() -> { optimizer = }   opt:set_state(map)
local O = require("agt.optim")
local L = require("agt.lr")
local FL = require("agt.cli.run.flags")

local M = {}

local Opt = {}
Opt.__index = Opt

function M.new(o)
  local self = setmetatable({ o = o }, Opt)
  if type(o.learning_rate) == "table" then
    self.sched = o.learning_rate
  else
    self.sched = FL.as_flag("learning-rate", L.new, o.learning_rate, o.learning_rate_args)
  end
  if type(o.optimizer) ~= "table" then
    FL.as_flag("optimizer", O.new, o.optimizer, o.optimizer_args, 1)   -- the name and arguments only
  end
  return self
end

function Opt:bind(d)
  local o = self.o
  if type(o.optimizer) == "table" then
    self.opt = o.optimizer
  else
    self.opt = FL.as_flag("optimizer", O.new, o.optimizer, o.optimizer_args, d)
  end
end

function Opt:rate(step) return self.sched:rate(step) end

function Opt:apply(theta, g, step, rate)
  local lr = self.sched:rate(step)
  self.opt:step(theta, g, rate or lr)
  return lr
end

function Opt:state() return { optimizer = self.opt:state() or "" } end
function Opt:set_state(map) self.opt:set_state(map.optimizer) end

return M
