-- The Byzantine worker ranks' channel (agt.mpi's MPI.channel, src/net_mpi.h) under `mpirun -np 4
-- agt spec/mpi/channel.lua`, run by spec/mpi_spec.lua: rank 0 plays the PS, rank 1 a
-- coordinator (its channel with ranks 1 and 2), rank 2 its partner (a channel with rank 1), rank
-- 3 a rogue outside the channel. Each rank prints "ok: <check>" or "FAIL: <check>: why" and
-- exits 1 if any check failed.
local ffi = require("ffi")
local MPI = require("agt.mpi")
local N = require("agt.net")
local clock = require("agt.clock")

local C = dofile((arg[0]:match("^(.*)/") or ".") .. "/common.lua")
local raw_send, check, pattern, TAG = C.raw_send, C.check, C.pattern, C.TAG
local TAG_BYZ = 0x4142

local SESSION, CAP, CAP_CH = 0x1234567, 2 ^ 20, 4096

-- Receives on t until done(msg, why, peer) is true or 20 s.
local function until_done(t, done)
  local t_end = clock.mono() + 20
  while clock.mono() < t_end do
    local m, w, why, peer = t:recv(500)
    if (m or w == "rejected") and done(m, why, peer) then return true end
  end
  return false
end

local function ps(t)
  os.execute("sleep 1") -- the Byzantine ranks' messages are waiting at rank 1 before its θ
  t:send({ 1, 2, 3 }, N.THETA, 0, 7, 0, pattern(10, 0), 40)
  local done = {}
  until_done(t, function(m)
    if m and m.type == N.GRAD then done[m.peer] = true end
    return done[1] and done[2] and done[3]
  end)
  check(done[1] and done[2] and done[3], "the PS heard from ranks 1, 2 and 3 on agt's tag")
  t:send({ 1, 2, 3 }, N.BYE, 0, -1, 0)
end

local function coordinator(t)
  local ch = MPI.channel(CAP_CH, { 1, 2 })
  ch:set_session(SESSION)
  local ok, err = pcall(MPI.channel, CAP_CH, { 2 })
  check(not ok and tostring(err):find("rank 2 is in another open channel", 1, true), "a rank is in one channel at most", err)
  ok, err = pcall(MPI.channel, CAP_CH, { 0 })
  check(not ok and tostring(err):find("rank 0 is not a worker rank", 1, true), "the PS's rank is in no channel", err)
  -- The step handle takes θ from rank 0 and rejects rank 3's message (no channel claims rank 3);
  -- it leaves rank 2's messages, which wait for the channel.
  local theta, whys = nil, {}
  until_done(t, function(m, why, peer)
    if m and m.type == N.THETA then theta = m.step elseif not m then whys[#whys + 1] = peer .. ": " .. why end
    return theta and #whys >= 1
  end)
  local all = table.concat(whys, " | ")
  check(theta == 7, "θ from the PS on the step handle", theta)
  check(#whys == 1 and all:find("^3: a message of tag 16706 from rank 3"), "rank 3 (outside the channel) rejected "
    .. "by the step handle, not given to the channel; nothing of rank 2's taken there", all)
  -- The channel: the partner's row (auth 1: rank 2 is the second of the channel's ranks), its
  -- message on agt's step tag and its oversized one rejected, probed before they are received.
  local row, rej = nil, {}
  until_done(ch, function(m, why, peer)
    if m and m.type == N.GRAD then
      row = { peer = m.peer, auth = m.auth, step = m.step, ok = m.len == 400 and ffi.cast("const float *", m.data)[99] == 101 }
    elseif not m then rej[#rej + 1] = peer .. ": " .. why end
    return row and #rej >= 2
  end)
  row = row or {}
  check(row.peer == 2 and row.auth == 1 and row.step == 7 and row.ok, "the partner's row on the channel: rank 2, "
    .. "auth 1 (its index among the channel's ranks), its bytes", row.auth)
  all = table.concat(rej, " | ")
  check(all:find("2: a message of tag 16711 from rank 2 (agt's tag between Byzantine ranks is 16706)", 1, true),
        "a message of another tag rejected on the channel", all)
  check(all:find("2: a message of %d+ bytes from rank 2, above the cap of " .. (CAP_CH + 48)), "an oversized message "
    .. "dropped unread on the channel", all)
  check(ch:rejected() == 2, "2 rejections counted on the channel", ch:rejected())
  local sent = ch:send({ 2, 3, 0 }, N.GRAD, 1, 7, 0, pattern(100, 5), 400)
  check(sent[1] == true and sent[2] == false and sent[3] == false, "the channel sends to its ranks only",
        tostring(sent[1]) .. "," .. tostring(sent[2]) .. "," .. tostring(sent[3]))
  local t0 = clock.mono()
  local m, what = ch:recv(300)
  local el = clock.mono() - t0
  check(m == nil and what == "timeout" and el >= 0.28 and el < 3, "the channel's recv(300) times out in 0.3 s", el)
  ch:close()
  t:send(nil, N.GRAD, 0, 7, 0)
  check(until_done(t, function(m2) return m2 and m2.type == N.BYE end), "BYE received")
end

local function partner(t)
  local ch = MPI.channel(CAP_CH, { 1 })
  ch:set_session(SESSION)
  ch:send(nil, N.GRAD, 1, 7, 0, pattern(100, 2), 400)             -- to the channel's first rank
  raw_send(string.rep("x", 100), 1, TAG)                          -- agt's step tag, to a worker
  ch:send(nil, N.GRAD, 1, 7, 0, pattern(2 * CAP_CH, 0), 8 * CAP_CH) -- above the channel's cap
  local reply
  until_done(ch, function(m) reply = m and m.type == N.GRAD and m; return reply end)
  check(reply and reply.peer == 1 and reply.auth == 0 and ffi.cast("const float *", reply.data)[99] == 104,
        "the coordinator's answer on the partner's channel (auth 0: the coordinator)", reply and reply.auth)
  local theta
  until_done(t, function(m) theta = m and m.type == N.THETA and m.step; return theta end)
  check(theta == 7, "θ from the PS on the step handle of a rank with a channel", theta)
  ch:close()
  t:send(nil, N.GRAD, 1, 7, 0)
  check(until_done(t, function(m) return m and m.type == N.BYE end), "BYE received")
end

local function rogue(t)
  raw_send(string.rep("z", 64), 1, TAG_BYZ) -- the channel's tag from a rank outside it
  local theta
  until_done(t, function(m) theta = m and m.type == N.THETA and m.step; return theta end)
  t:send(nil, N.GRAD, 2, 7, 0)
  check(until_done(t, function(m) return m and m.type == N.BYE end), "BYE received")
end

os.exit(MPI.run(function(rank, size)
  assert(size == 4, "run with mpirun -np 4")
  local t = MPI.transport(CAP)
  t:set_session(SESSION)
  if rank == 0 then
    local ok, err = pcall(MPI.channel, CAP_CH, { 1 })
    check(not ok and tostring(err):find("rank 0 is the PS", 1, true), "the PS opens no channel", err)
    ps(t)
  elseif rank == 1 then coordinator(t) elseif rank == 2 then partner(t) else rogue(t) end
  t:close()
  return C.status()
end))
