-- agt.net — the PS/worker transport of src/net.h (ZeroMQ over TCP), for Lua.
--
--   local N = require("agt.net")
--   local s = N.server("tcp://*:7000", max_payload, max_peers [, curve])    -- the PS
--   local c = N.client("tcp://127.0.0.1:7000", max_payload [, curve])       -- a worker
--     curve (PS): { secret = ps secret key, keys = { worker 0's public key, ... } }: only those
--     keys get in, and msg.auth is the index of the sender's key (from 0); without CURVE -1.
--     curve (worker): { server = the PS's public key, public =, secret = its own keypair }
--   N.keypair() -> public, secret   (Z85 text, 40 characters each)
--   s:send(peers, N.THETA, worker, step, aux, ptr, bytes) -> sent: sent[i] = true, or false
--        (peer i is gone), or "full" (its queue is full: it is not reading)
--   c:send(nil, N.GRAD, worker, step, loss, ptr, bytes)   -> true | false | "full"
--   s:recv(timeout_ms) -> msg | nil, "timeout" | nil, "rejected", why, peer
--     msg: { type, worker, peer, session, step, aux, len, data (const void *, valid until the
--            next recv) }; msg:text() copies the payload as a string
--   s:expect(peer, N.GRAD, step, ptr, bytes)   the next such message from peer (a worker: nil)
--        is put together at ptr (no copy after it): its msg.data == ptr (see agt_net_expect);
--        step N.ANY_STEP: at any step
--   s:unexpect(peer) -> true when something was written at ptr since (agt_net_unexpect)
--   s:set_session(id)  s:rejected()  s:close()
--   s:denied()   handshakes refused (CURVE: an unknown key)
--   s:refused()  connections shut down at accept, max_peers being open (the PS holds no more)
-- A socket owns its handle (ffi.gc; close() releases it at once). Socket failures raise with the
-- engine's message; Ctrl-C during a wait raises "interrupted". The same methods over another C
-- API of this shape (agt.mpi: MPI): N.class(api) and N.wrap below.
local F = require("agt.ffi")
local ffi, C = F.ffi, F.C

local M = {
  HELLO = C.AGT_NET_HELLO, CONFIG = C.AGT_NET_CONFIG, READY = C.AGT_NET_READY,
  THETA = C.AGT_NET_THETA, GRAD = C.AGT_NET_GRAD, BYE = C.AGT_NET_BYE, ERROR = C.AGT_NET_ERROR,
  STATE = C.AGT_NET_STATE,
  HEADER = C.AGT_NET_HEADER,
  ANY_STEP = -0x7fffffffffffffffLL - 1, -- (INT64_MIN: agt_net_expect's "any step")
  SEND_WAIT_S = C.AGT_NET_SEND_WAIT_MS / 1000, -- how long a worker's send waits for room
}
M.TYPE_NAMES = { [M.HELLO] = "HELLO", [M.CONFIG] = "CONFIG", [M.READY] = "READY",
                 [M.THETA] = "THETA", [M.GRAD] = "GRAD", [M.BYE] = "BYE", [M.ERROR] = "ERROR",
                 [M.STATE] = "STATE" }

local handle_p = ffi.typeof("agt_net *[1]")
local msg_t = ffi.typeof("agt_net_msg")

local function strip(msg) return (msg:gsub("^[%w_]+%.c:%d+: ", "")) end
M.strip = strip

local Msg = {}
Msg.__index = Msg
function Msg:text() return ffi.string(self.data, self.len) end

-- The methods of a transport object over a C API of agt_net's shape: api = { send =, recv =,
-- set_session =, rejected =, close = [, denied =, refused =, expect =, unexpect =] }, functions
-- taking the handle first. denied, refused, expect and unexpect are methods only where the API
-- has them (callers test for them).
function M.class(api)
  local Net = {}
  Net.__index = Net

  function Net:close()
    if self.h then
      api.close(ffi.gc(self.h, nil))
      self.h = nil
    end
  end

  -- The handle of an open socket (a closed one raises: its handle is gone).
  local function handle(self)
    if not self.h then error("agt.net: the socket is closed", 3) end
    return self.h
  end

  function Net:set_session(id) api.set_session(handle(self), id) end
  function Net:rejected() return tonumber(api.rejected(handle(self))) end
  if api.denied then function Net:denied() return tonumber(api.denied(handle(self))) end end
  if api.refused then function Net:refused() return tonumber(api.refused(handle(self))) end end
  if api.expect then
    function Net:expect(peer, kind, step, ptr, len)
      if api.expect(handle(self), peer or 0, kind, step, ptr, len) ~= 0 then error(strip(F.errmsg()), 2) end
    end
    function Net:unexpect(peer) return api.unexpect(handle(self), peer or 0) ~= 0 end
  end

  -- peers: a Lua array of peer ids (PS), or nil (worker). data: a pointer or a string (or nil).
  function Net:send(peers, kind, worker, step, aux, data, len)
    if type(data) == "string" then len = len or #data end
    len = len or 0
    local np, arr, sent = 1, nil, nil
    if peers then
      np = #peers
      arr = ffi.new("int64_t[?]", math.max(np, 1), peers)
      sent = ffi.new("int8_t[?]", math.max(np, 1))
    else
      sent = ffi.new("int8_t[1]")
    end
    local st = api.send(handle(self), arr, np, kind, worker or 0, step or -1, aux or 0, data, len, sent)
    if st ~= 0 then error(strip(F.errmsg()), 2) end
    local function word(x) if x == 1 then return true elseif x == -1 then return "full" end return false end
    if not peers then return word(sent[0]) end
    local out = {}
    for i = 1, np do out[i] = word(sent[i - 1]) end
    return out
  end

  function Net:recv(timeout_ms)
    local m = self.m
    local st = api.recv(handle(self), math.max(0, math.floor(timeout_ms)), m)
    if st == C.AGT_NET_TIMEOUT then return nil, "timeout" end
    if st == C.AGT_NET_REJECTED then return nil, "rejected", strip(F.errmsg()), tonumber(m.peer) end
    if st ~= 0 then error(strip(F.errmsg()), 2) end
    return setmetatable({ type = m.type, worker = tonumber(m.worker), peer = tonumber(m.peer), auth = m.auth,
                          session = tonumber(m.session), step = tonumber(m.step), aux = m.aux,
                          len = tonumber(m.len), data = m.data }, Msg)
  end

  return Net
end

-- An object of class Net owning handle h (released by close, or by the collector).
function M.wrap(Net, h, close) return setmetatable({ h = ffi.gc(h, close), m = msg_t() }, Net) end

local Net = M.class({ send = C.agt_net_send, recv = C.agt_net_recv, set_session = C.agt_net_set_session,
                      rejected = C.agt_net_rejected, denied = C.agt_net_denied, refused = C.agt_net_refused,
                      expect = C.agt_net_expect, unexpect = C.agt_net_unexpect, close = C.agt_net_close })

local function open(role, max_payload, max_peers)
  local h = handle_p()
  if C.agt_net_new(role, max_payload, max_peers or 0, h) ~= 0 then error(strip(F.errmsg()), 3) end
  local n = M.wrap(Net, h[0], C.agt_net_close)
  n.role = role
  return n
end

function M.server(endpoint, max_payload, max_peers, curve)
  local n = open(C.AGT_NET_SERVER, max_payload, max_peers)
  if curve and C.agt_net_curve_server(n.h, curve.secret, table.concat(curve.keys), #curve.keys) ~= 0 then
    local err = strip(F.errmsg())
    n:close()
    error(err, 2)
  end
  if C.agt_net_bind(n.h, endpoint) ~= 0 then
    local err = strip(F.errmsg())
    n:close()
    error(err, 2)
  end
  return n
end

function M.client(endpoint, max_payload, curve)
  local n = open(C.AGT_NET_CLIENT, max_payload)
  if curve and C.agt_net_curve_client(n.h, curve.server, curve.public, curve.secret) ~= 0 then
    local err = strip(F.errmsg())
    n:close()
    error(err, 2)
  end
  if C.agt_net_connect(n.h, endpoint) ~= 0 then
    local err = strip(F.errmsg())
    n:close()
    error(err, 2)
  end
  return n
end

function M.keypair()
  local pub, sec = ffi.new("char[41]"), ffi.new("char[41]")
  F.check(C.agt_net_curve_keypair(pub, sec))
  return ffi.string(pub), ffi.string(sec)
end

function M.zmq_version() return ffi.string(C.agt_net_zmq_version()) end

return M
