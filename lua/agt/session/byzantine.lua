-- agt.session.byzantine — the r real Byzantine workers of a run: which rows attack at each
-- step, and the attack that overwrites them (agt.attacks), with the attack's random stream.
--
--   local byz = Byzantine.new(o, { n =, f =, r =, rule =, warn = fn(msg) })   (o: checked options)
--   byz.attack                 the attack object, or nil (no --attack)
--   byz:poison(i)              what a data attack does to worker i's shard, or nil
--   byz:rows(step)             the attacking rows at step (ascending; {} when none)
--   byz:apply(G, honest, rows, step, rule)   overwrites those rows of G (a gradient attack)
--   byz:state() -> { attack =, ["rng.attack"] =, ["attack.wire"] =, ["attack.wire.<i>"] = }
--   byz:set_state(map)
--   byz.at_ps                  whether this process applies a gradient attack (a local run, or
--                              --server with --attack-at-ps); otherwise the Byzantine worker
--                              processes attack over the wire and apply does nothing here
--   byz:wire() -> nil | { rows =, config = }   (a distributed run, attacks at the workers) the
--                              rows that may attack (fixed: the last r; selection:random: all)
--                              and what their CONFIG says (agt.session.collusion reads it);
--                              stateful: whether the attack keeps a state (state/set_state)
--   byz:keeps_wire_state()     whether wire() is that of an attack that keeps a state
--   byz:check_wire_state(s, d) -> true | nil, why   whether s is a state of this attack, as a
--                              worker sent it (at most Collusion.max_state(d) bytes)
--   byz:took_wire_states(step, states | nil)   the states of the attack in the worker processes
--                              after step's attack ({ [row] = s }; "" for none), or nil when
--                              the PS did not ask for them at that step (agt.session.remote)
--   byz:wire_state(row, step) -> s | nil   the state of row's attack to go on from at step (the
--                              state after step - 1's attack), or nil when the PS does not have it
-- The states at the workers are the checkpoint's "attack.wire" (the step after whose attack they
-- were taken) and "attack.wire.<row>" entries; a checkpoint taken after a step at which the PS
-- did not ask for them (a --checkpoint-period that ran out during the step, a Ctrl-C), or of a
-- row that did not answer at that step, holds none for that row (its attack then starts over,
-- said by agt.session.remote), nor does a checkpoint of an agt before them.
-- A data attack poisons fixed workers from the start (their rows are honest gradients of
-- poisoned data, nothing to overwrite); a gradient attack's rows hold their own honest gradient
-- on entry to apply.
local A = require("agt.aggregators")
local K = require("agt.attacks")
local R = require("agt.rng")
local FL = require("agt.cli.run.flags")
local U = require("agt.util")
local Collusion = require("agt.session.collusion")

local M = {}

local Byz = {}
Byz.__index = Byz

function M.new(o, c)
  local self = setmetatable({ r = c.r, poisoned = {}, o = o, c = c, warn = c.warn or function() end,
                              at_ps = not (o.server or o.MPI) or o.attack_at_ps or false }, Byz)
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
  if o.server or o.MPI then self:wire() end -- a user's attack and rule files read (sizes checked) now
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

-- Whether apply does anything at step (for the trace: a data attack has no phase of its own;
-- attacks at the workers have none at the PS).
function Byz:acts(rows) return #rows > 0 and not self.data_rows and self.at_ps end

-- The run's rule as a worker process builds it (agt.session.collusion): its spec and
-- arguments, and the text of each element that is a user's rule file (a path, or a name found
-- in AGT_PATH; at most U.MAX_SOURCE bytes each), which the worker builds from that text
-- (agt.aggregators' sources); nil for a rule given as an object (said by warn).
local function portable_rule(o, warn)
  if type(o.aggregator) ~= "string" then
    warn("--aggregator: a rule object cannot be sent to the Byzantine workers: an attack that evaluates the rule "
      .. "(fang, optimal-lie, optimal-empire, ...) searches against a plain average there")
    return nil
  end
  local sources
  for element, path in pairs(FL.as_flag("aggregator", A.user_files, o.aggregator)) do
    sources = sources or {}
    sources[element] = FL.as_flag("aggregator", U.read_source, path, U.MAX_SOURCE, "rule file")
  end
  return { name = o.aggregator, args = o.aggregator_args, sources = sources }
end

function Byz:wire()
  local a = self.attack
  if self.at_ps or not a or a.kind == "data" or self.r == 0 then return nil end
  if self._wire then return self._wire end
  local o = self.o
  local rows = {}
  if a.selection == "random" then
    for i = 1, a.n do rows[i] = i end
  else
    rows = a:byzantine(0)
  end
  local name = o.attack
  local config = {
    name = name, args = o.attack_args, n = a.n, f = a.f, r = a.r, seed = a.seed,
    colludes = a:needs_honest(),
  }
  if config.colludes then config.rule = portable_rule(o, self.warn) end
  if name:find("/", 1, true) or name:match("%.lua$") then
    config.source = FL.as_flag("attack", U.read_source, name, U.MAX_SOURCE, "attack")
  end
  self._wire = { rows = rows, config = config, stateful = a.def.state ~= nil }
  return self._wire
end

-- Whether the attack runs in the worker processes and keeps a state there: the PS then
-- checkpoints only at the end of a step at which it asked for that state (agt.session: a
-- --checkpoint-period that runs out during a step waits for the end of the next one).
function Byz:keeps_wire_state()
  local w = self:wire()
  return w ~= nil and w.stateful
end

function Byz:check_wire_state(s, d)
  if #s > Collusion.max_state(d) then
    return nil, string.format("an attack's state of %d bytes, more than the %d allowed for %d parameters", #s,
                              Collusion.max_state(d), d)
  end
  if s == "" then return true end
  -- (read by an attack object of its own: this process's attack is left as it is)
  if not self.probe then
    local o, c = self.o, self.c
    self.probe = type(o.attack) == "table" and o.attack
      or K.new(o.attack, o.attack_args, { n = c.n, f = c.f, r = c.r, rule = c.rule, seed = o.seed,
                                          warn = function() end })
  end
  local ok, err = pcall(self.probe.set_state, self.probe, s)
  if not ok then -- (without the "file:line: " of where the attack raised)
    return nil, "not a state of attack " .. self.attack.name .. ": " .. tostring(err):gsub("^[^:\n]+:%d+: ", "")
  end
  return true
end

function Byz:took_wire_states(step, states)
  self.wire_taken = states and { step = step, states = states } or nil
end

function Byz:wire_state(row, step)
  local t = self.wire_taken
  if t and t.step == step - 1 then return t.states[row] end
  return nil
end

function Byz:state()
  local map = { ["rng.attack"] = self.rng:state() }
  local a = self.attack
  local s = a and a.state and a:state()
  if s then map.attack = s end
  local t = self.wire_taken
  if t then
    map["attack.wire"] = tostring(t.step)
    for i, v in pairs(t.states) do map["attack.wire." .. i] = v end
  end
  return map
end

function Byz:set_state(map)
  self.rng:set_state(map["rng.attack"])
  local a = self.attack
  if map.attack and a and a.set_state then a:set_state(map.attack) end
  local step = tonumber(map["attack.wire"])
  self.wire_taken = nil
  if step then
    local states = {}
    for k, v in pairs(map) do
      local i = k:match("^attack%.wire%.(%d+)$")
      if i and type(v) == "string" then states[tonumber(i)] = v end
    end
    self.wire_taken = { step = step, states = states }
  end
end

return M
