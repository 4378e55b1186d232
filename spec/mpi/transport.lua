-- The MPI transport (agt.mpi) under `mpirun -np 3 agt spec/mpi/transport.lua`, run by
-- spec/mpi_spec.lua: rank 0 plays the PS, rank 1 an honest worker, rank 2 a rogue one that
-- sends what agt never sends (oversized, garbage, another tag, another session, another
-- worker's index, a message to a worker). Each rank prints "ok: <check>" or "FAIL: <check>: why"
-- and exits 1 if any check failed.
local ffi = require("ffi")
local MPI = require("agt.mpi")
local N = require("agt.net")
local clock = require("agt.clock")

local C = dofile((arg[0]:match("^(.*)/") or ".") .. "/common.lua")
local raw_send, check, pattern, TAG = C.raw_send, C.check, C.pattern, C.TAG

local SESSION, CAP = 0x1234567, 2 ^ 20

local function ps(t)
  local t0 = clock.mono()
  local m, what = t:recv(300)
  local el = clock.mono() - t0
  check(m == nil and what == "timeout" and el >= 0.28 and el < 3, "recv(300) with nothing sent times out in 0.3 s", el)
  local sent = t:send({ 1, 2, 0, 99 }, N.THETA, 0, 1, 0, pattern(1000, 1), 4000)
  check(sent[1] == true and sent[2] == true and sent[3] == false and sent[4] == false,
        "THETA sent to ranks 1 and 2; not to itself nor to a rank that does not exist",
        table.concat({ tostring(sent[1]), tostring(sent[2]), tostring(sent[3]), tostring(sent[4]) }, ","))
  -- 1 row from rank 1, then rank 2's 4 rejected messages and 1 row claiming worker 0
  local rows, rej, states, t_end = {}, {}, {}, clock.mono() + 20
  while (#rows < 2 or #rej < 4 or #states < 1) and clock.mono() < t_end do
    local msg, w, why, peer = t:recv(1000)
    if msg and msg.type == N.STATE then
      states[#states + 1] = { peer = msg.peer, step = msg.step, text = msg:text(), before = #rows }
    elseif msg then
      rows[#rows + 1] = { peer = msg.peer, auth = msg.auth, worker = msg.worker, step = msg.step, aux = msg.aux,
                          len = msg.len, ok = msg.len == 4000 and ffi.cast("const float *", msg.data)[999] == 999 + msg.peer }
    elseif w == "rejected" then rej[#rej + 1] = { why = why, peer = peer } end
  end
  local st = states[1] or {}
  check(#states == 1 and st.peer == 1 and st.step == 1 and st.text == "streams of rank 1",
        "rank 1's STATE: its streams at step 1 (message type 8, as over ZeroMQ)", st.text)
  table.sort(rows, function(a, b) return a.peer < b.peer end)
  local r1, r2 = rows[1] or {}, rows[2] or {}
  check(r1.peer == 1 and r1.auth == 0 and r1.worker == 0 and r1.step == 1 and r1.ok,
        "rank 1's row: peer 1, auth 0 (its rank's worker), step 1, its bytes", r1.peer)
  check(r1.aux == 1, "the honest worker rejected the rogue's message to it", r1.aux)
  check(r2.peer == 2 and r2.auth == 1 and r2.worker == 0,
        "a row claiming worker 0 from rank 2 carries auth 1 (the PS counts it as a stranger)", r2.auth)
  local whys = {}
  for _, r in ipairs(rej) do
    check(r.peer == 2, "a rejection names the rank that sent it", r.peer)
    whys[#whys + 1] = r.why
  end
  local all = table.concat(whys, " | ")
  check(all:find("bytes from rank 2, above the cap of " .. (CAP + 48) .. " %(dropped unread%)"), "an oversized message dropped unread", all)
  check(all:find("of tag 5 from rank 2"), "a message of another tag dropped", all)
  check(all:find("without the AGTN magic"), "garbage bytes rejected", all)
  check(all:find("of another session"), "a frame of another session rejected", all)
  check(t:rejected() == 4, "4 rejections counted", t:rejected())
  -- Rank 1 sleeps without receiving: 4 large messages in flight to it, the 5th is "full".
  local big = pattern(CAP / 4, 0)
  local words = {}
  for k = 1, 5 do words[k] = tostring(t:send({ 1 }, N.THETA, 0, 10 + k, 0, big, CAP)[1]) end
  check(table.concat(words, ",") == "true,true,true,true,full", "a peer with 4 sends in flight is full", table.concat(words, ","))
  local msg = t:recv(20000)
  check(msg and msg.step == 14 and msg.aux == 4, "rank 1 then took the 4 messages sent", msg and msg.aux)
  t:send({ 1, 2 }, N.BYE, 0, -1, 0)
end

local function honest(t)
  local got, rej, theta, t_end = 0, 0, nil, clock.mono() + 20
  while (not theta or rej < 1) and clock.mono() < t_end do
    local m, w = t:recv(1000)
    if m and m.type == N.THETA then theta = m.step elseif w == "rejected" then rej = rej + 1 end
  end
  t:send(nil, N.STATE, 0, theta or -1, 0, "streams of rank 1") -- before its row, as agt worker does
  t:send(nil, N.GRAD, 0, theta or -1, rej, pattern(1000, 1), 4000)
  os.execute("sleep 3") -- not receiving: the PS's sends pile up
  local last
  t_end = clock.mono() + 20
  while got < 4 and clock.mono() < t_end do
    local m = t:recv(1000)
    if m and m.type == N.THETA then got, last = got + 1, m.step end
  end
  t:send(nil, N.GRAD, 0, last or -1, got)
  local m = t:recv(20000)
  check(m and m.type == N.BYE, "BYE received")
end

local function rogue(t)
  raw_send(string.rep("x", 100), 1, TAG) -- to a worker: only the PS may send there
  local m = t:recv(20000)
  check(m and m.type == N.THETA, "THETA received")
  t:send(nil, N.GRAD, 1, 1, 0, pattern(CAP / 4 * 2, 0), CAP * 2) -- above the cap
  raw_send(string.rep("y", 64), 0, 5)                            -- another tag
  raw_send(string.rep("x", 100), 0, TAG)                         -- not a frame
  t:set_session(SESSION + 1)
  t:send(nil, N.GRAD, 1, 1, 0, pattern(1000, 2), 4000)           -- another session
  t:set_session(SESSION)
  t:send(nil, N.GRAD, 0, 1, 0, pattern(1000, 2), 4000)           -- claims worker 0
  m = t:recv(30000)
  check(m and m.type == N.BYE, "BYE received")
end

os.exit(MPI.run(function(rank, size)
  assert(size == 3, "run with mpirun -np 3")
  local t = MPI.transport(CAP)
  t:set_session(SESSION)
  if rank == 0 then ps(t) elseif rank == 1 then honest(t) else rogue(t) end
  t:close()
  if rank == 0 then
    local ok, err = pcall(t.recv, t, 0)
    check(not ok and tostring(err):find("the socket is closed", 1, true), "a closed transport raises", err)
  end
  return C.status()
end))
