-- agt.session.remote — the remote gradient source: the PS side of a distributed run. The n
-- workers are `agt worker` processes (agt.cli.worker) that connect to this one over agt.net;
-- each step the PS sends θ to every ready worker and takes back one row from each before a
-- deadline. Same methods as agt.session.workers (see there), and fill returns a second value:
--   source:fill(theta, G, step, ctx) -> losses, faulty   (faulty: ascending rows with no valid
--                                        row this step; the session aggregates without them)
--   source:faults() -> { [row] = { missing =, late =, wrong_size =, malformed =, stranger = } }
--   source.rejected_unknown            frames rejected from connections that are no worker
--
-- The protocol (message types of src/net.h):
--   worker -> HELLO(worker i)            on a first socket (small size cap)
--   PS     -> CONFIG(JSON run)           the experiment and its arguments, the seed, n, the
--                                        worker's id and shard, its poison (data attacks), d,
--                                        the session id
--   worker -> READY(aux = d)             on a second socket capped at one row, session set:
--                                        the PS binds row i+1 to that connection
--   PS     -> THETA(step, θ)  worker -> GRAD(step, loss, row)   each step; PS -> BYE at close
-- A row is faulty for a step when none arrived before the deadline (--step-timeout), or it
-- came from a connection that is not that worker's, for another step, or with another size;
-- faults are counted by worker and logged when a worker turns faulty and when it is back.
-- A worker that connects again (restarted) is configured again and takes part from the next
-- step. Nothing a worker sends can make the PS allocate beyond one row or wait beyond the
-- deadline.
local ffi = require("ffi")
local N = require("agt.net")
local CL = require("agt.cluster")
local clock = require("agt.clock")
local cjson = require("cjson")
local FL = require("agt.cli.run.flags")

local M = {}

local Remote = {}
Remote.__index = Remote

local FAULT_KINDS = { "missing", "late", "wrong_size", "malformed", "stranger" }

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
  local c = FL.as_flag("server", CL.load, o.server, { ps = o.ps_job_name, workers = o.wk_job_name })
  if #c.workers ~= n then
    error(string.format("--nb-workers: the cluster has %d '%s' tasks, the run %d workers (give as many)",
                        #c.workers, c.wk_job, n), 0)
  end
  if type(o.experiment) == "table" then
    error("--server: a distributed run needs the experiment by name or path (the workers load it), not an object", 0)
  end
  local endpoint = CL.endpoint(c.ps, true)
  if o.auth == "curve" then
    c.curve = { secret = CL.read_key(CL.key_path(o.keys, c.ps_job, 0, "secret")), keys = {} }
    for i = 0, n - 1 do c.curve.keys[i + 1] = CL.read_key(CL.key_path(o.keys, c.wk_job, i, "pub")) end
  end
  return function(exp, nn, sopts) return M.new(exp, nn, sopts, o, c, endpoint) end
end

function M.new(exp, n, sopts, o, c, endpoint)
  local d = exp.d
  local self = setmetatable({
    n = n, d = d, cluster = c, o = o, losses = {}, warn = sopts.warn or function() end,
    step_timeout = o.step_timeout, peer_of = {}, row_of_peer = {}, ready = {},
    fault = {}, faulty_since = {}, faulty_kind = {}, rejected_unknown = 0,
  }, Remote)
  for i = 1, n do
    self.fault[i] = {}
    for _, k in ipairs(FAULT_KINDS) do self.fault[i][k] = 0 end
  end
  -- The largest frame the PS accepts: one row (HELLO, READY and ERROR fit in 64 KiB).
  self.net = N.server(endpoint, math.max(d * 4, 65536), 2 * n + 8, c.curve)
  self.session_id = new_session_id()
  self.net:set_session(self.session_id)
  local config = {
    session = self.session_id, experiment = o.experiment, experiment_args = o.experiment_args,
    seed = o.seed, n = n, d = d, l1 = sopts.l1 or 0, l2 = sopts.l2 or 0,
  }
  self.poison = sopts.poison
  self.config = config
  if not c.curve then
    self.warn(string.format("--auth none: workers are not authenticated and traffic is not encrypted; "
      .. "anyone who reaches %s can take part in this run (use only on a trusted network)", endpoint))
  end
  self:_connect(o.connect_timeout)
  return self
end

function Remote:name(i) return string.format("%s:%d", self.cluster.wk_job, i - 1) end

-- Sends worker i (0-based w in the message) its CONFIG on the connection it said HELLO from.
function Remote:_configure(peer, w)
  local cfg = {}
  for k, v in pairs(self.config) do cfg[k] = v end
  cfg.worker = w
  cfg.poison = self.poison and self.poison(w + 1) or nil
  cfg.session = string.format("%x", self.session_id) -- as text: JSON numbers lose digits
  local text = cjson.encode(cfg)
  self.net:send({ peer }, N.CONFIG, w, -1, 0, text)
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

-- Handles a message that is not a row of the current step; returns the row it concerns, if any.
function Remote:_control(msg, step)
  local w = self:_who(msg, step)
  if not w then return end
  if msg.type == N.HELLO then
    if w >= self.n then
      self.rejected_unknown = self.rejected_unknown + 1
      self.warn(string.format("a HELLO from worker index %d, not in the cluster (0..%d): ignored", w, self.n - 1))
      return
    end
    self:_configure(msg.peer, w)
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
    if old == msg.peer and self.ready[i] then return nil end -- "still here" (see agt.cli.worker)
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
    local msg, what = self.net:recv(math.min(left, 0.5) * 1000)
    if msg then self:_control(msg)
    elseif what == "rejected" then self.rejected_unknown = self.rejected_unknown + 1 end
  end
  local k = count_ready(self)
  if k < self.n then
    local missing = {}
    for i = 1, self.n do if not self.ready[i] then missing[#missing + 1] = self:name(i) end end
    if self.n - k > f then
      self.net:close()
      error(string.format("--connect-timeout: %d of %d workers ready after %g s (missing: %s); "
        .. "at most f = %d may be missing (start them with 'agt worker --server CLUSTER --id JOB:I')",
        k, self.n, timeout, table.concat(missing, ", "), f), 0)
    end
    self.warn(string.format("%d of %d workers ready after %g s; starting without %s (faulty until they join)",
                            k, self.n, timeout, table.concat(missing, ", ")))
  end
  self.connected = true
end

function Remote:_fault(i, kind, step, why)
  self.fault[i][kind] = self.fault[i][kind] + 1
  -- Logged when a worker turns faulty, and when the kind of fault changes.
  if kind ~= "late" and (not self.faulty_since[i] or self.faulty_kind[i] ~= kind) then
    self.faulty_since[i] = self.faulty_since[i] or step
    self.faulty_kind[i] = kind
    local when = step >= 0 and string.format("at step %d", step) or "while connecting"
    self.warn(string.format("worker %s faulty %s: %s", self:name(i), when, why))
  end
end

function Remote:fill(theta, G, step, ctx)
  local n, d, bytes = self.n, self.d, self.d * 4
  local losses = self.losses
  local peers, rows = {}, {}
  for i = 1, n do
    losses[i] = 0 / 0
    if self.ready[i] then peers[#peers + 1], rows[#rows + 1] = self.peer_of[i], i end
  end
  local got, pending = {}, 0
  local sent = self.net:send(peers, N.THETA, 0, step, 0, theta.raw, bytes)
  for j, i in ipairs(rows) do
    if sent[j] == true then
      got[i], pending = false, pending + 1
    elseif sent[j] == "full" then
      got[i] = "full" -- stalled: faulty this step, still connected
    else
      self.ready[i], got[i] = false, "gone"
    end
  end
  local timeout = self.step_timeout
  local t_end = clock.mono() + timeout
  local gp = G.raw
  while pending > 0 do
    local left = t_end - clock.mono()
    if left <= 0 then break end
    local msg, what, why, peer = self.net:recv(left * 1000)
    if msg then
      local i = self.row_of_peer[msg.peer]
      if msg.type ~= N.GRAD then
        -- A worker that joins (or comes back on a new connection) mid-step gets this step's θ.
        local r = self:_control(msg, step)
        if r and got[r] ~= true and got[r] ~= "bad" then
          if self.net:send({ self.peer_of[r] }, N.THETA, 0, step, 0, theta.raw, bytes)[1] == true then
            if got[r] ~= false then pending = pending + 1 end
            got[r] = false
          end
        end
      elseif not self:_who(msg, step) then -- another worker's index under this key: counted
      elseif not i and msg.worker < n then
        -- A row of this session from a connection the PS does not know: the worker's socket
        -- reconnected (after a stall or a network cut). It speaks for that worker from now on
        -- (with --auth none, knowing the session id is the only credential).
        i = msg.worker + 1
        local old = self.peer_of[i]
        if old then self.row_of_peer[old] = nil end
        self.peer_of[i], self.row_of_peer[msg.peer], self.ready[i] = msg.peer, i, true
        self.warn(string.format("worker %s is on a new connection", self:name(i)))
        if msg.step ~= step then
          self:_fault(i, "late", step, "a row of step " .. tostring(msg.step))
        elseif msg.len ~= bytes then
          got[i], pending = "bad", pending - (got[i] == false and 1 or 0)
          self:_fault(i, "wrong_size", step, string.format("a row of %d bytes, expected %d", msg.len, bytes))
        elseif got[i] ~= true then
          ffi.copy(gp + (i - 1) * d, msg.data, bytes)
          losses[i] = msg.aux
          pending = pending - (got[i] == false and 1 or 0)
          got[i] = true
        end
      elseif not i then
        self.rejected_unknown = self.rejected_unknown + 1
      elseif msg.worker + 1 ~= i then
        self:_fault(i, "stranger", step, string.format("a row claiming to be worker %d's", msg.worker))
      elseif msg.step ~= step then
        self:_fault(i, "late", step, "a row of step " .. tostring(msg.step))
      elseif got[i] ~= false then
        self:_fault(i, "malformed", step, "a second row in one step")
      elseif msg.len ~= bytes then
        got[i], pending = "bad", pending - 1
        self:_fault(i, "wrong_size", step, string.format("a row of %d bytes, expected %d", msg.len, bytes))
      else
        ffi.copy(gp + (i - 1) * d, msg.data, bytes)
        losses[i] = msg.aux
        got[i], pending = true, pending - 1
      end
    elseif what == "rejected" then
      local i = peer and self.row_of_peer[peer]
      if i then
        self:_fault(i, "malformed", step, why)
      else
        self.rejected_unknown = self.rejected_unknown + 1
      end
    end
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
      if got[i] == false then
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

-- The workers' own streams live in the worker processes: a checkpoint holds the run's session
-- id only, and a distributed run cannot yet be resumed from a checkpoint (see the docs).
function Remote:state() return { ["remote.session"] = tostring(self.session_id) } end

function Remote:set_state(map)
  if map["remote.session"] == tostring(self.session_id) then return end -- this run's own state
  error("--checkpoint-dir: resuming a distributed run (--server) from a checkpoint is not supported "
    .. "yet; give an empty --checkpoint-dir", 0)
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
  local rej = self.rejected_unknown + self.net:denied()
  if #lines > 0 or rej > 0 then
    self.warn(string.format("faults by worker: %s%s", #lines > 0 and table.concat(lines, "; ") or "none",
                            rej > 0 and string.format("; %d frame(s) or handshake(s) from unknown connections rejected", rej) or ""))
  end
  self.net:close()
  self.net = nil
end

return M
