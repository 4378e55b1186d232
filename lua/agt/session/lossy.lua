-- agt.session.lossy — the rows of a distributed run's UDP workers (`--UDP k`, AggregaThor's
-- lossy mode), the PS's side: agt.session.remote keeps its TCP path for everything else and
-- asks this module for the first k rows.
--
--   local L = require("agt.session.lossy")
--   L.args(o) -> the checked --udp-args (raises "--udp-args: ...")
--   local u = L.new(o, d, ps_hostport, session)   -- binds the PS's UDP socket
--   u.k                                 workers 0..k-1 (rows 1..k) send their rows over UDP
--   u:config(w) -> the `udp` part of worker w's CONFIG (a fresh key), or nil for a TCP worker
--   u:open(step, G)                     rows 1..k of G become NaN; their chunks land there
--   u:finish(got, t_end) -> lost        waits for the rows whose loss arrived (got[i] == true)
--                                       up to timeout seconds, never past the step's deadline
--   u:counters(name) -> { {tag, value}, ... } for the summaries; u:report(name) -> text
--   u:close()
--   L.sender(cfg.udp, ps_hostport, w, d, session) -> the worker's agt.udp client (s.drop, s.drop_seed)
-- A UDP worker sends its row's chunks, then its loss on TCP as a GRAD of no payload: that
-- message says the row is complete on its side. Its row is faulty only when that message does
-- not arrive; its lost chunks are NaN in a row that counts.
local U = require("agt.udp")
local kv = require("agt.kv")
local clock = require("agt.clock")

local M = {}

M.ARGS = {
  { name = "chunk", default = 16384, doc = "payload bytes per datagram, a multiple of 4 (<= 65440; 1408 fits an Ethernet frame)",
    check = function(v) return v >= 4 and v <= U.MAX_CHUNK and v % 4 == 0, "must be a multiple of 4 in [4, " .. U.MAX_CHUNK .. "]" end },
  { name = "port", default = 0, doc = "the PS's UDP port (0: the port of its TCP address in the cluster)",
    check = function(v) return v >= 0 and v <= 65535, "must be in [0, 65535]" end },
  { name = "timeout", type = "number", default = 0.05,
    doc = "seconds the PS waits, after a row's loss arrived, for its chunks still on the way (never past --step-timeout)",
    check = function(v) return v >= 0, "must be >= 0 seconds" end },
  { name = "rate", type = "number", default = 0,
    doc = "MB/s each worker sends its datagrams at most (0: as fast as its socket takes them)",
    check = function(v) return v >= 0, "must be >= 0 MB/s" end },
  { name = "drop", type = "number", default = 0,
    doc = "tests: each worker leaves out each chunk with this probability (drawn from --seed: reproducible)",
    check = function(v) return v >= 0 and v < 1, "must be in [0, 1)" end },
}

function M.args(o) return kv.parse(o.udp_args, M.ARGS, "--udp-args") end

local Lossy = {}
Lossy.__index = Lossy

-- "host:port" or "[v6]:port" -> host, port
local function split(hostport)
  local host, port = hostport:match("^%[(.*)%]:(%d+)$")
  if not host then host, port = hostport:match("^(.*):(%d+)$") end
  return host, tonumber(port)
end

function M.new(o, d, ps_hostport, session)
  local a = M.args(o)
  local host, port = split(ps_hostport)
  if a.port ~= 0 then port = a.port end
  -- Listen where the TCP path does: a numeric address as it is, a name on every interface.
  local bind = (host:match("^[%d.]+$") or host:find(":")) and host or "*"
  local r = U.server(bind, port, o.UDP, d, a.chunk)
  r:set_session(session)
  return setmetatable({ r = r, k = o.UDP, d = d, args = a, seed = o.seed, port = r.port }, Lossy)
end

function Lossy:config(w)
  if w >= self.k then return nil end
  return { port = self.port, chunk = self.args.chunk, key = self.r:new_key(w), drop = self.args.drop,
           drop_seed = self.seed, rate = self.args.rate }
end

-- G: the host matrix of the step's rows (the receive thread writes rows 1..k of it, so the
-- whole of them must be there).
function Lossy:open(step, G)
  if G.n < self.k * self.d then
    error(string.format("agt.session.lossy: G has %d elements, the %d UDP rows need %d", G.n, self.k, self.k * self.d), 2)
  end
  self.r:open(step, G.raw)
end

function Lossy:finish(got, t_end)
  local want = {}
  for i = 1, self.k do want[i] = got[i] == true end
  local left = math.max(0, math.min(self.args.timeout, t_end - clock.mono()))
  return (self.r:finish(want, left))
end

-- Cumulative counts by worker (name(i) names row i), and the kernel's drops on the socket.
function Lossy:counters(name)
  local out = {}
  for i = 1, self.k do
    local s = self.r:stats(i - 1)
    out[#out + 1] = { "udp/" .. name(i) .. "/lost", s.lost }
    out[#out + 1] = { "udp/" .. name(i) .. "/rejected", s.rejected }
  end
  out[#out + 1] = { "udp/kernel_drops", self.r:kernel_drops() }
  return out
end

-- One line for the closing fault report.
function Lossy:report(name)
  local parts = {}
  for i = 1, self.k do
    local s = self.r:stats(i - 1)
    parts[#parts + 1] = string.format("%s received %d, lost %d, rejected %d, late %d, duplicate %d", name(i),
                                      s.received, s.lost, s.rejected, s.late, s.duplicate)
  end
  local x, kd = self.r:stats(-1).rejected, self.r:kernel_drops()
  return string.format("UDP chunks: %s; %d unattributed datagram(s) rejected; %d dropped by the kernel "
    .. "(receive buffer full)", table.concat(parts, "; "), x, kd)
end

-- The worker's side: the sender of worker w, from the `udp` part of its CONFIG.
function M.sender(cu, ps_hostport, w, d, session)
  for _, k in ipairs({ "port", "chunk", "drop", "drop_seed", "rate" }) do
    if type(cu[k]) ~= "number" then error("the PS sent a UDP configuration without " .. k, 0) end
  end
  local s = U.client((split(ps_hostport)), cu.port, w, d, cu.chunk, session, cu.key)
  s.drop, s.drop_seed, s.dropped = cu.drop, cu.drop_seed, 0
  s:set_rate(cu.rate * 1e6)
  return s
end

function Lossy:close()
  if self.r then self.r:close(); self.r = nil end
end

return M
