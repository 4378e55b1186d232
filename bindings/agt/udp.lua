-- agt.udp — lossy gradient rows over UDP (src/udp.h), for Lua.
--
--   local U = require("agt.udp")
--   local r = U.server(host, port, k, d, chunk_bytes [, rcvbuf])  -- the PS: rows of workers 0..k-1
--   r.port, r.chunks                       the port bound, the chunks per row
--   r:set_session(id)  r:new_key(w) -> key (hex text, for worker w's CONFIG)
--   r:open(step, G_ptr)                    the first k rows of G become NaN; chunks land there
--   r:finish(want, timeout_s) -> lost, complete
--                                          want[w+1] true: wait (up to timeout_s) for worker w's
--                                          whole row; lost[w+1] = its chunks missing this step
--   r:stats(w) -> { received, lost, rejected, late, duplicate }   (w = -1: unattributed)
--   r:kernel_drops()  r:close()
--   local s = U.client(host, port, w, d, chunk_bytes, session, key_hex)   -- a worker
--   s:send(step, ptr, drop, drop_seed) -> chunks left out
--   s:set_rate(bytes_per_s)                paces the sends (0: unpaced)
--   U.dropped(drop_seed, w, step, chunk, drop) -> boolean   (which chunks a drop rate leaves out)
-- A handle owns its socket (ffi.gc; close() releases it at once). Failures raise with the
-- engine's message; Ctrl-C during finish raises "interrupted".
local F = require("agt.ffi")
local ffi, C = F.ffi, F.C

local M = { MAX_CHUNK = C.AGT_UDP_MAX_CHUNK, HEADER = C.AGT_UDP_HEADER, TAG = C.AGT_UDP_TAG }

local Udp = {}
Udp.__index = Udp

local handle_p = ffi.typeof("agt_udp *[1]")
local KEY = C.AGT_UDP_KEY

local function strip(msg) return (msg:gsub("^[%w_]+%.c:%d+: ", "")) end
local function check(st) if st ~= 0 then error(strip(F.errmsg()), 3) end end

local function wrap(h, k)
  local u = setmetatable({ h = ffi.gc(h, C.agt_udp_close), k = k }, Udp)
  u.port = C.agt_udp_port(u.h)
  u.chunks = tonumber(C.agt_udp_chunks(u.h))
  return u
end

function M.server(host, port, k, d, chunk, rcvbuf)
  local h = handle_p()
  check(C.agt_udp_server(host, port, k, d, chunk, rcvbuf or 64 * 2 ^ 20, h))
  local u = wrap(h[0], k)
  u.rcvbuf = tonumber(C.agt_udp_rcvbuf(u.h))
  u.want = ffi.new("uint8_t[?]", k)
  u.lost = ffi.new("int64_t[?]", k)
  u.complete = ffi.new("int[1]")
  u.st = ffi.new("agt_udp_stats")
  return u
end

local function hex_to_key(hex)
  if type(hex) ~= "string" or #hex ~= 2 * KEY or not hex:match("^%x+$") then
    error(string.format("a UDP key is %d hexadecimal characters", 2 * KEY), 3)
  end
  local key = ffi.new("uint8_t[?]", KEY)
  for i = 0, KEY - 1 do key[i] = tonumber(hex:sub(2 * i + 1, 2 * i + 2), 16) end
  return key
end

function M.client(host, port, w, d, chunk, session, key_hex)
  local key = hex_to_key(key_hex)
  local h = handle_p()
  local st = C.agt_udp_client(host, port, w, d, chunk, session, key, h)
  ffi.fill(key, KEY)
  check(st)
  return wrap(h[0])
end

function Udp:close()
  if self.h then
    C.agt_udp_close(ffi.gc(self.h, nil))
    self.h = nil
  end
end

function Udp:set_session(id) C.agt_udp_set_session(self.h, id) end

function Udp:new_key(w)
  local key = ffi.new("uint8_t[?]", KEY)
  check(C.agt_udp_new_key(self.h, w, key))
  local hex = {}
  for i = 0, KEY - 1 do hex[i + 1] = string.format("%02x", key[i]) end
  ffi.fill(key, KEY)
  return table.concat(hex)
end

function Udp:open(step, ptr) check(C.agt_udp_open(self.h, step, ptr)) end

function Udp:finish(want, timeout_s)
  for w = 1, self.k do self.want[w - 1] = want[w] and 1 or 0 end
  local st = C.agt_udp_finish(self.h, self.want, math.max(0, math.floor(timeout_s * 1000)), self.lost, self.complete)
  check(st)
  local lost = {}
  for w = 1, self.k do lost[w] = tonumber(self.lost[w - 1]) end
  return lost, self.complete[0]
end

function Udp:stats(w)
  check(C.agt_udp_stats_of(self.h, w, self.st))
  local s = self.st
  return { received = tonumber(s.received), lost = tonumber(s.lost), rejected = tonumber(s.rejected),
           late = tonumber(s.late), duplicate = tonumber(s.duplicate) }
end

function Udp:kernel_drops() return tonumber(C.agt_udp_kernel_drops(self.h)) end

function Udp:send(step, ptr, drop, drop_seed)
  local n = ffi.new("int64_t[1]")
  check(C.agt_udp_send(self.h, step, ptr, drop or 0, drop_seed or 0, n))
  return tonumber(n[0])
end

function Udp:set_rate(bytes_per_s) check(C.agt_udp_set_rate(self.h, bytes_per_s or 0)) end

function M.dropped(drop_seed, w, step, chunk, drop)
  return C.agt_udp_dropped(drop_seed, w, step, chunk, drop) ~= 0
end

return M
