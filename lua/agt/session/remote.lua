-- agt.session.remote — the remote gradient source: the PS side of a distributed run. The n
-- workers are `agt worker` processes (agt.cli.worker) that connect to this one over agt.net;
-- each step the PS sends θ to every ready worker and takes back one row from each before a
-- deadline. Same methods as agt.session.workers (see there), and fill returns a second value:
--   source:fill(theta, G, step, ctx) -> losses, faulty   (faulty: ascending rows with no valid
--                                        row this step; the session aggregates without them)
--   source:faults() -> { [row] = { missing =, late =, wrong_size =, malformed =, stranger =,
--                                  slow = } }
--   source.rejected_unknown            frames rejected from connections that are no worker
--   source.other_session               frames of another session (from before a PS restart)
--   source:counters() -> { {tag, value}, ... }   cumulative counts for the summaries (--UDP)
--
-- The protocol (message types of src/net.h):
--   worker -> HELLO(worker i, aux)       on a first socket (small size cap); aux: the version
--                                        of the Byzantine workers' protocol it speaks
--                                        (agt.session.collusion.PROTOCOL); again whenever the
--                                        PS has been silent a while (a PS restarted from its
--                                        checkpoint answers with a new session)
--   PS     -> CONFIG(JSON run)           the experiment and its arguments (and the text of a
--                                        user's experiment file), the seed, n, the worker's id
--                                        and shard, its poison (data attacks), d, the session
--                                        id, the worker's random streams as the PS last took
--                                        them (the worker continues from them) and the step;
--                                        to the workers that may attack over the wire, the
--                                        attack (see agt.session.collusion)
--   worker -> READY(aux = d)             on a second socket capped at one row, session set:
--                                        the PS binds row i+1 to that connection
--   PS     -> THETA(step, θ, aux)  worker -> STATE(step, streams), GRAD(step, loss, row)
--                                        each step; aux = 1 tells a worker that it is
--                                        Byzantine at that step (attacks over the wire), 0
--                                        otherwise; a Byzantine worker's STATE is that of its
--                                        honest gradient's streams, as an honest one's;
--                                        aux + 2: the PS checkpoints at the end of the step and
--                                        wants the attack's state after it, worker -> STATE(step,
--                                        part, aux = K * 65536 + k) after its row (a worker that
--                                        may attack, when the attack keeps a state; see
--                                        agt.session.collusion), which the PS waits for until the
--                                        deadline like a row; PS -> BYE at close
-- The workers are configured at the first step, after a resumed run has read their streams
-- from its checkpoint: the PS's checkpoint holds each worker's streams as they were after its
-- last row that the PS took (the "worker.<i>" entries of the local source, same format), so a
-- PS killed and restarted from it gives the workers back the streams of that step.
-- The attack's state in the worker processes (see agt.session.collusion) is kept the same way:
-- asked for at a step whose end the PS checkpoints (ctx.checkpoint of fill), taken from the
-- connection of the worker's row, checked (its size before anything is kept, then by an attack
-- object that reads it) and given to agt.session.byzantine for the checkpoint; a worker
-- configured at step t gets the state after step t - 1's attack when the PS has it (a resumed
-- run), and the PS says once, by worker, when it has not (the attack there starts over).
-- With --UDP k, workers 0..k-1 send their rows as datagrams (agt.session.lossy) and their GRAD
-- carries the loss only (no payload); their rows start each step as NaN.
-- A row is faulty for a step when none arrived before the deadline (--step-timeout), or it
-- came from a connection that is not that worker's, for another step, or with another size;
-- faults are counted by worker and logged when a worker turns faulty and when it is back. A
-- STATE dropped (streams or an attack's state out of form) is counted and said, but does not
-- make the worker faulty: its row says that.
-- A row awaited on a connection is put together straight in its place in G as its chunks arrive
-- (agt.net's expect: no copy of it after ZeroMQ's); a faulty row that a message was written
-- into, whole or in part (one that failed mid-way, or was dropped), is NaN after the step.
-- With --wait-for K the step takes the first K rows that arrive: the others are faulty for
-- that step (counted as "slow", not logged) and dropped when they arrive (counted as "late").
-- A row of an earlier step (late, or replayed) is dropped and counted; it never rebinds a
-- worker to the connection it came from. A worker that connects again (restarted) is
-- configured again and takes part from the next step. A worker whose row the step awaits and
-- that says READY again (it does after 2 s without a θ) gets the step's θ again, once. Nothing
-- a worker sends can make the PS allocate beyond one row or wait beyond the deadline.
local ffi = require("ffi")
local N = require("agt.net")
local CL = require("agt.cluster")
local clock = require("agt.clock")
local cjson = require("cjson")
local FL = require("agt.cli.run.flags")
local K = require("agt.checkpoint")
local U = require("agt.util")
local T = require("agt.tensor")
local Collusion = require("agt.session.collusion")
local Lossy = require("agt.session.lossy")

local M = {}

-- AGT_TRACE_NET=1: each message of a step on stderr, with the monotonic clock (agt.cli.worker
-- prints the workers' side the same way): where a step's row went missing.
local TRACE = (os.getenv("AGT_TRACE_NET") or "") ~= "" and function(fmt, ...)
  io.stderr:write(string.format("[ps %.3f] " .. fmt .. "\n", clock.mono(), ...))
end or nil

local Remote = {}
Remote.__index = Remote

-- A worker's momentum goes to it in CONFIG as hexadecimal text, under the 16 MiB of its HELLO
-- socket: models up to this many parameters.
local MAX_MOMENTUM_HEX = 1500000
-- The largest CONFIG (the worker's HELLO socket takes 16 MiB): an attack's state that would make
-- it larger is not sent (said).
local MAX_CONFIG = 16 * 2 ^ 20 - 65536

local FAULT_KINDS = { "missing", "late", "wrong_size", "malformed", "stranger", "slow" }
-- Kinds that are not logged as a worker turning faulty: a row of an earlier step (dropped) and
-- a row not waited for (--wait-for), both expected of a slow worker.
local QUIET = { late = true, slow = true }

-- A random 52-bit session id (exactly representable in a Lua number).
local function new_session_id()
  local fh = io.open("/dev/urandom", "rb")
  local b = fh and fh:read(7) or tostring(clock.mono())
  if fh then fh:close() end
  local id = 0
  for i = 1, 7 do id = (id * 256 + b:byte(i)) % 2 ^ 52 end
  return id ~= 0 and id or 1
end

-- Checks the distributed flags of checked options o and returns the source's constructor (with
-- the signature of agt.session.workers.new); raises "--flag: why". Cheap: nothing is opened.
function M.plan(o, n)
  local c, endpoint
  if o.MPI then
    -- under mpirun: the workers are ranks 1..n, MPI's launcher says who is who (a message's rank
    -- is its worker: msg.auth), the transport is agt.mpi
    local MPI = require("agt.mpi")
    local _, size = MPI.init()
    local err = MPI.workers_error(n, size)
    if err then error(err, 0) end
    c, endpoint = { ps_job = o.ps_job_name, wk_job = o.wk_job_name, mpi = MPI }, "MPI rank 0"
  else
    c = FL.as_flag("server", CL.load, o.server, { ps = o.ps_job_name, workers = o.wk_job_name })
    if #c.workers ~= n then
      error(string.format("--nb-workers: the cluster has %d '%s' tasks, the run %d workers (give as many)",
                          #c.workers, c.wk_job, n), 0)
    end
  end
  if type(o.experiment) == "table" then
    error(string.format("--%s: a distributed run needs the experiment by name or path (a name is loaded by each "
      .. "worker, a file is sent to them), not an object", o.MPI and "MPI" or "server"), 0)
  end
  endpoint = endpoint or CL.endpoint(c.ps, true)
  -- A user's experiment file travels in CONFIG (read now: a file too big is refused at once).
  if o.experiment:find("/", 1, true) or o.experiment:match("%.lua$") then
    c.experiment_source = FL.as_flag("experiment", U.read_source, o.experiment, U.MAX_SOURCE, "experiment")
  end
  if o.auth == "curve" and not o.MPI then
    c.curve = { secret = CL.read_key(CL.key_path(o.keys, c.ps_job, 0, "secret")), keys = {} }
    for i = 0, n - 1 do c.curve.keys[i + 1] = CL.read_key(CL.key_path(o.keys, c.wk_job, i, "pub")) end
  end
  if o.UDP > 0 then Lossy.args(o) end
  return function(exp, nn, sopts) return M.new(exp, nn, sopts, o, c, endpoint) end
end

function M.new(exp, n, sopts, o, c, endpoint)
  local d = exp.d
  local self = setmetatable({
    n = n, d = d, cluster = c, o = o, losses = {}, warn = sopts.warn or function() end,
    step_timeout = o.step_timeout, peer_of = {}, row_of_peer = {}, ready = {},
    fault = {}, faulty_since = {}, faulty_kind = {}, rejected_unknown = 0, other_session = 0,
    wait_for = o.wait_for or n, streams = {}, pending_streams = {}, next_step = 0, udp_config = {},
    said_state = {},
  }, Remote)
  -- Each worker's random streams as the PS last took them (with its row): fresh ones until a
  -- row arrives or a checkpoint is read. A worker object of the experiment makes them (no data
  -- is loaded for that) and checks a checkpoint's.
  for i = 1, n do self.streams[i] = exp:worker(i, { seed = o.seed }):state() end
  self.probe = exp:worker(1, { seed = o.seed })
  for i = 1, n do
    self.fault[i] = {}
    for _, k in ipairs(FAULT_KINDS) do self.fault[i][k] = 0 end
  end
  -- The largest frame the PS accepts: one row (HELLO, READY and ERROR fit in 64 KiB). The
  -- connections it holds (ZeroMQ): two per worker (HELLO and steps), and a few for workers
  -- coming back. Over MPI the ranks are the connections (mpirun started them).
  self.max_conns = 2 * n + 8
  if c.mpi then
    self.net = c.mpi.transport(math.max(d * 4, 65536))
  else
    self.net = N.server(endpoint, math.max(d * 4, 65536), self.max_conns, c.curve)
  end
  self.session_id = new_session_id()
  self.net:set_session(self.session_id)
  if o.UDP > 0 then
    local ok, u = pcall(Lossy.new, o, d, c.ps, self.session_id)
    if not ok then self.net:close(); error("--UDP: " .. tostring(u), 0) end
    self.udp = u
    local f = o.nb_decl_byz_workers
    if o.aggregator == "average" then
      self.warn("--UDP: the rule 'average' does not tolerate NaN: one lost chunk makes θ NaN there "
        .. "(use average-nan, median, trimmed-mean, krum, ...; see docs/distributed.md)")
    elseif o.UDP > f and o.aggregator ~= "average-nan" then
      self.warn(string.format("--UDP %d > f = %d: in a step where more than f UDP rows lose chunks (at the same "
        .. "offsets, for a coordinate-wise rule), the rule gets more NaN than it absorbs and NaN can reach θ "
        .. "(see docs/distributed.md)", o.UDP, f))
    end
  end
  local config = {
    session = self.session_id, experiment = o.experiment, experiment_args = o.experiment_args,
    seed = o.seed, n = n, d = d, l1 = sopts.l1 or 0, l2 = sopts.l2 or 0,
    experiment_source = c.experiment_source,
    -- --momentum-at worker: each worker keeps m_i <- beta m_i + g_i and sends m_i
    momentum = o.momentum_at == "worker" and o.momentum or nil,
  }
  if config.momentum then -- the workers' momenta as the PS knows them (all zero at the start)
    self.mom, self.mom_known = {}, {}
    for i = 1, n do self.mom[i] = T.new({ d }); self.mom[i]:zero(); self.mom_known[i] = true end
  end
  self.poison = sopts.poison
  self.byzantine = sopts.byzantine
  self.wire = sopts.byzantine and sopts.byzantine:wire()
  self.config = config
  if not c.curve and not c.mpi then
    self.warn(string.format("--auth none: workers are not authenticated and traffic is not encrypted; "
      .. "anyone who reaches %s can take part in this run (use only on a trusted network)", endpoint))
  end
  return self
end

function Remote:name(i) return string.format("%s:%d", self.cluster.wk_job, i - 1) end

-- Sends worker i (0-based w in the message) its CONFIG on the connection it said HELLO from.
-- hello_aux: the HELLO's aux, the worker's version of the Byzantine protocol (0: an agt that
-- cannot attack over the wire).
function Remote:_configure(peer, w, hello_aux)
  local attack = self:_attack_config(w)
  if attack and hello_aux ~= Collusion.PROTOCOL then
    self.warn(string.format("worker %s speaks version %s of the Byzantine workers' protocol, this PS %d: "
      .. "not configured (it would send honest rows where it must attack; run the same agt on every host)",
      self:name(w + 1), tostring(hello_aux), Collusion.PROTOCOL))
    return
  end
  local cfg = {}
  for k, v in pairs(self.config) do cfg[k] = v end
  cfg.worker = w
  cfg.poison = self.poison and self.poison(w + 1) or nil
  -- (the UDP key made at the worker's first CONFIG of this session: a worker that says HELLO
  -- again while the PS is slow keeps sending with it)
  if self.udp and not self.udp_config[w + 1] then self.udp_config[w + 1] = self.udp:config(w) end
  cfg.udp = self.udp_config[w + 1]
  cfg.session = string.format("%x", self.session_id) -- as text: JSON numbers lose digits
  -- the worker's streams as hexadecimal text (JSON holds no bytes); the step it starts at
  cfg.streams, cfg.step = K.hex(self.streams[w + 1]), self.next_step
  -- --momentum-at worker: the worker's momentum as the PS knows it (a resumed run, a worker that
  -- rejoins); absent when unknown, and the worker starts from zero
  if self.mom and self.mom_known[w + 1] and self.d <= MAX_MOMENTUM_HEX then
    cfg.momentum_state = K.hex(ffi.string(self.mom[w + 1].raw, self.d * 4))
  end
  cfg.attack = attack
  local text = cjson.encode(cfg)
  -- (the worker reads CONFIG on a socket capped at 16 MiB, see agt.cli.worker)
  if attack and attack.state and #text > MAX_CONFIG then
    self:_state_unknown(w + 1, string.format("its %d bytes do not fit in a CONFIG of 16 MiB", #attack.state / 2))
    attack.state = nil
    text = cjson.encode(cfg)
  end
  self.net:send({ peer }, N.CONFIG, w, -1, 0, text)
end

-- The attack of worker w (from 0) when it may attack over the wire (agt.session.collusion says
-- what each field means), else nil.
function Remote:_attack_config(w)
  local wire = self.wire
  if not wire then return nil end
  local partners, mine = {}, false
  for k, i in ipairs(wire.rows) do
    partners[k] = i - 1
    if i - 1 == w then mine = true end
  end
  if not mine then return nil end
  local a = {}
  for k, v in pairs(wire.config) do a[k] = v end
  a.partners, a.coordinator, a.step_timeout = partners, partners[1], self.step_timeout
  a.protocol = Collusion.PROTOCOL
  if wire.stateful then
    local s = self.byzantine:wire_state(w + 1, self.next_step)
    if s and s ~= "" then
      a.state = K.hex(s)
    elseif not s and self.next_step > 0 then
      self:_state_unknown(w + 1, string.format("none taken after step %d: the checkpoint was made at a step that "
        .. "did not ask for it, or the worker did not answer then, or by an agt that did not keep it",
        self.next_step - 1))
    end
  end
  if self.cluster.curve then
    a.keys = {}
    for k, i in ipairs(wire.rows) do a.keys[k] = self.cluster.curve.keys[i] end
  end
  return a
end

-- Says once by worker that its attack's state is not given back (why), and that it starts over.
function Remote:_state_unknown(i, why)
  if self.said_state[i] then return end
  self.said_state[i] = true
  self.warn(string.format("the PS has no state of the attack at worker %s for step %d (%s): the attack there "
    .. "starts over from its first state, and the run differs from one that never stopped (said once)",
    self:name(i), self.next_step, why))
end

-- Sends θ of step to the peers (rows[j] is peers[j]'s row): aux 1 to the rows that attack over
-- the wire at this step, 0 to the others, + 2 to the rows asked for their attack's state
-- (self.asked[i] at step self.asked.step). Returns what net:send returns, in the peers' order.
function Remote:_send_theta(peers, rows, theta, step)
  local bytes = self.d * 4
  if not self.wire then return self.net:send(peers, N.THETA, 0, step, 0, theta.raw, bytes) end
  local byz = {}
  for _, i in ipairs(self.byzantine:rows(step)) do byz[i] = true end
  local asked = self.asked and self.asked.step == step and self.asked or {}
  local groups = {}
  for aux = 0, 3 do groups[aux] = { peers = {}, at = {} } end
  for j, i in ipairs(rows) do
    local g = groups[(byz[i] and 1 or 0) + (asked[i] and 2 or 0)]
    g.peers[#g.peers + 1], g.at[#g.at + 1] = peers[j], j
  end
  local sent = {}
  for aux = 0, 3 do
    local g = groups[aux]
    if #g.peers > 0 then
      local s = self.net:send(g.peers, N.THETA, 0, step, aux, theta.raw, bytes)
      for k, j in ipairs(g.at) do sent[j] = s[k] end
    end
  end
  return sent
end

-- With CURVE a worker's identity is its key: a message claiming another worker's index is
-- dropped and counted against the key's worker. Returns the worker index (from 0) to act on, or
-- nil. Without CURVE the claim is all there is.
function Remote:_who(msg, step)
  if msg.auth < 0 then return msg.worker end
  if msg.worker ~= msg.auth then
    self:_fault(msg.auth + 1, "stranger", step or -1,
                string.format("a message claiming to be worker %d's (dropped)", msg.worker))
    return nil
  end
  return msg.auth
end

-- Handles a message that is not a row of the current step; returns the row it concerns, if any
-- (a worker that joins or comes back on a new connection), or nil and the row of a worker that
-- says READY again on the connection it is bound to ("still here": it has had no θ for a while).
function Remote:_control(msg, step)
  local w = self:_who(msg, step)
  if not w then return end
  if msg.type == N.HELLO then
    if w >= self.n then
      self.rejected_unknown = self.rejected_unknown + 1
      self.warn(string.format("a HELLO from worker index %d, not in the cluster (0..%d): ignored", w, self.n - 1))
      return
    end
    self:_configure(msg.peer, w, msg.aux)
  elseif msg.type == N.READY then
    local i = w + 1
    if w >= self.n then
      self.rejected_unknown = self.rejected_unknown + 1
      return
    end
    if msg.aux ~= self.d then
      self.warn(string.format("worker %s has a model of %s parameters, the PS %d: not taking part",
                              self:name(i), tostring(msg.aux), self.d))
      return
    end
    local old = self.peer_of[i]
    if old == msg.peer and self.ready[i] then return nil, i end -- "still here" (see agt.cli.worker)
    if old then self.row_of_peer[old] = nil end
    self.peer_of[i], self.row_of_peer[msg.peer] = msg.peer, i
    if self.connected then self.warn(string.format("worker %s joined on a new connection", self:name(i))) end
    self.ready[i] = true
    return i
  elseif msg.type == N.ERROR then
    local text = msg:text():sub(1, 2000)
    self.warn(string.format("worker %s cannot take part: %s", w < self.n and self:name(w + 1) or tostring(w), text))
  end
end

local function count_ready(self)
  local k = 0
  for i = 1, self.n do if self.ready[i] then k = k + 1 end end
  return k
end

-- Waits until every worker is ready, or timeout seconds; then needs at least n - f of them.
function Remote:_connect(timeout)
  local f = self.o.nb_decl_byz_workers
  local t_end = clock.mono() + timeout
  while count_ready(self) < self.n do
    local left = t_end - clock.mono()
    if left <= 0 then break end
    local msg, what, why, peer = self.net:recv(math.min(left, 0.5) * 1000)
    if msg then self:_control(msg)
    elseif what == "rejected" then self:_rejected(why, peer, -1) end
  end
  local k = count_ready(self)
  if k < self.n then
    local missing = {}
    for i = 1, self.n do if not self.ready[i] then missing[#missing + 1] = self:name(i) end end
    if self.n - k > f then -- (close() says BYE to those that came and closes the socket)
      error(string.format("--connect-timeout: %d of %d workers ready after %g s (missing: %s); "
        .. "at most f = %d may be missing (%s)", k, self.n, timeout, table.concat(missing, ", "), f,
        self.cluster.mpi and "see their ranks' output" or "start them with 'agt worker --server CLUSTER --id JOB:I'"), 0)
    end
    self.warn(string.format("%d of %d workers ready after %g s; starting without %s (faulty until they join)",
                            k, self.n, timeout, table.concat(missing, ", ")))
  end
  self.connected = true
end

-- A frame that agt.net rejected: malformed from a worker's connection (its fault); of another
-- session from elsewhere (workers still speaking to this PS's killed predecessor, or a
-- stranger), counted apart; anything else from elsewhere: rejected_unknown.
function Remote:_rejected(why, peer, step)
  local i = peer and self.row_of_peer[peer]
  if i then
    self:_fault(i, "malformed", step, why)
  elseif tostring(why):find("of another session", 1, true) then
    self.other_session = self.other_session + 1
  else
    self.rejected_unknown = self.rejected_unknown + 1
  end
end

function Remote:_fault(i, kind, step, why)
  self.fault[i][kind] = self.fault[i][kind] + 1
  -- Logged when a worker turns faulty, and when the kind of fault changes.
  if not QUIET[kind] and (not self.faulty_since[i] or self.faulty_kind[i] ~= kind) then
    self.faulty_since[i] = self.faulty_since[i] or step
    self.faulty_kind[i] = kind
    local when = step >= 0 and string.format("at step %d", step) or "while connecting"
    self.warn(string.format("worker %s faulty %s: %s", self:name(i), when, why))
  end
end

-- A STATE of worker i dropped (its streams, or its attack's state): counted as a fault of that
-- kind and said (unless QUIET), but the worker is not faulty for it: its row, taken or not,
-- says that (a refused state does not make the row it came with faulty).
function Remote:_dropped(i, kind, step, why)
  self.fault[i][kind] = self.fault[i][kind] + 1
  if not QUIET[kind] then self.warn(string.format("worker %s at step %d: %s", self:name(i), step, why)) end
end

-- A worker's STATE (its streams after its row of `step`, sent just before that GRAD): kept
-- until that row is taken from the same connection. Only the current step's, of at most 64 KiB,
-- under the sender's key, and a worker's state in form (so that no worker can make the PS's
-- checkpoints unreadable: a malformed one is counted and dropped).
function Remote:_stream_state(msg, step)
  local w = self:_who(msg, step)
  if not w or w >= self.n or msg.step ~= step then return end
  local text = msg.len <= 65536 and msg:text()
  if text and pcall(self.probe.set_state, self.probe, text) then
    self.pending_streams[w + 1] = { step = step, peer = msg.peer, state = text }
  else
    self:_dropped(w + 1, "malformed", step, "streams that are not a worker's state (dropped)")
  end
end

-- A part of an attack's state (a STATE whose aux is not 0), from worker i's row's connection, at
-- a step that asked for it: put together in asm[i]; once whole and checked, states[i] (false: it
-- was out of form, counted; the step waits no more for it).
function Remote:_attack_state(msg, step, asm, states)
  local w = self:_who(msg, step)
  if not w or w >= self.n then return end
  local i = w + 1
  local asked = self.asked and self.asked.step == step and self.asked[i]
  if msg.step ~= step or not asked or self.row_of_peer[msg.peer] ~= i then
    self:_dropped(i, msg.step < step and "late" or "malformed", step,
                  string.format("an attack's state of step %d not asked for on that connection (dropped)", msg.step))
    return
  end
  if states[i] ~= nil then return end -- (sent again with the row, θ having gone twice)
  asm[i] = asm[i] or Collusion.assembler(self.d)
  local s, why = asm[i]:add(msg.aux, msg.data, msg.len)
  if s then
    local ok
    ok, why = self.byzantine:check_wire_state(s, self.d)
    if ok then states[i] = s; return end
  end
  if s ~= nil then
    states[i] = false
    self:_dropped(i, "malformed", step, "its attack's state was refused: " .. why)
  end
end

-- Which row a GRAD may fill: its connection's, or the one it claims from a connection the PS
-- does not know when it is a row of this step (the worker's socket reconnected, after a stall
-- or a network cut: that connection speaks for the worker from now on; with --auth none,
-- knowing the session id is the only credential). Nil when it is dropped (counted).
function Remote:_row_of(msg, step)
  local i = self.row_of_peer[msg.peer]
  if not self:_who(msg, step) then return nil end -- another worker's index under this key: counted
  if not i and msg.worker >= self.n then
    self.rejected_unknown = self.rejected_unknown + 1
    return nil
  end
  local claimed = msg.worker + 1
  if i and claimed ~= i then
    self:_fault(i, "stranger", step, string.format("a row claiming to be worker %d's", msg.worker))
    return nil
  end
  if msg.step ~= step then
    -- Of an earlier step: late, or a replayed frame; of a later one: made up. Never rebinds.
    self:_fault(claimed, msg.step < step and "late" or "malformed", step,
                string.format("a row of step %d during step %d (dropped)", msg.step, step))
    return nil
  end
  if not i then
    local old = self.peer_of[claimed]
    if old then self.row_of_peer[old] = nil end
    self.peer_of[claimed], self.row_of_peer[msg.peer], self.ready[claimed] = msg.peer, claimed, true
    self.warn(string.format("worker %s is on a new connection", self:name(claimed)))
  end
  return claimed
end

function Remote:fill(theta, G, step, ctx)
  -- (rows still awaited in place when a step raised: ended before anything else is received)
  for _, peer in pairs(self.armed or {}) do self.net:unexpect(peer) end
  self.armed = {}
  self.stepped = true
  self.next_step = step -- (what a worker configured now is told it starts at)
  if not self.connected then self:_connect(self.o.connect_timeout) end
  local n, d, bytes = self.n, self.d, self.d * 4
  local losses = self.losses
  local peers, rows = {}, {}
  for i = 1, n do
    losses[i] = 0 / 0
    if self.ready[i] then peers[#peers + 1], rows[#rows + 1] = self.peer_of[i], i end
  end
  -- got[i]: true (row taken), false (waited for), "bad" (a wrong-size row), "full" (stalled),
  -- "gone" (disconnected), nil (not connected).
  local got, pending, have = {}, 0, 0
  -- rows sent θ again on their READY (once per step), and when θ went to each: a READY read
  -- within 2 s of it may be one sent before θ came (the PS read nothing for a while)
  local resent, sent_at = {}, {}
  local udp = self.udp
  if udp then udp:open(step, G) end
  local function row_bytes(i) return udp and i <= udp.k and 0 or bytes end -- a UDP row's GRAD: its loss
  -- A row awaited on a connection is put together in its place in G as it arrives (agt.net's
  -- expect; not over MPI): armed[i] is the peer whose row may be written there. Ended (unexpect)
  -- before a row is taken from elsewhere, and at the end of the step: nothing is written into
  -- G after, and a faulty row that a message wrote into, whole or in part, is made NaN.
  local gp = G.raw
  local armed, written, net = self.armed, {}, self.net
  local function disarm(i)
    if armed[i] and net:unexpect(armed[i]) then written[i] = true end
    armed[i] = nil
  end
  local function arm(i)
    if not net.expect or row_bytes(i) ~= bytes then return end
    disarm(i)
    net:expect(self.peer_of[i], N.GRAD, step, gp + (i - 1) * d, bytes)
    armed[i] = self.peer_of[i]
  end
  -- A step whose end the PS checkpoints, with an attack at the workers that keeps a state: the
  -- workers that may attack are asked for it (see _send_theta); states[i] once whole and
  -- checked (false: refused), asm[i] its parts so far.
  local states, asm = {}, {}
  local want = self.wire and self.wire.stateful and ctx and ctx.checkpoint
  self.asked = nil
  if want then
    self.asked = { step = step }
    for _, i in ipairs(self.wire.rows) do self.asked[i] = true end
  end
  local function states_pending()
    if not want then return false end
    for _, i in ipairs(self.wire.rows) do
      if got[i] == true and states[i] == nil then return true end
    end
    return false
  end
  local sent = self:_send_theta(peers, rows, theta, step)
  for j, i in ipairs(rows) do
    if TRACE then TRACE("step %d: THETA to row %d (peer %d): %s", step, i, peers[j], tostring(sent[j])) end
    if sent[j] == true then
      got[i], pending, sent_at[i] = false, pending + 1, clock.mono()
      arm(i)
    elseif sent[j] == "full" then
      got[i] = "full" -- stalled: faulty this step, still connected
    else
      self.ready[i], got[i] = false, "gone"
    end
  end
  local timeout = self.step_timeout
  local t_end = clock.mono() + timeout
  -- Rows below n - f fail the step: then the deadline is also spent waiting for workers whose
  -- connection is gone or that are not connected, to come back. (After a long pause of the PS,
  -- say a slow evaluation, ZeroMQ may have dropped every connection: the workers are back on
  -- new ones within seconds, and this step takes them instead of failing at once.)
  local need = n - self.o.nb_decl_byz_workers
  while (pending > 0 and have < self.wait_for) or have + pending < need or states_pending() do
    local left = t_end - clock.mono()
    if left <= 0 then break end
    local msg, what, why, peer = self.net:recv(left * 1000)
    if TRACE then
      if msg then TRACE("step %d: %s of worker %d, step %d, peer %d (row %s), %d bytes", step,
                        N.TYPE_NAMES[msg.type] or msg.type, msg.worker, msg.step, msg.peer,
                        tostring(self.row_of_peer[msg.peer]), msg.len)
      else TRACE("step %d: recv %s %s", step, tostring(what), tostring(why)) end
    end
    if msg then
      if msg.type == N.STATE and msg.aux ~= 0 then
        self:_attack_state(msg, step, asm, states)
      elseif msg.type == N.STATE then
        self:_stream_state(msg, step)
      elseif msg.type ~= N.GRAD then
        -- A worker that joins (or comes back on a new connection) mid-step gets this step's θ.
        -- So does one whose row is awaited and that says READY on its connection 2 s or more
        -- after its θ went: it says so only after 2 s without a θ, so it has none for this
        -- step, or its row was lost (a send that found its queue full, see agt.cli.worker);
        -- without this the step waited its whole --step-timeout for a worker that was waiting
        -- too. Once per step; a worker that did answer sends the same row again.
        local r, here = self:_control(msg, step)
        if not r and here and got[here] == false and not resent[here] and clock.mono() - sent_at[here] >= 2 then
          resent[here] = true
          if TRACE then TRACE("step %d: READY from row %d, awaited: θ again", step, here) end
          local sent1 = self:_send_theta({ self.peer_of[here] }, { here }, theta, step)[1]
          if sent1 == "full" then
            got[here], pending = "full", pending - 1
          elseif sent1 ~= true then
            self.ready[here], got[here], pending = false, "gone", pending - 1
          end
        elseif r and got[r] ~= true and got[r] ~= "bad" then
          if self:_send_theta({ self.peer_of[r] }, { r }, theta, step)[1] == true then
            if got[r] ~= false then pending = pending + 1 end
            got[r], sent_at[r] = false, clock.mono()
            arm(r) -- (its new connection's; one armed on its old one is ended)
          end
        end
      else
        local i = self:_row_of(msg, step)
        if not i then -- dropped (counted)
        elseif got[i] == true and resent[i] then
          -- (θ sent again on its READY while the first was only slow: the row of the first
          -- copy is taken, the second is a duplicate of it, dropped as late)
          self:_fault(i, "late", step, "a second row after θ was sent again (dropped)")
        elseif got[i] == true or got[i] == "bad" then
          self:_fault(i, "malformed", step, "a second row in one step")
        elseif have >= self.wait_for then
          -- (--wait-for K: K rows are in, the step waits only for attacks' states now; this row
          -- is not waited for, as when the step ends at its K-th row)
          disarm(i)
        else
          if got[i] == false then pending = pending - 1 end
          if msg.len ~= row_bytes(i) then
            got[i] = "bad"
            self:_fault(i, "wrong_size", step, string.format("a row of %d bytes, expected %d", msg.len, row_bytes(i)))
          else
            local row = gp + (i - 1) * d
            disarm(i) -- (nothing more is written into the row taken)
            if msg.data ~= row then ffi.copy(row, msg.data, msg.len) end
            losses[i], got[i], have = msg.aux, true, have + 1
            local ps = self.pending_streams[i]
            if ps and ps.step == step and ps.peer == msg.peer then self.streams[i] = ps.state end
            self.pending_streams[i] = nil
            if self.mom then self:_take_momentum(i, msg, step) end
          end
        end
      end
    elseif what == "rejected" then
      self:_rejected(why, peer, step)
    end
  end
  local enough = have >= self.wait_for -- --wait-for K: the rows still out are not waited for
  if TRACE then
    local t = {}
    for i = 1, n do t[i] = tostring(got[i]) end
    TRACE("step %d: done, have %d pending %d, got %s", step, have, pending, table.concat(t, " "))
  end
  for i = 1, n do
    disarm(i)
    if written[i] and got[i] ~= true then G:row(i):fill(0 / 0) end
  end
  if self.mom then
    for i = 1, n do if got[i] ~= true then self.mom_known[i] = false end end
  end
  if udp then udp:finish(got, t_end) end -- after it, nothing more is written into G
  if self.wire and self.wire.stateful then
    -- (a row that did not answer, or was refused: none; the checkpoint then holds none for it)
    local kept = {}
    for i, s in pairs(states) do if s then kept[i] = s end end
    self.byzantine:took_wire_states(step, want and kept or nil)
  end
  local faulty = {}
  for i = 1, n do
    if got[i] == true then
      if self.faulty_since[i] then
        self.warn(string.format("worker %s back at step %d (faulty since step %d)", self:name(i), step,
                                self.faulty_since[i]))
        self.faulty_since[i], self.faulty_kind[i] = nil, nil
      end
    else
      faulty[#faulty + 1] = i
      if got[i] == false and enough then
        self:_fault(i, "slow", step, "not waited for (--wait-for)")
      elseif got[i] == false then
        self:_fault(i, "missing", step, string.format("no row within --step-timeout %g s", timeout))
      elseif got[i] == "full" then
        self:_fault(i, "missing", step, "it is not reading (its queue is full)")
      elseif got[i] == "gone" then
        self:_fault(i, "missing", step, "its connection is gone")
      elseif got[i] == nil then
        self:_fault(i, "missing", step, "not connected")
      end
    end
  end
  self.last_faulty = faulty
  return losses, faulty
end

function Remote:faults() return self.fault end

function Remote:counters()
  if not self.udp then return {} end
  return self.udp:counters(function(i) return self:name(i) end)
end

-- Each worker's streams as the PS last took them ("worker.<i>", the local source's entries and
-- format: a checkpoint of a distributed run resumes locally too, and the other way round), and
-- the session id. Cheap: the session takes it before every step.
-- --momentum-at worker: an honest worker's row is its momentum m_i, so the PS keeps a copy of
-- the last one it took; a row attacked at the worker (Byzantine over the wire at that step) or
-- sent as datagrams (--UDP: chunks may be lost) is not m_i, and then m_i is unknown to the PS
-- (its checkpoints then cannot be resumed; a worker that rejoins starts from the PS's copy).
function Remote:_take_momentum(i, msg, step)
  local known = not (self.udp and i <= self.udp.k)
  if known and self.wire then
    for _, b in ipairs(self.byzantine:rows(step)) do if b == i then known = false end end
  end
  if known then ffi.copy(self.mom[i].raw, msg.data, self.d * 4) end
  self.mom_known[i] = known
end

function Remote:state()
  local map = { ["remote.session"] = tostring(self.session_id) }
  for i = 1, self.n do
    map["worker." .. i] = self.streams[i]
    if self.mom and self.mom_known[i] then map["worker." .. i .. ".momentum"] = ffi.string(self.mom[i].raw, self.d * 4) end
  end
  return map
end

-- Reads the workers' streams back. Before the first step (a resumed run) the workers are
-- configured with them; later (a step interrupted by Ctrl-C) they are the PS's record again.
function Remote:set_state(map)
  if self.mom and not self.stepped then
    if self.d > MAX_MOMENTUM_HEX then
      error(string.format("--checkpoint-dir: resuming a distributed run with --momentum-at worker needs "
        .. "d <= %d (the momenta travel in the workers' CONFIG as text); this model has %d", MAX_MOMENTUM_HEX, self.d), 0)
    end
    for i = 1, self.n do
      local m = map["worker." .. i .. ".momentum"]
      if type(m) ~= "string" or #m ~= self.d * 4 then
        error(string.format("--checkpoint-dir: the checkpoint does not hold worker %d's momentum (--momentum-at "
          .. "worker: the PS knows a worker's momentum from its honest rows only, not after a row attacked at "
          .. "the worker, sent over UDP, or missing at the checkpoint's step); give an empty --checkpoint-dir",
          i), 0)
      end
    end
    for i = 1, self.n do
      ffi.copy(self.mom[i].raw, map["worker." .. i .. ".momentum"], self.d * 4)
      self.mom_known[i] = true
    end
  end
  local streams = {}
  for i = 1, self.n do
    local s = map["worker." .. i]
    if type(s) ~= "string" then
      error("--checkpoint-dir: the checkpoint has no state for worker " .. i .. " (made by an agt "
        .. "that could not resume a distributed run?); give an empty --checkpoint-dir", 0)
    end
    self.probe:set_state(s) -- a worker's state as agt.experiments writes it, or an error
    streams[i] = s
  end
  self.streams = streams
  self.pending_streams = {}
end

function Remote:close()
  if not self.net then return end
  local peers = {}
  for i = 1, self.n do if self.peer_of[i] then peers[#peers + 1] = self.peer_of[i] end end
  pcall(self.net.send, self.net, peers, N.BYE, 0, -1, 0)
  local lines = {}
  for i = 1, self.n do
    local parts = {}
    for _, k in ipairs(FAULT_KINDS) do
      if self.fault[i][k] > 0 then parts[#parts + 1] = string.format("%s %d", k:gsub("_", "-"), self.fault[i][k]) end
    end
    if #parts > 0 then lines[#lines + 1] = self:name(i) .. ": " .. table.concat(parts, ", ") end
  end
  -- (a transport without CURVE or a connection bound has no such counts)
  local rej = self.rejected_unknown + (self.net.denied and self.net:denied() or 0)
  local refused = self.net.refused and self.net:refused() or 0
  if #lines > 0 or rej > 0 or refused > 0 or self.other_session > 0 then
    self.warn(string.format("faults by worker: %s%s%s%s", #lines > 0 and table.concat(lines, "; ") or "none",
                            rej > 0 and string.format("; %d frame(s) or handshake(s) from unknown connections rejected", rej) or "",
                            self.other_session > 0 and string.format("; %d frame(s) of another session dropped "
                              .. "(sent before a restart of the PS, or by a stranger)", self.other_session) or "",
                            refused > 0 and string.format("; %d connection(s) refused (the PS holds at most %d)", refused, self.max_conns) or ""))
  end
  if self.udp then
    self.warn(self.udp:report(function(i) return self:name(i) end))
    self.udp:close()
  end
  self.net:close()
  self.net = nil
end

return M
