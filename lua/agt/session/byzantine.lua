-- agt.session.byzantine — the r real Byzantine workers of a run: which rows attack at each
-- step, and the attack that overwrites them (agt.attacks), with the attack's random stream.
--
--   local byz = Byzantine.new(o, { n =, f =, r =, rule =, warn = fn(msg) })   (o: checked options)
--   byz.attack                 the attack object, or nil (no --attack)
--   byz:poison(i)              what a data attack does to worker i's shard, or nil
--   byz:rows(step)             the attacking rows at step (ascending; {} when none)
--   byz:apply(G, honest, rows, step, rule)   overwrites those rows of G (a gradient attack)
--   byz:state() -> { attack =, ["rng.attack"] = }   byz:set_state(map)
-- A data attack poisons fixed workers from the start (their rows are honest gradients of
-- poisoned data, nothing to overwrite); a gradient attack's rows hold their own honest gradient
-- on entry to apply.
local K = require("agt.attacks")
local R = require("agt.rng")
local FL = require("agt.cli.run.flags")

local M = {}

local Byz = {}
Byz.__index = Byz

function M.new(o, c)
  local self = setmetatable({ r = c.r, poisoned = {} }, Byz)
  if o.attack ~= nil then
    if type(o.attack) == "table" then
      self.attack = o.attack
    else
      self.attack = FL.as_flag("attack", K.new, o.attack, o.attack_args,
                               { n = c.n, f = c.f, r = c.r, rule = c.rule, seed = o.seed, warn = c.warn })
    end
  end
  self.rng = R.new(o.seed, R.stream_id("attack", 0))
  if self.attack and self.attack.kind == "data" then
    local list = {}
    for _, i in ipairs(self.attack:byzantine(0)) do self.poisoned[i] = true; list[#list + 1] = i end
    table.sort(list)
    self.data_rows = list
  end
  return self
end

function Byz:poison(i)
  return self.poisoned[i] and self.attack.poison or nil
end

function Byz:rows(step)
  if not self.attack or self.r == 0 then return {} end
  if self.data_rows then return { unpack(self.data_rows) } end
  return self.attack:byzantine(step)
end

function Byz:apply(G, honest, rows, step, rule)
  if #rows == 0 or self.data_rows then return end
  self.attack:apply({ G = G, honest = honest, byz = rows, step = step, rule = rule, rng = self.rng })
end

-- Whether apply does anything at step (for the trace: a data attack has no phase of its own).
function Byz:acts(rows) return #rows > 0 and not self.data_rows end

function Byz:state()
  local map = { ["rng.attack"] = self.rng:state() }
  local a = self.attack
  local s = a and a.state and a:state()
  if s then map.attack = s end
  return map
end

function Byz:set_state(map)
  self.rng:set_state(map["rng.attack"])
  local a = self.attack
  if map.attack and a and a.set_state then a:set_state(map.attack) end
end

return M
