-- Specs of a distributed run on 127.0.0.1: the PS is a session in this process (so the spec
-- steps it one step at a time and acts between steps), the workers are `agt worker` processes
-- it starts and stops itself (by pid). Data: fashion-mnist (offline).
local H = require("helpers")
local ffi = require("ffi")
local S = require("agt.session")
local N = require("agt.net")
local host = require("agt.host")
local K = require("agt.checkpoint")
local clock = require("agt.clock")

local AGT = host.root .. "/agt"

local free_port, cluster, spawn, gone, stop = H.free_port, H.cluster, H.spawn, H.gone, H.stop

-- The sockets this process holds (the PS's connections when the PS is a session in it).
local function sockets() return tonumber(H.sh("ls -l /proc/$PPID/fd 2>/dev/null | grep -c 'socket:'")) end

local function start_workers(dir, path, n, idle)
  local pids = {}
  for i = 0, n - 1 do
    pids[i + 1] = spawn(string.format("exec '%s' worker --server '%s' --id workers:%d --auth none --idle-timeout %d",
                                      AGT, path, i, idle or 20), string.format("%s/w%d.log", dir, i))
  end
  return pids
end

local BASE = {
  experiment = "fashion-mnist", experiment_args = { "eval-size:500" }, seed = 5, quiet = true,
  evaluation_file = "-", summary_dir = "-", checkpoint_period = -1, evaluation_period = -1,
}
local function opts(extra)
  local o = {}
  for k, v in pairs(BASE) do o[k] = v end
  for k, v in pairs(extra) do o[k] = v end
  return o
end

-- A raw worker process (a script run by agt, written to path): it joins as worker `id` on the
-- PS at `port`, and answers each θ with the row `row` (a Lua expression of cfg.d) sent as the
-- GRAD of worker `as`, until BYE or 20 s without a message.
local function raw_worker(path, port, id, row, as)
  H.write(path, string.format([[
local N = require("agt.net")
local cjson = require("cjson")
local ep = "tcp://127.0.0.1:%d"
local h = N.client(ep, 2^24)
h:send(nil, N.HELLO, %d, -1, 0)
local m
repeat m = h:recv(1000) until m and m.type == N.CONFIG
local cfg = cjson.decode(m:text())
h:close()
local c = N.client(ep, cfg.d * 4 + 64)
c:set_session(tonumber(cfg.session, 16))
c:send(nil, N.READY, %d, -1, cfg.d)
local row = %s
while true do
  m = c:recv(20000)
  if not m or m.type == N.BYE then break end
  if m.type == N.THETA then c:send(nil, N.GRAD, %d, m.step, 0, row) end
end
]], port, id, id, row, as))
end

describe("the rule part with faulty rows", function()
  local T = require("agt.tensor")
  local A = require("agt.aggregators")
  local R = require("agt.rng")
  local Rule = require("agt.session.rule")
  local FL = require("agt.cli.run.flags")

  it("runs the rule on the n-m rows that arrived with f-m, and maps its selection back", function()
    local n, f, d = 9, 3, 13
    local o = FL.check({ experiment = "x", aggregator = "krum", nb_workers = n, nb_decl_byz_workers = f })
    local rule = Rule.new(o, n, f, function() end)
    local G = T.new({ n, d })
    R.new(4, 1):normal(G, 0, 1)
    G:row(3).ptr[0] = 0 / 0
    G:row(7).ptr[1] = 1 / 0
    local out, want = T.new({ d }), T.new({ d })
    local faulty = { 2, 5 }
    local info = rule:aggregate(G, out, 0, faulty)
    local kept, Gc = { 1, 3, 4, 6, 7, 8, 9 }, T.new({ 7, d })
    for j, i in ipairs(kept) do Gc:row(j):copy(G:row(i)) end
    local ref = A.new("krum", 7, 1)
    local rinfo = ref:aggregate(Gc, want, { step = 0, rng = R.new(1, 1) }) or {}
    assert.equal(ffi.string(want.ptr, d * 4), ffi.string(out.ptr, d * 4))
    assert.equal(#rinfo.selected, #info.selected)
    for k, j in ipairs(rinfo.selected) do assert.equal(kept[j], info.selected[k]) end
    -- No faulty row: the rule for n and f, unchanged.
    rule:aggregate(G, out, 1, {})
    A.new("krum", n, f):aggregate(G, want, { step = 1, rng = R.new(1, 1) })
    assert.equal(ffi.string(want.ptr, d * 4), ffi.string(out.ptr, d * 4))
    -- More faulty rows than f: refused, naming them.
    local ok, err = pcall(rule.aggregate, rule, G, out, 2, { 1, 2, 3, 4 })
    assert.is_false(ok)
    assert.truthy(err:find("step 2: 4 rows are faulty (rows 1, 2, 3, 4), more than f = 3", 1, true), err)
  end)
end)

describe("a distributed run (PS + worker processes on 127.0.0.1)", function()
  it("agt run --server gives the local run's θ bit for bit (same seed, no faulty row)", function()
    local dir = H.tmpdir()
    local port = free_port()
    local path = cluster(dir, port, 6)
    local pids = start_workers(dir, path, 6)
    -- The PS through the command line, to its checkpoint; the local run in this process.
    local rc, out, err = H.agt_run(string.format("run --server '%s' --auth none --experiment fashion-mnist "
      .. "--experiment-args eval-size:500 --aggregator krum --nb-workers 6 --nb-decl-byz-workers 1 "
      .. "--seed 5 --max-step 8 --step-timeout 30 --connect-timeout 60 --checkpoint-dir '%s/ck' "
      .. "--checkpoint-period -1 --evaluation-period -1 --quiet", path, dir))
    -- (each worker says so once it has the PS's BYE)
    local paths = {}
    for i = 0, 5 do paths[i + 1] = string.format("%s/w%d.log", dir, i) end
    local logs = H.wait_logs(paths, "the PS ended the run")
    stop(pids)
    local map = K.restore(dir .. "/ck")
    os.execute("rm -rf '" .. dir .. "'")
    assert.equal(0, rc, err)
    assert.truthy(err:find("--auth none: workers are not authenticated", 1, true), err)
    assert.falsy(err:find("faulty", 1, true), err)
    for i = 1, 6 do assert.truthy(logs[i]:find("the PS ended the run after 8 steps", 1, true), logs[i]) end
    local loc = S.new(opts({ aggregator = "krum", nb_workers = 6, nb_decl_byz_workers = 1 }))
    for _ = 1, 8 do loc:step() end
    assert.equal("8", map.step)
    assert.equal(ffi.string(loc.theta.ptr, loc.d * 4), map.theta)
    loc:close()
  end)

  it("--momentum-at worker: the worker processes keep their momenta, θ is the local run's bit for bit, also resumed", function()
    local dir = H.tmpdir()
    local port = free_port() + 9
    local path = cluster(dir, port, 4)
    local pids = start_workers(dir, path, 4)
    local cmd = string.format("run --server '%s' --auth none --experiment fashion-mnist "
      .. "--experiment-args eval-size:500 --aggregator median --nb-workers 4 --nb-decl-byz-workers 1 "
      .. "--momentum-at worker --momentum 0.9 --seed 5 --max-step 6 --step-timeout 30 --connect-timeout 60 "
      .. "--checkpoint-dir '%s/ck' --checkpoint-period -1 --evaluation-period -1 --quiet", path, dir)
    local rc, _, err = H.agt_run(cmd)
    local map6 = K.restore(dir .. "/ck")
    -- resumed by a new PS (and new workers: the first ones ended with the run) for 2 more steps:
    -- the PS sends each worker its momentum from the checkpoint
    stop(pids)
    pids = start_workers(dir, path, 4)
    local rc2, _, err2 = H.agt_run(cmd:gsub("%-%-max%-step 6", "--max-step 2"))
    local map8 = K.restore(dir .. "/ck")
    stop(pids)
    os.execute("rm -rf '" .. dir .. "'")
    assert.equal(0, rc, err)
    assert.falsy(err:find("faulty", 1, true), err)
    assert.equal(0, rc2, err2)
    assert.falsy(err2:find("faulty", 1, true), err2)
    local loc = S.new(opts({ aggregator = "median", nb_workers = 4, nb_decl_byz_workers = 1,
                             momentum_at = "worker", momentum = 0.9 }))
    for _ = 1, 6 do loc:step() end
    assert.equal("6", map6.step)
    assert.equal(ffi.string(loc.theta.raw, loc.d * 4), map6.theta)
    -- the PS's checkpoint holds the workers' momenta, as a local run's does
    local st = loc.source:state()
    for i = 1, 4 do assert.equal(st["worker." .. i .. ".momentum"], map6["worker." .. i .. ".momentum"]) end
    for _ = 1, 2 do loc:step() end
    assert.equal("8", map8.step)
    assert.equal(ffi.string(loc.theta.raw, loc.d * 4), map8.theta)
    -- and it is not the run without momentum
    local plain = S.new(opts({ aggregator = "median", nb_workers = 4, nb_decl_byz_workers = 1 }))
    for _ = 1, 6 do plain:step() end
    assert.are_not.equal(ffi.string(plain.theta.raw, plain.d * 4), map6.theta)
    loc:close()
    plain:close()
  end)

  it("goes on through a killed worker, a stalled one, hostile frames and a wrong-size row, counting each", function()
    local dir = H.tmpdir()
    local port = free_port() + 1
    local path = cluster(dir, port, 6)
    local pids = start_workers(dir, path, 6, 120) -- the stalled one must not give up on its own
    local extra = {}
    local warnings = {}
    local ok, err = pcall(function()
      local ps = S.new(opts({ aggregator = "median", nb_workers = 6, nb_decl_byz_workers = 2,
                              server = path, auth = "none", step_timeout = 2, connect_timeout = 60 }))
      local real_warn = ps.source.warn
      ps.source.warn = function(msg) warnings[#warnings + 1] = msg; real_warn(msg) end
      -- The rows faulty at the last step, as a set (on a loaded machine a healthy worker may be
      -- late too, so the spec checks the rows it made faulty, not only their number).
      local function faulty()
        local set = {}
        for _, i in ipairs(ps.source.last_faulty) do set[i] = true end
        return set
      end
      ps:step()
      local F = ps.source:faults()

      -- A worker killed: its row is faulty (counted), the step goes on with the others. The step
      -- starts once the PS has closed the worker's two connections (its HELLO and step sockets):
      -- a fixed 0.2 s was too short on a loaded machine, and the PS then sent θ to a connection
      -- it had not seen close yet and waited --step-timeout for its row ("no row" instead of
      -- "its connection is gone"). (Then 0.2 s for ZeroMQ to end that peer's pipe after.)
      local before = sockets()
      os.execute("kill -9 " .. pids[6])
      gone(pids[6])
      local t_end = os.time() + 30
      while os.time() < t_end and sockets() > before - 2 do os.execute("sleep 0.05") end
      os.execute("sleep 0.2")
      local t = ps:step()
      assert.is_true(faulty()[6] and t.faulty >= 1)
      assert.equal(1, F[6].missing)

      -- A stalled worker: no row before the deadline (1 s).
      os.execute("kill -STOP " .. pids[5])
      t = ps:step()
      assert.is_true(faulty()[5] and faulty()[6] and t.faulty >= 2)
      assert.equal(1, F[5].missing)

      -- Garbage bytes on the PS's port (ZeroMQ drops the connection) and a malformed frame from
      -- a connection that is no worker's (rejected and counted).
      os.execute(string.format("bash -c 'printf \"GET / HTTP/1.0\\r\\n\\r\\n%%0300d\" 0 > /dev/tcp/127.0.0.1/%d' 2>/dev/null", port))
      local stranger = N.client(string.format("tcp://127.0.0.1:%d", port), 1024)
      local junk = string.rep("x", 100)
      stranger:send(nil, N.GRAD, 0, 3, 0, junk) -- well-formed, but another session: rejected in C
      os.execute("sleep 0.2")
      t = ps:step()
      assert.is_true(faulty()[5] and faulty()[6])
      assert.is_true(ps.source.other_session >= 1) -- (the stranger's frame: session 0)
      stranger:close()

      -- A wrong-size row: a process that joins as worker 5 (row 6, whose process was killed) and
      -- answers each θ with one float too few.
      local script = dir .. "/short.lua"
      raw_worker(script, port, 5, [[string.rep("\0", (cfg.d - 1) * 4)]], 5)
      extra.short = spawn(string.format("exec '%s' '%s'", AGT, script), dir .. "/short.log")
      -- It joins during this step (and gets its θ at once) or the next.
      t_end = os.time() + 30
      while os.time() < t_end do
        ps:step()
        if F[6].wrong_size >= 1 then break end
        os.execute("sleep 0.1")
      end
      assert.is_true(faulty()[6])
      assert.is_true(F[6].wrong_size >= 1)

      -- The stalled worker resumes: the θ it missed are dropped, its rows count again.
      os.execute("kill -CONT " .. pids[5])
      -- (A stalled worker's θ may not have been sent: its queue was full, or the PS dropped the
      -- connection; then steps do not wait for it, and it comes back when it says READY again.)
      local back = false
      t_end = os.time() + 30
      while os.time() < t_end do
        ps:step()
        if not faulty()[5] then back = true; break end
        os.execute("sleep 0.1")
      end
      assert.is_true(back)
      assert.is_true(faulty()[6])
      for i = 1, ps.d do assert.is_true(ps.theta.ptr[i - 1] == ps.theta.ptr[i - 1]) end
      ps:close()
    end)
    stop(pids)
    stop(extra)
    local text = table.concat(warnings, "\n")
    local stalled_log = H.read(dir .. "/w4.log") or ""
    os.execute("rm -rf '" .. dir .. "'")
    if not ok then error(tostring(err) .. "\nPS warnings:\n" .. text .. "\nthe stalled worker's log:\n" .. stalled_log, 0) end
    assert.truthy(text:find("worker workers:5 faulty at step 1: its connection is gone", 1, true), text)
    assert.truthy(text:find("worker workers:4 faulty at step 2: no row within --step-timeout 2 s", 1, true), text)
    assert.truthy(text:find("expected 318040", 1, true), text)
    assert.truthy(text:find("worker workers:4 back", 1, true), text)
  end)

  it("with CURVE, admits only the cluster's keys and takes a worker's identity from its key", function()
    local dir = H.tmpdir()
    local port = free_port() + 2
    local path = cluster(dir, port, 3)
    local keys, other = dir .. "/keys", dir .. "/other"
    assert.equal(0, (H.run(string.format("'%s' keygen '%s' '%s'", AGT, path, keys))))
    assert.equal(0, (H.run(string.format("'%s' keygen '%s' '%s'", AGT, path, other))))
    -- A stranger's keys, with the PS's true public key so that it gets as far as it can.
    os.execute(string.format("cp '%s/ps-0.pub' '%s/ps-0.pub'", keys, other))
    -- A worker's keys under another worker's name: workers-1's pair named workers-2.
    local swapped = dir .. "/swapped"
    os.execute(string.format("mkdir -p '%s' && cp '%s/ps-0.pub' '%s/' && cp '%s/workers-1.pub' '%s/workers-2.pub' "
      .. "&& cp '%s/workers-1.secret' '%s/workers-2.secret'", swapped, keys, swapped, keys, swapped, keys, swapped))
    local pids = {}
    for i = 0, 2 do
      pids[#pids + 1] = spawn(string.format("exec '%s' worker --server '%s' --id workers:%d --keys '%s' --idle-timeout 20",
                                            AGT, path, i, keys), string.format("%s/w%d.log", dir, i))
    end
    pids[#pids + 1] = spawn(string.format("exec '%s' worker --server '%s' --id workers:2 --keys '%s' "
      .. "--connect-timeout 6 --idle-timeout 6", AGT, path, other), dir .. "/stranger.log")
    pids[#pids + 1] = spawn(string.format("exec '%s' worker --server '%s' --id workers:2 --keys '%s' "
      .. "--connect-timeout 6 --idle-timeout 6", AGT, path, swapped), dir .. "/swapped.log")
    local warnings = {}
    local ok, err = pcall(function()
      local ps = S.new(opts({ aggregator = "median", nb_workers = 3, nb_decl_byz_workers = 1, server = path,
                              keys = keys, step_timeout = 10, connect_timeout = 60 }))
      ps.source.warn = function(msg) warnings[#warnings + 1] = msg end
      -- Training goes on over CURVE; the two impostors are refused as soon as they try (up to
      -- 60 s for them to start and try on a loaded machine, not a number of steps).
      local F = ps.source:faults()
      local t_end = os.time() + 60
      repeat
        assert.equal(0, ps:step().faulty)
        if ps.source.net:denied() >= 1 and F[2].stranger >= 1 then break end
        os.execute("sleep 0.1")
      until os.time() > t_end
      assert.is_true(ps.source.net:denied() >= 1)
      assert.is_true(F[2].stranger >= 1)
      assert.equal(0, F[1].missing + F[2].missing + F[3].missing)
      ps:close()
    end)
    stop(pids)
    os.execute("rm -rf '" .. dir .. "'")
    if not ok then error(tostring(err) .. "\n" .. table.concat(warnings, "\n"), 0) end
  end)

  it("survives the PS killed (kill -9) and restarted from its checkpoint: the workers rejoin, θ is the local run's", function()
    local dir = H.tmpdir()
    local port = free_port() + 3
    local path = cluster(dir, port, 4)
    local pids = start_workers(dir, path, 4, 60)
    local function ps_cmd(steps)
      return string.format("'%s' run --server '%s' --auth none --experiment fashion-mnist "
        .. "--experiment-args eval-size:500 --aggregator median --nb-workers 4 --nb-decl-byz-workers 1 "
        .. "--seed 5 --max-step %d --step-timeout 60 --connect-timeout 60 --checkpoint-dir '%s/ck' "
        .. "--checkpoint-delta 4 --checkpoint-period -1 --evaluation-period -1 --progress none",
        AGT, path, steps, dir)
    end
    local ok, err = pcall(function()
      local ps = spawn("exec " .. ps_cmd(100000), dir .. "/ps1.log")
      -- Past its second checkpoint a worker is stopped: the PS then waits on a step whose θ the
      -- other workers have taken (their streams are past the checkpoint's), and is killed there.
      local t_end = os.time() + 90
      while os.time() < t_end and H.newest_checkpoint(dir .. "/ck") < 8 do os.execute("sleep 0.05") end
      os.execute("kill -STOP " .. pids[4])
      assert.truthy(H.newest_checkpoint(dir .. "/ck") >= 8, H.read(dir .. "/ps1.log"))
      os.execute("sleep 0.5")
      os.execute("kill -9 " .. ps)
      os.execute("kill -CONT " .. pids[4])
      gone(ps) -- (its lock on the checkpoint directory with it)
      -- Again: it resumes from the newest checkpoint and runs 6 more steps.
      local rc, pout, perr = H.run(ps_cmd(6))
      assert.equal(0, rc, perr)
      local restored = tonumber(pout:match("Restored step (%d+)"))
      assert.truthy(restored and restored >= 8, pout .. perr)
      local paths = {}
      for i = 0, 3 do paths[i + 1] = string.format("%s/w%d.log", dir, i) end
      for _, log in ipairs(H.wait_logs(paths, "the PS ended the run")) do
        assert.truthy(log:find("the PS is back with a new session", 1, true), log)
        assert.truthy(log:find("the PS ended the run", 1, true), log)
      end
      local map = K.restore(dir .. "/ck")
      assert.equal(tostring(restored + 6), map.step)
      local loc = S.new(opts({ aggregator = "median", nb_workers = 4, nb_decl_byz_workers = 1 }))
      for _ = 1, restored + 6 do loc:step() end
      -- (θ's checksum: the bytes themselves make an unreadable failure message)
      assert.equal(K.hex(K.sha256(ffi.string(loc.theta.ptr, loc.d * 4))), K.hex(K.sha256(map.theta)))
      -- The workers' streams in the checkpoint are the local workers' (same entries, same bytes).
      local st = loc:state()
      for i = 1, 4 do assert.equal(st["worker." .. i], map["worker." .. i]) end
      -- So a local run resumed from the distributed run's checkpoint goes on as the local run.
      local res = S.new(opts({ aggregator = "median", nb_workers = 4, nb_decl_byz_workers = 1,
                               checkpoint_dir = dir .. "/ck" }))
      assert.equal(restored + 6, res.global_step)
      for _ = 1, 2 do res:step(); loc:step() end
      assert.equal(K.hex(K.sha256(ffi.string(loc.theta.ptr, loc.d * 4))),
                   K.hex(K.sha256(ffi.string(res.theta.ptr, res.d * 4))))
      res:close()
      loc:close()
    end)
    stop(pids)
    local logs = H.read(dir .. "/ps1.log") or ""
    os.execute("rm -rf '" .. dir .. "'")
    if not ok then error(tostring(err) .. "\nthe first PS's output:\n" .. logs, 0) end
  end)

  it("drops a replayed row of an earlier step (late) and forged streams (malformed): θ and streams stay the local run's", function()
    local dir = H.tmpdir()
    local port = free_port() + 4
    local path = cluster(dir, port, 4)
    local pids = start_workers(dir, path, 4)
    local warnings = {}
    local raw
    local ok, err = pcall(function()
      local ps = S.new(opts({ aggregator = "median", nb_workers = 4, nb_decl_byz_workers = 1, server = path,
                              auth = "none", step_timeout = 30, connect_timeout = 60 }))
      ps.source.warn = function(msg) warnings[#warnings + 1] = msg end
      -- A raw client learns the session as anyone can with --auth none (HELLO as worker 0)...
      raw = N.client(string.format("tcp://127.0.0.1:%d", port), 2 ^ 24)
      raw:send(nil, N.HELLO, 0, -1, 0)
      ps:step()
      local m = raw:recv(5000)
      assert.truthy(m and m.type == N.CONFIG)
      raw:set_session(tonumber(require("cjson").decode(m:text()).session, 16))
      -- ... and replays worker 0's row of step 1 (its bytes and loss, taken from G) during step 2,
      -- on that connection (up already: a new one's handshake on a loaded machine could take
      -- longer than the wait below and step 2 together, and the frames then come in step 3).
      ps:step()
      local row, loss = ffi.string(ps.G:row(1).ptr, ps.d * 4), ps.source.losses[1]
      assert.equal(true, raw:send(nil, N.GRAD, 0, 1, loss, row))
      -- (and streams for worker 0 at this step that are no worker's state: dropped, counted)
      assert.equal(true, raw:send(nil, N.STATE, 0, 2, 0, "not a state"))
      os.execute("sleep 0.2")
      local t = ps:step()
      local F = ps.source:faults()
      assert.equal(0, t.faulty)
      assert.equal(1, F[1].late)
      assert.equal(1, F[1].malformed)
      ps:step()
      local loc = S.new(opts({ aggregator = "median", nb_workers = 4, nb_decl_byz_workers = 1 }))
      for _ = 1, 4 do loc:step() end
      assert.equal(K.hex(K.sha256(ffi.string(loc.theta.ptr, loc.d * 4))),
                   K.hex(K.sha256(ffi.string(ps.theta.ptr, ps.d * 4))))
      -- The PS holds the workers' streams as the local run's workers have them.
      local want, got = loc:state(), ps:state()
      for i = 1, 4 do assert.equal(K.hex(want["worker." .. i]), K.hex(got["worker." .. i])) end
      loc:close()
      ps:close()
    end)
    if raw then raw:close() end
    stop(pids)
    local logs = {}
    for i = 0, 3 do logs[#logs + 1] = string.format("[w%d] %s", i, H.read(string.format("%s/w%d.log", dir, i)) or "") end
    os.execute("rm -rf '" .. dir .. "'")
    local text = table.concat(warnings, "\n")
    if not ok then error(tostring(err) .. "\n" .. text .. "\n" .. table.concat(logs, "\n"), 0) end
    assert.falsy(text:find("new connection", 1, true), text) -- the replay took no worker's place
    -- the forged streams are said as dropped; worker 0, whose own row was taken, is not faulty
    assert.truthy(text:find("worker workers:0 at step 2: streams that are not a worker's state (dropped)", 1, true), text)
    assert.falsy(text:find("worker workers:0 faulty", 1, true), text)
  end)

  it("--wait-for K aggregates on the first K rows: a stalled worker is not waited for", function()
    local dir = H.tmpdir()
    local port = free_port() + 5
    local path = cluster(dir, port, 4)
    local pids = start_workers(dir, path, 4, 60)
    local warnings = {}
    local ok, err = pcall(function()
      local ps = S.new(opts({ aggregator = "median", nb_workers = 4, nb_decl_byz_workers = 1, server = path,
                              auth = "none", step_timeout = 60, connect_timeout = 60, wait_for = 3 }))
      ps.source.warn = function(msg) warnings[#warnings + 1] = msg end
      local F = ps.source:faults()
      -- Every step takes 3 rows exactly, the 4th is faulty for it (not waited for: "slow").
      for _ = 1, 3 do assert.equal(1, ps:step().faulty) end
      os.execute("kill -STOP " .. pids[2])
      local t0 = os.time()
      for _ = 1, 3 do -- (3: its queue of θ is not full yet, which would make it "missing")
        local t = ps:step()
        assert.equal(1, t.faulty)
        assert.same({ 2 }, ps.source.last_faulty)
      end
      assert.is_true(os.time() - t0 < 30) -- not one --step-timeout (60 s) waited
      os.execute("kill -CONT " .. pids[2])
      for _ = 1, 3 do ps:step() end
      local slow, missing = 0, 0
      for i = 1, 4 do slow, missing = slow + F[i].slow, missing + F[i].missing end
      assert.equal(9, slow)
      assert.equal(0, missing)
      assert.is_true(F[2].slow >= 3)
      ps:close()
    end)
    stop(pids)
    local logs = {}
    for i = 0, 3 do logs[#logs + 1] = string.format("[w%d] %s", i, H.read(string.format("%s/w%d.log", dir, i)) or "") end
    os.execute("rm -rf '" .. dir .. "'")
    local text = table.concat(warnings, "\n")
    if not ok then error(tostring(err) .. "\n" .. text .. "\n" .. table.concat(logs, "\n"), 0) end
    assert.falsy(text:find("faulty at", 1, true), text) -- rows not waited for are not logged as faults
    assert.truthy(text:find("slow", 1, true), text) -- the summary at close counts them
  end)

  it("sends θ again to a worker whose row it awaits and that says READY: a θ or row lost on a live connection costs 2 s, not the step", function()
    -- Worker 1 is a raw client that drops the first θ of each step as if it never came, and
    -- says READY again after 2 s without one, as agt worker does: the PS must send that step's
    -- θ again (once), and not wait its --step-timeout for a worker that is waiting too.
    local dir = H.tmpdir()
    local port = free_port() + 8
    local path = cluster(dir, port, 2)
    local pids = { spawn(string.format("exec '%s' worker --server '%s' --id workers:0 --auth none --idle-timeout 60",
                                       AGT, path), dir .. "/w0.log") }
    H.write(dir .. "/raw.lua", string.format([[
      local N, clock = require("agt.net"), require("agt.clock")
      local ep = "tcp://127.0.0.1:%d"
      local hello = N.client(ep, 2 ^ 24)
      hello:send(nil, N.HELLO, 1, -1, 1)
      local m = hello:recv(60000)
      local cfg = require("cjson").decode(m:text())
      local net = N.client(ep, cfg.d * 4 + 64)
      net:set_session(tonumber(cfg.session, 16))
      net:send(nil, N.READY, 1, -1, cfg.d)
      local row = string.rep("\0", cfg.d * 4)
      local dropped, t_ready = {}, clock.mono() + 2
      while true do
        m = net:recv(200)
        if m and m.type == N.BYE then break end
        if m and m.type == N.THETA then
          if not dropped[m.step] then dropped[m.step] = true -- "lost"
          else net:send(nil, N.GRAD, 1, m.step, 0, row) end
          t_ready = clock.mono() + 2
        elseif clock.mono() >= t_ready then
          net:send(nil, N.READY, 1, -1, cfg.d)
          t_ready = clock.mono() + 2
        end
      end
    ]], port))
    pids[2] = spawn(string.format("exec '%s' '%s/raw.lua'", AGT, dir), dir .. "/w1.log")
    local warnings = {}
    local ok, err = pcall(function()
      local ps = S.new(opts({ aggregator = "average", nb_workers = 2, nb_decl_byz_workers = 0, server = path,
                              auth = "none", step_timeout = 30, connect_timeout = 60 }))
      ps.source.warn = function(msg) warnings[#warnings + 1] = msg end
      for _ = 1, 2 do
        local t0 = clock.mono()
        assert.equal(0, ps:step().faulty)
        local dt = clock.mono() - t0
        assert.is_true(dt >= 1.5 and dt < 15, string.format("a step took %.1f s", dt)) -- 2 s of silence, not 30
      end
      local F = ps.source:faults()
      assert.equal(0, F[2].missing + F[2].malformed)
      ps:close()
    end)
    stop(pids)
    local logs = (H.read(dir .. "/w0.log") or "") .. "\n" .. (H.read(dir .. "/w1.log") or "")
    os.execute("rm -rf '" .. dir .. "'")
    if not ok then error(tostring(err) .. "\n" .. table.concat(warnings, "\n") .. "\n" .. logs, 0) end
    assert.falsy(table.concat(warnings, "\n"):find("faulty at", 1, true), table.concat(warnings, "\n"))
  end)

  it("survives a PS that does not read for 20 s (a long evaluation): its dropped workers are taken back", function()
    -- The workers say READY every 2 s while the PS is silent: their queues fill, ZeroMQ stops
    -- reading those connections and their heartbeats time out, so the PS drops them all. The
    -- next step must wait for them to come back on new connections, not fail at once.
    local dir = H.tmpdir()
    local port = free_port() + 7
    local path = cluster(dir, port, 2)
    local pids = start_workers(dir, path, 2, 90)
    local warnings = {}
    local ok, err = pcall(function()
      local ps = S.new(opts({ aggregator = "average", nb_workers = 2, nb_decl_byz_workers = 0, server = path,
                              auth = "none", step_timeout = 60, connect_timeout = 60 }))
      ps.source.warn = function(msg) warnings[#warnings + 1] = msg end
      for _ = 1, 3 do assert.equal(0, ps:step().faulty) end
      os.execute("sleep 20")
      for _ = 1, 3 do assert.equal(0, ps:step().faulty) end
      ps:close()
    end)
    stop(pids)
    os.execute("rm -rf '" .. dir .. "'")
    if not ok then error(tostring(err) .. "\n" .. table.concat(warnings, "\n"), 0) end
  end)

  it("holds at most 2n+8 connections under a flood of raw TCP connections and half handshakes; steps go on", function()
    local dir = H.tmpdir()
    local port = free_port() + 6
    local path = cluster(dir, port, 4)
    local pids = start_workers(dir, path, 4)
    -- 60 connections held open, every other one stopping inside ZeroMQ's greeting.
    H.write(dir .. "/flood.sh", string.format([[
for i in $(seq 60); do
  exec {fd}<>/dev/tcp/127.0.0.1/%d || break
  if (( i %% 2 )); then printf '\xff\0\0\0\0\0\0\0\1\x7f' >&$fd; fi
done
echo opened
sleep 30
]], port))
    local flood
    local ok, err = pcall(function()
      local ps = S.new(opts({ aggregator = "median", nb_workers = 4, nb_decl_byz_workers = 1, server = path,
                              auth = "none", step_timeout = 30, connect_timeout = 60 }))
      ps:step() -- every worker is connected (two connections each)
      local base = sockets()
      flood = spawn("exec bash " .. dir .. "/flood.sh", dir .. "/flood.log")
      local t_end = os.time() + 30
      while os.time() < t_end and not (H.read(dir .. "/flood.log") or ""):find("opened") do os.execute("sleep 0.1") end
      -- 4 workers × 2 connections + 8: of 60 strangers at most 8 are held, the rest shut at once
      -- (within 5 s, on a loaded machine; without the bound they would stay 10 s, the handshake
      -- timeout).
      t_end = os.time() + 5
      while os.time() < t_end and not (ps.source.net:refused() >= 50 and sockets() <= base + 8) do
        os.execute("sleep 0.1")
      end
      assert.is_true(ps.source.net:refused() >= 50, tostring(ps.source.net:refused()))
      assert.is_true(sockets() <= base + 8, string.format("%d sockets, %d before", sockets(), base))
      for _ = 1, 5 do assert.equal(0, ps:step().faulty) end
      stop({ flood })
      flood = nil
      ps:close()
    end)
    if flood then stop({ flood }) end
    stop(pids)
    os.execute("rm -rf '" .. dir .. "'")
    if not ok then error(err, 0) end
  end)

  it("a row refused after it landed in its place in G leaves that row NaN and faulty; θ stays finite", function()
    local dir = H.tmpdir()
    local port = free_port() + 1
    local path = cluster(dir, port, 3)
    local pids = start_workers(dir, path, 2, 60)
    -- Worker 2's process answers each θ with a row of ones of the right size that claims to be
    -- worker 0's: it is put together in row 3's place as it arrives, then refused (stranger).
    local script = dir .. "/claim.lua"
    raw_worker(script, port, 2, [[string.rep("\0\0\128\63", cfg.d)]], 0)
    local extra = { claim = spawn(string.format("exec '%s' '%s'", AGT, script), dir .. "/claim.log") }
    local ok, err = pcall(function()
      local ps = S.new(opts({ aggregator = "median", nb_workers = 3, nb_decl_byz_workers = 1,
                              server = path, auth = "none", step_timeout = 2, connect_timeout = 60 }))
      ps.source.warn = function() end
      local F = ps.source:faults()
      local t_end = os.time() + 30
      repeat ps:step() until F[3].stranger >= 1 or os.time() > t_end
      assert.is_true(F[3].stranger >= 1)
      local is_faulty = {}
      for _, i in ipairs(ps.source.last_faulty) do is_faulty[i] = true end
      assert.is_true(is_faulty[3])
      local g, d = ps.G.raw, ps.d
      local nan = 0
      for j = 0, d - 1 do if g[2 * d + j] ~= g[2 * d + j] then nan = nan + 1 end end
      assert.equal(d, nan)
      for j = 0, d - 1 do assert.is_true(ps.theta.ptr[j] == ps.theta.ptr[j]) end
      ps:close()
    end)
    stop(pids)
    stop(extra)
    os.execute("rm -rf '" .. dir .. "'")
    if not ok then error(err, 0) end
  end)

  it("refuses bad distributed flags before any data is loaded", function()
    local function refused(extra, pattern)
      local ok, err = pcall(S.new, opts(extra))
      assert.is_false(ok)
      assert.truthy(tostring(err):find(pattern), tostring(err))
    end
    local c = [[{"ps": ["127.0.0.1:1"], "workers": ["a:1", "b:2"]}]]
    refused({ aggregator = "average", nb_workers = 2, server = c }, "^%-%-keys: is required with %-%-auth curve")
    refused({ aggregator = "average", nb_workers = 2, server = c, keys = "/nonexistent" }, "^%-%-keys: cannot read /nonexistent/ps%-0.secret")
    refused({ aggregator = "average", nb_workers = 3, server = c, auth = "none" }, "^%-%-nb%-workers: the cluster has 2")
    refused({ aggregator = "average", nb_workers = 2, server = "{\"ps\": []}", auth = "none" }, "job 'ps' has no tasks")
    refused({ aggregator = "average", nb_workers = 2, server = c, auth = "none", step_timeout = 0 }, "^%-%-step%-timeout")
    refused({ aggregator = "average", nb_workers = 2, server = "/nonexistent.json", auth = "none" }, "cannot read")
    refused({ aggregator = "average", nb_workers = 2, server = c, auth = "none", local_steps = 3 }, "^%-%-local%-steps: K=3 is not available with %-%-server")
    refused({ aggregator = "average", nb_workers = 2, nb_decl_byz_workers = 1, server = c, auth = "none", wait_for = 0 }, "^%-%-wait%-for: K=0 must be from n%-f to n %(1 to 2 with n=2 f=1%)")
    refused({ aggregator = "average", nb_workers = 2, server = c, auth = "none", wait_for = 3 }, "^%-%-wait%-for: K=3 must be from n%-f to n")
    refused({ aggregator = "average", nb_workers = 2, wait_for = 2 }, "^%-%-wait%-for: only with %-%-server")
  end)
end)
