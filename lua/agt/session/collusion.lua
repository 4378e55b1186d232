-- agt.session.collusion — the Byzantine side of an `agt worker` process: the attack that a
-- worker marked Byzantine runs over the wire (the default of a distributed run; with
-- --attack-at-ps the PS applies it instead, see agt.session.byzantine).
--
--   local col = Collusion.new(cfg, ctx)  cfg: CONFIG's `attack` table (below); ctx: { w = this
--                                       worker's index from 0, d =, cluster = (agt.cluster),
--                                       curve = its own keys or nil, session =, say = fn(text),
--                                       mpi = agt.mpi for a worker rank of --MPI, else nil }
--   col:row(step, row, t0)              the worker is Byzantine at step (the PS said so): row
--                                       holds its honest gradient; overwritten with what it sends
--   col:serve(step, t0)                 the coordinator, honest at step: runs the attack for the
--                                       step's Byzantine partners (after its own row has gone)
--   col:state_parts() -> { {aux =, s =}, ... }   its attack's state, now, as the STATE
--                                       messages that carry it to the PS (below)
--   col:close()
--   Collusion.run_attack(attack, G, known, step, rule)   what the coordinator computes (below),
--                                       for a reference
--   Collusion.own_stream(seed, row, step)   the stream of an attack alone (below)
--   Collusion.state_parts(s, d), Collusion.assembler(d), Collusion.max_state(d)   an attack's
--                                       state in STATE messages, and put together again (below)
-- t0: when the step's θ arrived (the deadlines count from it).
--
-- cfg (from the PS): protocol (M.PROTOCOL), name, args, source (a user's attack file's text),
-- n, f, r, seed, colludes, rule = {name, args, sources = {element = the text of a user's rule
-- file}} | nil (agt.aggregators; a source or the attack's of more than U.MAX_SOURCE bytes, or
-- one that does not load, is refused), coordinator (index from 0), partners
-- (indices from 0: the workers that may attack, ascending), keys (their CURVE public keys, in
-- the same order), step_timeout, state (the attack's state as the PS kept it, in hexadecimal
-- text: the process calls the attack's set_state with it before its first attack; absent when
-- the PS has none for the step the worker starts at).
--
-- An attack's own state (state/set_state: mimic variant:principal's direction, a user's attack
-- that keeps one) lives in the processes that run it: the coordinator of colluding workers, each
-- Byzantine worker attacking alone. When the PS checkpoints at the end of a step, it asks each
-- worker that may attack for its attack's state after that step's attack (THETA's aux, see
-- agt.session.remote); the worker sends it after its row (and, for the coordinator, after the
-- step's attack for its partners) as STATE messages whose aux is K * 65536 + k: part k of K,
-- each of part_bytes(d) bytes (the PS's cap on any message) but the last, at most max_state(d)
-- bytes in all (an empty one: the attack has none now). The PS keeps it in its checkpoint
-- (agt.session.byzantine) and gives it back in the CONFIG of a session that starts at the
-- next step (a PS restarted from that checkpoint).
--
-- An attack that reads no honest row (cfg.colludes false: signflip as reverse of:own, gaussian,
-- nan, ...) runs in each Byzantine process alone, on its own row, with a stream of its own for
-- the step (seed, "attack-worker.<row>", step). One that does (lie, empire, minmax, ...) runs on
-- what the Byzantine processes of the step can know: their own honest gradients, shared among
-- them. The coordinator (the lowest-index worker that may attack) binds its own cluster address;
-- each other Byzantine worker of the step sends it its honest row (GRAD on that channel, bound
-- to the run's session and the step; with CURVE only the partners' keys get in, and a row's
-- sender is its key) and gets back its Byzantine row. Over MPI the channel is agt.mpi's
-- (MPI.channel: the partners' ranks only, a tag of their own, each message probed and its size
-- checked before it is received, the same deadlines), and a row's sender is its rank. The
-- coordinator runs the attack on an n × d matrix: the Byzantine rows at their own indices hold
-- their honest gradients, the honest set is those same gradients (ascending worker index) placed
-- at the first honest indices, and the other honest indices repeat them (what a rule sees when
-- the attack evaluates it; when the step's Byzantine workers outnumber the others, b > n − b,
-- the honest set is the first n − b of their gradients); the attack's stream is that of the
-- step, (seed, "attack", step), and the rule the run's (a user's rule file built from the text
-- the PS sent; a rule object given to a script stays on the PS: then a plain average). No stream
-- has a state to keep: a PS restarted from its checkpoint and the workers made again for its
-- session draw what the run that never stopped draws. The step's Byzantine set comes from the
-- attack's selection (agt.attacks: fixed, or drawn from (seed, step)), which is the PS's by
-- construction; the PS's word (THETA's aux) decides for the worker's own row, and a disagreement
-- is said once. A partner missing at the coordinator's deadline (step_timeout / 2 after θ) is
-- left out of the step; a Byzantine worker that hears nothing from its coordinator by 3/4 of
-- step_timeout attacks with its own gradient as the honest set (said once).
local ffi = require("ffi")
local N = require("agt.net")
local CL = require("agt.cluster")
local K = require("agt.attacks")
local R = require("agt.rng")
local T = require("agt.tensor")
local U = require("agt.util")
local clock = require("agt.clock")
local Checkpoint = require("agt.checkpoint")

local M = {}

-- The version of this protocol (the CONFIG's attack table, THETA's aux, the coordinator's
-- channel): a worker says it in its HELLO, the PS in the attack table; they must be equal.
-- 3: CONFIG's attack carries the attack's state; THETA's aux asks for it (+2).
M.PROTOCOL = 3

-- An attack's state in STATE messages: parts of at most a row's bytes (the PS's cap on any
-- message), at most max_state(d) bytes in all (mimic's direction and accumulator, 8 d bytes,
-- and some room for a header).
function M.part_bytes(d) return math.max(d * 4, 65536) end
function M.max_state(d) return 8 * d + 65536 end
local PART = 65536 -- aux = K * PART + k

-- s (a string, or nil for none) as { {aux =, s =}, ... }, or nil, why when it is too big.
function M.state_parts(s, d)
  s = s or ""
  if type(s) ~= "string" then return nil, "its state() returned a " .. type(s) .. ", not a string" end
  if #s > M.max_state(d) then
    return nil, string.format("its state has %d bytes, more than the %d that a model of %d parameters allows",
                              #s, M.max_state(d), d)
  end
  local P = M.part_bytes(d)
  local K = math.max(1, math.ceil(#s / P))
  local parts = {}
  for k = 1, K do parts[k] = { aux = K * PART + k, s = s:sub((k - 1) * P + 1, k * P) } end
  return parts
end

-- Puts the parts of one worker's state together (the PS): asm:add(aux, data, len) -> the state
-- (a string, "" for none) once its last part is in, nil while parts are missing, or false, why
-- for a part out of form (the parts so far are dropped). Sizes are checked before anything is
-- kept: at most max_state(d) bytes in all.
local Asm = {}
Asm.__index = Asm

function M.assembler(d)
  local P, cap = M.part_bytes(d), M.max_state(d)
  return setmetatable({ P = P, cap = cap, kmax = math.ceil(cap / P), parts = {}, have = 0 }, Asm)
end

function Asm:add(aux, data, len)
  local function bad(why)
    self.K, self.parts, self.have = nil, {}, 0
    return false, why
  end
  if type(aux) ~= "number" or aux ~= math.floor(aux) or aux < PART or aux >= (self.kmax + 1) * PART then
    return bad(string.format("part number %s is not one of a state of at most %d parts", tostring(aux), self.kmax))
  end
  local K, k = math.floor(aux / PART), aux % PART
  if k < 1 or k > K then return bad(string.format("part %d of %d", k, K)) end
  if self.K and self.K ~= K then return bad(string.format("a part of %d after parts of %d", K, self.K)) end
  if (k < K and len ~= self.P) or len > self.P or (k == K and (K - 1) * self.P + len > self.cap) then
    return bad(string.format("part %d of %d has %d bytes (parts of %d bytes, at most %d in all)", k, K, len,
                             self.P, self.cap))
  end
  self.K = K
  if not self.parts[k] then self.have = self.have + 1 end
  self.parts[k] = ffi.string(data, len)
  if self.have < K then return nil end
  local s = table.concat(self.parts)
  self.K, self.parts, self.have = nil, {}, 0
  return s
end

local Col = {}
Col.__index = Col

-- Checks the CONFIG's attack table; returns nil, why when it is not one this agt understands.
local function valid(cfg, w, d, curve)
  if type(cfg) ~= "table" or type(cfg.name) ~= "string" or type(cfg.partners) ~= "table"
     or type(cfg.coordinator) ~= "number" or type(cfg.step_timeout) ~= "number" or cfg.step_timeout <= 0 then
    return nil, "the PS sent an attack description this agt does not understand"
  end
  if cfg.protocol ~= M.PROTOCOL then
    return nil, string.format("the PS speaks version %s of the Byzantine workers' protocol, this worker %d "
      .. "(run the same agt on every host)", tostring(cfg.protocol), M.PROTOCOL)
  end
  local mine = false
  for _, p in ipairs(cfg.partners) do if p == w then mine = true end end
  if not mine then return nil, "the PS made this worker Byzantine but left it out of the partners" end
  -- a user's files, as the PS reads them (U.read_source): text of at most U.MAX_SOURCE bytes
  local texts = { { "attack", cfg.source } }
  local rule = cfg.rule
  if type(rule) == "table" then
    if type(rule.name) ~= "string" or (rule.sources ~= nil and type(rule.sources) ~= "table") then
      return nil, "the PS sent a rule this agt does not understand"
    end
    for element, text in pairs(rule.sources or {}) do texts[#texts + 1] = { "rule", text, element } end
  end
  for _, t in ipairs(texts) do
    local what, text, element = t[1], t[2], t[3]
    if text ~= nil and (type(text) ~= "string" or #text > U.MAX_SOURCE) then
      return nil, string.format("the PS sent the %s file%s as %s, not the text of at most %d bytes that agt sends",
        what, element and (" '" .. tostring(element) .. "'") or "",
        type(text) == "string" and (#text .. " bytes") or type(text), U.MAX_SOURCE)
    end
  end
  if cfg.state ~= nil and (type(cfg.state) ~= "string" or #cfg.state > 2 * M.max_state(d)) then
    return nil, "the PS sent an attack's state that is not hexadecimal text of at most "
      .. 2 * M.max_state(d) .. " characters"
  end
  if curve and cfg.colludes and #cfg.partners > 1 then
    local ok = type(cfg.keys) == "table" and #cfg.keys == #cfg.partners
    for _, k in ipairs(ok and cfg.keys or {}) do ok = ok and type(k) == "string" end
    if not ok then return nil, "the PS sent no CURVE keys for the Byzantine partners (another version of agt?)" end
  end
  return true
end

function M.new(cfg, ctx)
  local ok, why = valid(cfg, ctx.w, ctx.d, ctx.curve)
  if not ok then error(why, 0) end
  local def = cfg.name
  if type(cfg.source) == "string" then def = U.load_lua_text(cfg.source, cfg.name, "attack") end
  local say = ctx.say
  local args = cfg.args
  if type(args) ~= "table" then args = {} end
  local rule
  if cfg.colludes and type(cfg.rule) == "table" then
    -- (a user's rule file from its text, as the PS sent it: a file that does not load is refused)
    local sources = cfg.rule.sources
    local okr, r = pcall(require("agt.aggregators").new, cfg.rule.name, cfg.n, cfg.f,
                         type(cfg.rule.args) == "table" and cfg.rule.args or {}, { sources = sources })
    if okr then
      rule = r
    elseif sources then
      error("the run's rule, from the rule file(s) the PS sent, cannot be built here: " .. tostring(r), 0)
    else
      say("the run's rule cannot be built here (" .. tostring(r) .. "): an attack that evaluates it searches "
        .. "against a plain average")
    end
  end
  local attack = K.new(def, args, { n = cfg.n, f = cfg.f, r = cfg.r, seed = cfg.seed, rule = rule,
                                    warn = function(msg) say("attack: " .. msg) end })
  if cfg.state ~= nil then -- (the PS kept it: a session that goes on from its checkpoint)
    local s = Checkpoint.unhex(cfg.state)
    local ok, err = pcall(attack.set_state, attack, s)
    if not s or not ok then
      error(string.format("the PS sent a state that attack %s does not take: %s", attack.name,
                          s and tostring(err):gsub("^[^:\n]+:%d+: ", "") or "not hexadecimal text"), 0)
    end
    say(string.format("attack %s goes on from its state as the PS kept it (%d bytes)", attack.name, #s))
  end
  local self = setmetatable({
    cfg = cfg, attack = attack, w = ctx.w, row_index = ctx.w + 1, d = ctx.d, bytes = ctx.d * 4,
    n = cfg.n, c = ctx.cluster, curve = ctx.curve, mpi = ctx.mpi, session = ctx.session, say = say,
    colludes = cfg.colludes and true or false, rule = rule, said = {},
    coordinator = cfg.coordinator, partners = cfg.partners, keys = cfg.keys,
    gather_s = cfg.step_timeout / 2, answer_s = cfg.step_timeout * 3 / 4,
    stash = {},
  }, Col)
  if self.colludes and self.w == self.coordinator and #self.partners > 1 then self:_bind() end
  return self
end

-- The random stream of a Byzantine worker's attack alone at step, for its row: a stream of its
-- own for each (seed, row, step), so that it needs no state (a PS restarted from its
-- checkpoint, a worker restarted, draw what the run never stopped draws). A colluding attack
-- draws from (seed, "attack", step) (agt.attacks' stream of a step, given no stream).
function M.own_stream(seed, row, step)
  return R.new(seed, R.stream_id("attack-worker." .. row, step))
end

-- Says msg once under key (a partner that is gone, a disagreement with the PS).
function Col:_once(key, msg)
  if self.said[key] then return end
  self.said[key] = true
  self.say(msg)
end

function Col:_name(w) return string.format("%s:%d", self.c.wk_job, w) end

-- The coordinator's channel: its own cluster address; only the partners' keys get in (CURVE).
-- Over MPI: a channel with the partners' ranks (msg.auth is then a partner's index, as a key's).
function Col:_bind()
  if self.mpi then
    local ranks = {}
    for k, p in ipairs(self.partners) do ranks[k] = p + 1 end
    self.server = self.mpi.channel(math.max(self.bytes, 65536), ranks)
    self.server:set_session(self.session)
    self.say(string.format("coordinating the Byzantine partners (%d) over MPI", #self.partners - 1))
    return
  end
  local curve
  if self.curve then curve = { secret = self.curve.secret, keys = self.keys } end
  local endpoint = CL.endpoint(self.c.workers[self.coordinator + 1], true)
  self.server = N.server(endpoint, math.max(self.bytes, 65536), #self.partners + 8, curve)
  self.server:set_session(self.session)
  self.say(string.format("coordinating the Byzantine partners (%d) on %s", #self.partners - 1, endpoint))
end

-- A partner's channel to the coordinator (opened on first use).
function Col:_client()
  if self.client then return self.client end
  if self.mpi then
    self.client = self.mpi.channel(math.max(self.bytes, 65536), { self.coordinator + 1 })
    self.client:set_session(self.session)
    return self.client
  end
  local curve
  if self.curve then
    local key
    for k, p in ipairs(self.partners) do if p == self.coordinator then key = self.keys[k] end end
    curve = { server = key, public = self.curve.public, secret = self.curve.secret }
  end
  self.client = N.client(CL.endpoint(self.c.workers[self.coordinator + 1], false), math.max(self.bytes, 65536), curve)
  self.client:set_session(self.session)
  return self.client
end

-- The n × d matrix the attack runs on (allocated on first use).
function Col:_matrix()
  if not self.G then self.G = T.new({ self.n, self.d }) end
  return self.G
end

-- Runs attack on G (n × d) for the known rows (ascending row indices whose honest gradients are
-- in their rows of G): the honest set is those gradients, copied to the first honest indices,
-- the other honest indices repeat them (see the header). Overwrites the known rows of G.
function M.run_attack(attack, G, known, step, rule)
  local n, d = G:size(1), G:size(2)
  local bytes = d * 4
  local is_known = {}
  for _, i in ipairs(known) do is_known[i] = true end
  local free = {}
  for i = 1, n do if not is_known[i] then free[#free + 1] = i end end
  local honest = {}
  for k, i in ipairs(free) do
    local src = known[(k - 1) % #known + 1]
    ffi.copy(G.raw + (i - 1) * d, G.raw + (src - 1) * d, bytes)
    if k <= #known then honest[k] = i end
  end
  return attack:apply({ G = G, honest = honest, byz = known, step = step, rule = rule })
end

-- The same in this worker; false (said once) when the attack fails on what it knows (e.g. a
-- sample std of one row): the rows are then left as they were given.
function Col:_attack(step, known)
  local ok, err = pcall(M.run_attack, self.attack, self.G, known, step, self.rule)
  if not ok then
    self:_once("failed", string.format("attack %s failed at step %d on the rows of %d Byzantine worker(s): %s; "
      .. "sending honest gradients when that happens (said once)", self.attack.name, step, #known, tostring(err)))
  end
  return ok
end

-- The Byzantine rows of step (ascending, the selection of the PS), and whether this worker is one.
function Col:_set(step)
  local set = self.attack:byzantine(step)
  local me = false
  for _, i in ipairs(set) do if i == self.row_index then me = true end end
  return set, me
end

-- The coordinator's part of a step: gathers the partners' honest rows until all of the step's
-- set are in or the deadline, runs the attack, answers each. own: this worker's row (a tensor
-- holding its honest gradient) when it is Byzantine at step, else nil.
function Col:_coordinate(step, t0, own)
  local set = self:_set(step)
  local G, d, bytes = self:_matrix(), self.d, self.bytes
  local expected, pending = {}, 0
  for _, i in ipairs(set) do
    if i ~= self.row_index then expected[i] = false; pending = pending + 1 end
  end
  local peer_of = {}
  -- rows stashed from an earlier gather (a partner one step ahead)
  for i, s in pairs(self.stash) do
    if s.step == step and expected[i] == false then
      ffi.copy(G.raw + (i - 1) * d, s.t.raw, bytes)
      expected[i], peer_of[i], pending = true, s.peer, pending - 1
    end
    if s.step <= step then self.stash[i] = nil end
  end
  local t_end = t0 + self.gather_s
  while pending > 0 and self.server do
    local left = t_end - clock.mono()
    if left <= 0 then break end
    local msg = self.server:recv(left * 1000)
    if msg and msg.type == N.GRAD and msg.len == bytes then
      local w = msg.worker
      if msg.auth >= 0 then w = self.partners[msg.auth + 1] end -- with CURVE a sender is its key
      local i = w and w + 1
      if i and msg.step == step and expected[i] == false then
        ffi.copy(G.raw + (i - 1) * d, msg.data, bytes)
        expected[i], peer_of[i], pending = true, msg.peer, pending - 1
      elseif i and msg.step > step and i ~= self.row_index and i <= self.n then
        local s = self.stash[i] or { t = T.new({ d }) }
        ffi.copy(s.t.raw, msg.data, bytes)
        s.step, s.peer = msg.step, msg.peer
        self.stash[i] = s
      end
    end
  end
  local known = {}
  for _, i in ipairs(set) do
    if i == self.row_index then
      if own then known[#known + 1] = i; ffi.copy(G.raw + (i - 1) * d, own.raw, bytes) end
    elseif expected[i] then
      known[#known + 1] = i
    else
      self:_once("gone:" .. i, string.format("Byzantine partner %s sent no honest row by the deadline at step %d: "
        .. "the attack goes on without it (said once)", self:_name(i - 1), step))
    end
  end
  if #known == 0 or not self:_attack(step, known) then return end -- (partners then go alone)
  for _, i in ipairs(known) do
    if i == self.row_index then
      ffi.copy(own.raw, G.raw + (i - 1) * d, bytes)
    else
      self.server:send({ peer_of[i] }, N.GRAD, i - 1, step, 0, G.raw + (i - 1) * d, bytes)
    end
  end
end

-- A Byzantine worker alone: its own gradient is the honest set.
function Col:_alone(step, row)
  local G = self:_matrix()
  ffi.copy(G.raw + (self.row_index - 1) * self.d, row.raw, self.bytes)
  if self:_attack(step, { self.row_index }) then
    ffi.copy(row.raw, G.raw + (self.row_index - 1) * self.d, self.bytes)
  end
end

-- A partner's part of a step: its honest row to the coordinator, its Byzantine row back.
function Col:_partner(step, t0, row)
  local net = self:_client()
  local sent = net:send(nil, N.GRAD, self.w, step, 0, row.raw, self.bytes)
  local t_end = t0 + self.answer_s
  while sent == true do
    local left = t_end - clock.mono()
    if left <= 0 then break end
    local msg = net:recv(left * 1000)
    if msg and msg.type == N.GRAD and msg.step == step and msg.len == self.bytes then
      ffi.copy(row.raw, msg.data, self.bytes)
      return
    end
  end
  self:_once("alone", string.format("no answer from the Byzantine coordinator %s at step %d: attacking with "
    .. "this worker's own gradient as the honest set when that happens (said once)",
    self:_name(self.coordinator), step))
  self:_alone(step, row)
end

function Col:row(step, row, t0)
  if not self.colludes then
    local rng = M.own_stream(self.cfg.seed, self.row_index, step)
    local ok, err = pcall(self.attack.apply_own, self.attack, row, step, rng)
    if not ok then
      self:_once("failed", string.format("attack %s failed at step %d: %s (said once)", self.attack.name, step,
                                         tostring(err)))
    end
    return
  end
  local set, me = self:_set(step)
  if not me then
    self:_once("disagree", string.format("the PS says this worker is Byzantine at step %d, the attack's "
      .. "selection does not (another version of agt?): attacking alone when that happens", step))
    self:_alone(step, row)
  elseif #set == 1 then
    self:_alone(step, row)
  elseif self.w == self.coordinator then
    self:_coordinate(step, t0, row)
  else
    self:_partner(step, t0, row)
  end
end

function Col:serve(step, t0)
  if self.colludes and self.w == self.coordinator and self.server then
    local set = self:_set(step)
    if #set > 0 then self:_coordinate(step, t0, nil) end
  end
end

function Col:state_parts()
  local ok, s = pcall(self.attack.state, self.attack)
  local parts, why
  if ok then parts, why = M.state_parts(s, self.d) else why = tostring(s) end
  if not parts then
    self:_once("state", string.format("attack %s: %s; the PS keeps no state of it (said once)", self.attack.name, why))
    parts = M.state_parts(nil, self.d)
  end
  return parts
end

function Col:close()
  if self.server then self.server:close(); self.server = nil end
  if self.client then self.client:close(); self.client = nil end
end

return M
