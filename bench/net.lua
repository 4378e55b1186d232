-- bench/net.lua — the PS's exchange with its workers over the network, agt's ZeroMQ transport
-- (without and with CURVE) and its MPI transport against a plain blocking TCP socket pair, in
-- one command.
--
-- One round = what a distributed step moves: the PS sends θ (d floats) to each of k worker
-- processes and receives one row (d floats) from each into its own matrix. The workers are
-- child processes on 127.0.0.1 that answer at once (no gradient computed). For each k, every
-- transport is connected at once and their rounds alternate (a round of each in turn, `rounds`
-- times after one warm-up each: a change in the machine's load falls on all alike); the median
-- round gives GB/s received by the PS (k·d·4 bytes per round; as much is sent), and ratio =
-- ZeroMQ / plain socket (issue target: >= 0.8 without CURVE). The PS receives each ZeroMQ row
-- straight into its place in its matrix, and a worker θ into its own (agt_net_expect), as
-- agt.session.remote and agt.cli.worker do. "udp": θ over ZeroMQ, the rows as agt.udp datagrams (--UDP, 16 KiB
-- chunks) and the loss over ZeroMQ; its line adds the fraction of chunks lost (no retransmission:
-- a sender faster than the PS's receive thread loses chunks). MPI (agt.mpi, where agt was built
-- with OpenMPI and mpirun is found) runs as `mpirun -np k+1 agt bench net --mpi-child ...`:
-- "mpi" with OpenMPI's defaults (shared memory between the ranks of one host), "mpi-tcp" over
-- loopback TCP as the others (--mca btl self,tcp); the round is timed by rank 0 as for ZeroMQ,
-- in its own mpirun before the others' rounds.
--   agt bench net [d] [senders, e.g. 1,4] [rounds] [transports, e.g. tcp,zmq]
--     (default 25000000 floats, 1,4, 5, all of tcp,zmq,zmq+curve,udp,mpi,mpi-tcp)
-- Prints JSON lines: one per transport and k, then one ratio line per k.
local ffi = require("ffi")
local cjson = require("cjson")
local N = require("agt.net")
local U = require("agt.udp")
local host = require("agt.host")
local now = require("agt.clock").mono

ffi.cdef [[
struct agt_bench_sockaddr_in { uint16_t family; uint16_t port; uint32_t addr; uint8_t zero[8]; };
int socket(int domain, int type, int protocol);
int setsockopt(int fd, int level, int name, const void *val, uint32_t len);
int bind(int fd, const void *addr, uint32_t len);
int listen(int fd, int backlog);
int accept(int fd, void *addr, void *len);
int connect(int fd, const void *addr, uint32_t len);
long send(int fd, const void *buf, size_t len, int flags);
long recv(int fd, void *buf, size_t len, int flags);
int close(int fd);
]]
local C = ffi.C
local AF_INET, SOCK_STREAM, SOL_SOCKET, SO_REUSEADDR = 2, 1, 1, 2
local IPPROTO_TCP, TCP_NODELAY = 6, 1

local function addr(port)
  local a = ffi.new("struct agt_bench_sockaddr_in")
  a.family = AF_INET
  a.port = bit.bor(bit.rshift(port, 8), bit.lshift(bit.band(port, 255), 8)) -- htons
  a.addr = 0x0100007f -- 127.0.0.1, network order
  return a
end

local function send_all(fd, p, len)
  p = ffi.cast("const char *", p)
  local off = 0
  while off < len do
    local k = tonumber(C.send(fd, p + off, len - off, 0))
    if k <= 0 then error("send failed") end
    off = off + k
  end
end

local function recv_all(fd, p, len)
  p = ffi.cast("char *", p)
  local off = 0
  while off < len do
    local k = tonumber(C.recv(fd, p + off, len - off, 0))
    if k <= 0 then error("recv failed (peer closed)") end
    off = off + k
  end
end

local AGT = host.root .. "/agt"

local function spawn(args)
  os.execute(string.format("'%s' bench net --child %s >/dev/null 2>&1 &", AGT, table.concat(args, " ")))
end

-- A worker: answers each θ with a row of the same size, until the PS closes.
local function child(mode, port, d, i, keydir)
  local bytes = d * 4
  local buf = ffi.new("float[?]", d)
  if mode == "tcp" then
    local fd = C.socket(AF_INET, SOCK_STREAM, 0)
    local one = ffi.new("int[1]", 1)
    C.setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, one, 4)
    local a = addr(port)
    local t_end = now() + 20
    while C.connect(fd, a, ffi.sizeof(a)) ~= 0 do
      if now() > t_end then return 1 end
      C.close(fd)
      fd = C.socket(AF_INET, SOCK_STREAM, 0)
      os.execute("sleep 0.05")
    end
    while pcall(recv_all, fd, buf, bytes) do send_all(fd, buf, bytes) end
    C.close(fd)
    return 0
  end
  if mode == "udp" then
    local c = N.client("tcp://127.0.0.1:" .. port, 65536)
    c:send(nil, N.HELLO, i, -1, 0)
    local m
    repeat m = c:recv(20000) until not m or m.type == N.CONFIG
    if not m then return 1 end
    local u = U.client("127.0.0.1", port, i, d, 16384, 1, m:text())
    c:close()
    c = N.client("tcp://127.0.0.1:" .. port, bytes)
    c:send(nil, N.READY, i, -1, 0)
    while true do
      m = c:recv(20000)
      if not m or m.type == N.BYE then break end
      if m.type == N.THETA then
        ffi.copy(buf, m.data, bytes)
        u:send(m.step, buf)
        c:send(nil, N.GRAD, i, m.step, 0)
      end
    end
    u:close()
    c:close()
    return 0
  end
  local curve
  if mode == "curve" then
    local function rd(name) local f = io.open(keydir .. "/" .. name); local s = f:read("*l"); f:close(); return s end
    curve = { server = rd("ps.pub"), public = rd("w" .. i .. ".pub"), secret = rd("w" .. i .. ".secret") }
  end
  local c = N.client("tcp://127.0.0.1:" .. port, bytes, curve)
  c:send(nil, N.HELLO, i, -1, 0)
  while true do
    c:expect(nil, N.THETA, N.ANY_STEP, buf, bytes) -- θ in place, as agt.cli.worker takes it
    local m = c:recv(20000)
    c:unexpect(nil)
    if not m or m.type == N.BYE then break end
    if m.type == N.THETA then
      if m.data ~= buf then ffi.copy(buf, m.data, bytes) end
      while c:send(nil, N.GRAD, i, m.step, 0, buf, bytes) == "full" do os.execute("sleep 0.001") end
    end
  end
  c:close()
  return 0
end

-- MPI, in the ranks mpirun started: rank 0 times the rounds and prints {"round_s": median}.
local function mpi_child(d, rounds)
  local MPI = require("agt.mpi")
  return MPI.run(function(rank, size)
    local bytes, k = d * 4, size - 1
    local t = MPI.transport(bytes)
    local buf = ffi.new("float[?]", d)
    if rank > 0 then
      t:send(nil, N.HELLO, rank - 1, -1, 0)
      while true do
        local m = t:recv(60000)
        if not m or m.type == N.BYE then break end
        if m.type == N.THETA then
          ffi.copy(buf, m.data, bytes)
          while t:send(nil, N.GRAD, rank - 1, m.step, 0, buf, bytes) == "full" do t:recv(1) end
        end
      end
      t:close()
      return 0
    end
    local peers, seen, t_end = {}, 0, now() + 60
    while seen < k and now() < t_end do
      local m = t:recv(500)
      if m and m.type == N.HELLO then peers[m.worker + 1] = m.peer; seen = seen + 1 end
    end
    assert(seen == k, "senders did not say HELLO")
    local G, times = ffi.new("float[?]", d * k), {}
    for r = 0, rounds do
      local t0 = now()
      t:send(peers, N.THETA, 0, r, 0, buf, bytes)
      local got = 0
      while got < k do
        local m = t:recv(120000)
        assert(m, "no row within 120 s")
        if m.type == N.GRAD and m.step == r then
          ffi.copy(G + m.worker * d, m.data, bytes)
          got = got + 1
        end
      end
      if r > 0 then times[#times + 1] = now() - t0 end
    end
    t:send(peers, N.BYE, 0, -1, 0)
    table.sort(times)
    print(cjson.encode({ round_s = times[math.floor((#times + 1) / 2)] }))
    t:close()
    return 0
  end)
end

-- Why MPI cannot be measured here, or nil.
local function mpi_missing()
  local ok, why = require("agt.mpi").available()
  if not ok then return why end
  if os.execute("command -v mpirun >/dev/null 2>&1") ~= 0 then return "mpirun not found" end
end

local function bench_mpi(d, k, rounds, tcp)
  local cmd = string.format("mpirun --allow-run-as-root --oversubscribe -np %d %s '%s' bench net --mpi-child %d %d 2>&1",
                            k + 1, tcp and "--mca btl self,tcp" or "", AGT, d, rounds)
  local p = io.popen(cmd)
  local out = p:read("*a")
  p:close()
  local line = out:match('{"round_s":[^}]*}')
  if not line then error("mpirun failed: " .. out:sub(1, 2000)) end
  return cjson.decode(line).round_s
end

local function median(t)
  local c = {}
  for i, v in ipairs(t) do c[i] = v end
  table.sort(c)
  return c[math.floor((#c + 1) / 2)]
end

local port_base = 30000 + (os.time() * 7) % 20000

local function next_port()
  port_base = port_base + 1
  return port_base - 1
end

-- Each transport below is opened once per k (its worker processes started and connected) and
-- gives { round = function(r) -> seconds [, lost chunks], close = function() }: the rounds of
-- all the transports of a k then alternate (tcp, zmq, ... , tcp, zmq, ...), so a change in the
-- machine's load falls on all of them alike. theta and G (d and k·d floats) are the PS's.

local function open_tcp(d, k, theta, G)
  local bytes = d * 4
  local port = next_port()
  local fd = C.socket(AF_INET, SOCK_STREAM, 0)
  local one = ffi.new("int[1]", 1)
  C.setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, one, 4)
  local a = addr(port)
  assert(C.bind(fd, a, ffi.sizeof(a)) == 0, "bind failed")
  C.listen(fd, 16)
  for i = 0, k - 1 do spawn({ "tcp", port, d, i }) end
  local conns = {}
  for i = 1, k do
    conns[i] = C.accept(fd, nil, nil)
    C.setsockopt(conns[i], IPPROTO_TCP, TCP_NODELAY, one, 4)
  end
  return {
    round = function()
      local t0 = now()
      for i = 1, k do send_all(conns[i], theta, bytes) end
      for i = 1, k do recv_all(conns[i], G + (i - 1) * d, bytes) end
      return now() - t0
    end,
    close = function()
      for i = 1, k do C.close(conns[i]) end
      C.close(fd)
    end,
  }
end

local function open_zmq(d, k, theta, G, with_curve)
  local bytes = d * 4
  local port = next_port()
  local curve, keydir
  if with_curve then
    keydir = os.tmpname()
    os.remove(keydir)
    os.execute("mkdir -p '" .. keydir .. "'")
    local function wr(name, s) local f = io.open(keydir .. "/" .. name, "w"); f:write(s, "\n"); f:close() end
    local ppub, psec = N.keypair()
    wr("ps.pub", ppub)
    curve = { secret = psec, keys = {} }
    for i = 0, k - 1 do
      local p, s = N.keypair()
      wr("w" .. i .. ".pub", p)
      wr("w" .. i .. ".secret", s)
      curve.keys[i + 1] = p
    end
  end
  local ps = N.server("tcp://127.0.0.1:" .. port, bytes, 2 * k + 8, curve)
  for i = 0, k - 1 do spawn({ with_curve and "curve" or "zmq", port, d, i, keydir or "-" }) end
  local peers, seen = {}, 0
  local t_end = now() + 30
  while seen < k and now() < t_end do
    local m = ps:recv(500)
    if m and m.type == N.HELLO then peers[m.worker + 1] = m.peer; seen = seen + 1 end
  end
  assert(seen == k, "senders did not connect")
  return {
    round = function(r)
      local t0 = now()
      ps:send(peers, N.THETA, 0, r, 0, theta, bytes)
      -- as agt.session.remote: each row put together in its place in G
      for i = 1, k do ps:expect(peers[i], N.GRAD, r, G + (i - 1) * d, bytes) end
      local got = 0
      while got < k do
        local m = ps:recv(120000)
        assert(m, "no row within 120 s")
        if m.type == N.GRAD and m.step == r then
          local row = G + m.worker * d
          if m.data ~= row then ffi.copy(row, m.data, bytes) end
          got = got + 1
        end
      end
      for i = 1, k do ps:unexpect(peers[i]) end
      return now() - t0
    end,
    close = function()
      ps:send(peers, N.BYE, 0, -1, 0)
      os.execute("sleep 0.2")
      ps:close()
      if keydir then os.execute("rm -rf '" .. keydir .. "'") end
    end,
  }
end

-- θ over ZeroMQ, rows over UDP: a round ends when every loss has arrived and the rows are
-- whole, or 1 s after (then the missing chunks are lost).
local function open_udp(d, k, theta, G)
  local port = next_port()
  -- (capped at a row as agt.session.remote's: the send queues hold a θ's chunks)
  local ps = N.server("tcp://127.0.0.1:" .. port, d * 4, 2 * k + 8)
  local r = U.server("127.0.0.1", port, k, d, 16384)
  r:set_session(1)
  for i = 0, k - 1 do spawn({ "udp", port, d, i }) end
  local peers, seen = {}, 0
  local t_end = now() + 30
  while seen < k and now() < t_end do
    local m = ps:recv(500)
    if m and m.type == N.HELLO then ps:send({ m.peer }, N.CONFIG, m.worker, -1, 0, r:new_key(m.worker)) end
    if m and m.type == N.READY then peers[m.worker + 1] = m.peer; seen = seen + 1 end
  end
  assert(seen == k, "senders did not connect")
  local want = {}
  for i = 1, k do want[i] = true end
  return {
    chunks = r.chunks,
    round = function(rd)
      local t0 = now()
      r:open(rd, G)
      ps:send(peers, N.THETA, 0, rd, 0, theta, d * 4)
      local got = 0
      while got < k do
        local m = ps:recv(30000)
        assert(m, "no row within 30 s")
        if m.type == N.GRAD and m.step == rd then got = got + 1 end
      end
      local l, lost = r:finish(want, 1), 0
      for i = 1, k do lost = lost + l[i] end
      return now() - t0, lost
    end,
    close = function()
      ps:send(peers, N.BYE, 0, -1, 0)
      os.execute("sleep 0.2")
      r:close()
      ps:close()
    end,
  }
end

return function(args)
  if args[1] == "--child" then
    return child(args[2], tonumber(args[3]), tonumber(args[4]), tonumber(args[5]), args[6])
  end
  if args[1] == "--mpi-child" then return mpi_child(tonumber(args[2]), tonumber(args[3])) end
  local d = tonumber(args[1]) or 25000000
  local ks = {}
  for x in (args[2] or "1,4"):gmatch("%d+") do ks[#ks + 1] = tonumber(x) end
  local rounds = tonumber(args[3]) or 5
  local want = {}
  for x in (args[4] or "tcp,zmq,zmq+curve,udp,mpi,mpi-tcp"):gmatch("[^,]+") do want[x] = true end
  local no_mpi = mpi_missing()
  if no_mpi and (want.mpi or want["mpi-tcp"]) then print(cjson.encode({ bench = "net", transport = "mpi", skipped = no_mpi })) end
  for _, k in ipairs(ks) do
    local res = {}
    local function report(tr, t, lost)
      res[tr] = k * d * 4 / t / 1e9
      print(cjson.encode({ bench = "net", transport = tr, senders = k, d = d, rounds = rounds,
                           round_s = t, recv_GBps = res[tr], lost_fraction = lost }))
    end
    -- MPI first, in its own mpirun (its ranks time their own rounds)
    for _, tr in ipairs({ "mpi", "mpi-tcp" }) do
      if want[tr] and not no_mpi then report(tr, bench_mpi(d, k, rounds, tr == "mpi-tcp")) end
    end
    local theta, G = ffi.new("float[?]", d), ffi.new("float[?]", d * k)
    local open, order = {}, {}
    for _, tr in ipairs({ "tcp", "zmq", "zmq+curve", "udp" }) do
      if want[tr] then
        order[#order + 1] = tr
        if tr == "tcp" then open[tr] = open_tcp(d, k, theta, G)
        elseif tr == "udp" then open[tr] = open_udp(d, k, theta, G)
        else open[tr] = open_zmq(d, k, theta, G, tr == "zmq+curve") end
        open[tr].round(0) -- warm-up
      end
    end
    local times, lost = {}, {}
    for _, tr in ipairs(order) do times[tr], lost[tr] = {}, 0 end
    for r = 1, rounds do
      for _, tr in ipairs(order) do
        local t, l = open[tr].round(r)
        times[tr][r], lost[tr] = t, lost[tr] + (l or 0)
      end
    end
    for _, tr in ipairs(order) do
      open[tr].close()
      report(tr, median(times[tr]), tr == "udp" and lost[tr] / (rounds * k * open[tr].chunks) or nil)
    end
    local function ratio(tr) return res[tr] and res.tcp and res[tr] / res.tcp end
    local ratios = { bench = "net", senders = k, ratio_zmq_tcp = ratio("zmq"),
                     ratio_curve_tcp = ratio("zmq+curve"), ratio_udp_tcp = ratio("udp"), target = 0.8 }
    ratios.ratio_mpi_tcp, ratios.ratio_mpitcp_tcp = ratio("mpi"), ratio("mpi-tcp")
    print(cjson.encode(ratios))
  end
  return 0
end
