-- agt worker — one worker of a distributed run (the PS is `agt run --server CLUSTER ...`).
--
--   agt worker --server CLUSTER --id workers:3 --auth none
--
-- Connects to the PS of the cluster and says who it is; the PS answers with the run (the
-- experiment and its arguments, the text of a user's experiment file, the seed, n, this worker's
-- shard and poison, the model size, the session id, this worker's random streams, and the
-- attack when this worker may attack over the wire). The worker loads its data locally, then
-- each step takes θ and sends back its streams and its gradient row and loss — what the local
-- source (agt.session.workers) computes for that row, bit for bit — or, when the PS marks it
-- Byzantine for the step, its streams and the attack's row (agt.session.collusion: alone, or
-- colluding with the other Byzantine workers), and, when the PS asks (a step whose end it
-- checkpoints), the attack's state after that step. It stops when the PS says the run is over
-- (exit 0), or when nothing has come from the PS for --idle-timeout seconds (exit 1). If
-- several θ are waiting (after a stall), only the newest is computed; a θ of the step it
-- answered last (the PS sent it again) gets that row and its streams again. While the PS is
-- silent it says HELLO again every few seconds: a PS restarted from its checkpoint answers with
-- a new session and the streams of that checkpoint, and the worker carries on in that run (the
-- data already loaded is kept; the attack and the UDP sender are made again for the session,
-- the attack from the state the PS kept when it sends one).
-- With --MPI it is a rank of 'agt run --MPI' (rank r is worker r-1): the same steps over MPI,
-- STATE before each GRAD too, Byzantine ranks colluding on a channel of their own (agt.mpi's
-- MPI.channel), but no HELLO again (the ranks live and die with the job).
-- See agt.session.remote for the protocol.
local ffi = require("ffi")
local N = require("agt.net")
local CL = require("agt.cluster")
local E = require("agt.experiments")
local T = require("agt.tensor")
local clock = require("agt.clock")
local cjson = require("cjson.safe")
local U = require("agt.util")
local Collusion = require("agt.session.collusion")
local Momentum = require("agt.session.momentum")
local Lossy = require("agt.session.lossy")

local USAGE = [[
Usage: agt worker --server CLUSTER --id JOB:INDEX [flags]

A worker of a distributed run whose parameter server is 'agt run --server CLUSTER ...'.
  --server CLUSTER       the cluster, JSON {"ps": ["host:port"], "workers": [...]} or a file
  --id JOB:INDEX         this worker (e.g. workers:0)
  --ps-job-name NAME     job name of the PS in the cluster (default: ps)
  --wk-job-name NAME     job name of the workers (default: workers)
  --auth curve|none      as the PS's --auth (default: curve)
  --keys DIR             with --auth curve: holds ps-0.pub and this worker's keypair
                         (<job>-<i>.pub, <job>-<i>.secret; see 'agt keygen')
  --connect-timeout S    seconds to wait for the PS's answer at start (default: 60)
  --idle-timeout S       seconds without a word from the PS before giving up (default: 120);
                         meanwhile it asks again every 2 s, so a PS restarted from its
                         checkpoint within that time takes it back
  --MPI                  a rank of an MPI run instead (no --server, --id, --auth, --keys: the
                         rank r is worker r-1 of rank 0's 'agt run --MPI'): mpirun -np 1 agt run
                         --MPI ... : -np N agt worker --MPI  (what 'mpirun -np N+1 agt run --MPI' does).
                         No rejoin: the ranks live and die with the job
With the PS's --UDP K, workers 0..K-1 send their rows as UDP datagrams to the PS's host (the
port, chunk size and key come in the PS's CONFIG; see docs/distributed.md).
Exit status: 0 when the PS ends the run, 1 on a failure, 2 on bad flags.]]

local FLAGS = { server = true, id = true, ["ps-job-name"] = true, ["wk-job-name"] = true,
                auth = true, keys = true, ["connect-timeout"] = true, ["idle-timeout"] = true, MPI = true }

local function parse(args)
  local o = { ["ps-job-name"] = "ps", ["wk-job-name"] = "workers", auth = "curve",
              ["connect-timeout"] = "60", ["idle-timeout"] = "120" }
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--help" or a == "-h" then return nil, "help" end
    local name, val = a:match("^%-%-([^=]+)=(.*)$")
    if not name then name = a:match("^%-%-(.+)$") end
    if not name or not FLAGS[name] then error(string.format("unknown argument '%s' (see agt worker --help)", a), 0) end
    if name == "MPI" then val = val or "true" end
    if not val then
      i = i + 1
      val = args[i]
      if val == nil then error(string.format("--%s: expects a value", name), 0) end
    end
    o[name] = val
    i = i + 1
  end
  o.MPI = o.MPI == "true" or nil
  if o.MPI and (o.server or o.id) then error("--MPI: the rank is the worker's id; give no --server or --id", 0) end
  if not o.server and not o.MPI then error("--server: is required (the cluster)", 0) end
  if not o.id and not o.MPI then error("--id: is required (e.g. --id workers:0)", 0) end
  for _, k in ipairs({ "connect-timeout", "idle-timeout" }) do
    local x = tonumber(o[k])
    if not x or x <= 0 then error(string.format("--%s: expects seconds > 0, got '%s'", k, o[k]), 0) end
    o[k] = x
  end
  if o.auth ~= "none" and o.auth ~= "curve" then error("--auth: expects curve or none, got '" .. o.auth .. "'", 0) end
  if o.auth == "curve" and not o.keys and not o.MPI then
    error("--keys: is required with --auth curve (the default); or give --auth none on a trusted network", 0)
  end
  return o
end

local function say(id, fmt, ...)
  io.stderr:write(string.format("[%s] " .. fmt .. "\n", id, ...))
end

-- AGT_TRACE_NET=1: each message of the steps on stderr, with the monotonic clock (the PS's
-- agt.session.remote prints its side the same way): where a step's row went missing.
local TRACE = (os.getenv("AGT_TRACE_NET") or "") ~= "" and function(id, fmt, ...)
  say(id, "%.3f " .. fmt, clock.mono(), ...)
end or nil

-- Waits up to timeout seconds for a message of one of the wanted types; nil on timeout.
local function wait_for(net, timeout, wanted)
  local t_end = clock.mono() + timeout
  while true do
    local left = t_end - clock.mono()
    if left <= 0 then return nil end
    local msg = net:recv(math.min(left, 1) * 1000)
    if msg and wanted[msg.type] then return msg end
  end
end

local from_hex = require("agt.checkpoint").unhex

-- The run of a CONFIG message, or nil and why.
local function decode_config(msg, w)
  local cfg = cjson.decode(msg:text())
  local session = type(cfg) == "table" and type(cfg.session) == "string" and tonumber(cfg.session, 16)
  if not session or cfg.worker ~= w or type(cfg.d) ~= "number" then
    return nil, "the PS sent a run description this agt does not understand"
  end
  cfg.session_id = session
  return cfg
end

local function run(o)
  local w, id, endpoint, curve, c
  local function open(cap) return N.client(endpoint, cap, curve) end
  if o.MPI then -- rank r is worker r-1, the PS rank 0 (agt.mpi)
    local MPI = require("agt.mpi")
    w, endpoint, open = MPI.init() - 1, "MPI rank 0", MPI.transport
    id = string.format("%s:%d", o["wk-job-name"], w)
  else
    c = CL.load(o.server, { ps = o["ps-job-name"], workers = o["wk-job-name"] })
    w = CL.parse_id(o.id, c, c.wk_job)
    id = o.id
    endpoint = CL.endpoint(c.ps, false)
    if o.auth == "curve" then
      curve = { server = CL.read_key(CL.key_path(o.keys, c.ps_job, 0, "pub")),
                public = CL.read_key(CL.key_path(o.keys, c.wk_job, w, "pub")),
                secret = CL.read_key(CL.key_path(o.keys, c.wk_job, w, "secret")) }
    else
      say(id, "--auth none: not authenticated, not encrypted (a trusted network only)")
    end
  end

  -- 1. Who am I -> the run, on a socket capped at 16 MiB (the run's description is small) that
  -- stays open: HELLO again on it when the PS is silent (see the steps below). Not over MPI:
  -- a PS rank that dies ends the job (no restarted PS to rejoin), and a process receives on one
  -- MPI handle at a time (agt.mpi), so the HELLO handle is closed once the run is known.
  local hello = open(16 * 2 ^ 20)
  hello:send(nil, N.HELLO, w, -1, Collusion.PROTOCOL)
  local msg = wait_for(hello, o["connect-timeout"], { [N.CONFIG] = true, [N.BYE] = true })
  if not msg then
    hello:close()
    say(id, "no answer from the PS at %s within --connect-timeout %g s", endpoint, o["connect-timeout"])
    return 1
  end
  if msg.type == N.BYE then hello:close(); return 0 end
  local cfg, why = decode_config(msg, w)
  if not cfg then hello:close(); say(id, "%s", why); return 1 end
  if o.MPI then hello:close(); hello = nil end

  -- 2. The data and the model (kept across sessions of the same run), the worker's streams as
  -- the PS has them, the attack (when this worker may attack over the wire) and the UDP sender
  -- (--UDP: its rows go as datagrams, agt.session.lossy; its GRAD carries the loss), then READY
  -- on the step socket, capped at one θ, with the session set. Again for each new session.
  local exp, exp_key
  local net, worker, session, theta, row, col, udp, momentum
  local answered -- the step, streams and loss of the last row sent in this session (in row)
  local udp_dropped = 0 -- chunks left out by a test drop rate, over the sessions
  local function close_session()
    if net then net:close(); net = nil end
    if col then col:close(); col = nil end
    if udp then udp_dropped = udp_dropped + udp.dropped; udp:close(); udp = nil end
  end
  local function configure()
    close_session()
    answered = nil
    net = open(math.max(cfg.d * 4, 65536))
    net:set_session(cfg.session_id)
    session = cfg.session_id
    local ok, err = pcall(function()
      local key = cjson.encode({ cfg.experiment, cfg.experiment_source, cfg.experiment_args, cfg.seed, cfg.n })
      if key ~= exp_key then
        exp, exp_key = nil, nil
        local def = cfg.experiment
        if type(cfg.experiment_source) == "string" then
          -- a user's experiment file, sent by the PS: this host needs only agt (and the data)
          def = U.load_lua_text(cfg.experiment_source, tostring(cfg.experiment), "experiment")
        end
        exp = E.load(def, cfg.experiment_args, { seed = cfg.seed, n = cfg.n })
        exp_key = key
      end
      if exp.d ~= cfg.d then
        error(string.format("the experiment has %d parameters here, %d at the PS (another version of agt "
          .. "or of the experiment?)", exp.d, cfg.d), 0)
      end
      exp:shards(cfg.n) -- the data and the shards now, not in the first step's time
      worker = exp:worker(w + 1, { seed = cfg.seed, l1 = cfg.l1, l2 = cfg.l2,
                                   poison = cfg.poison ~= cjson.null and cfg.poison or nil })
      if cfg.streams ~= nil and cfg.streams ~= cjson.null then
        local st = from_hex(cfg.streams)
        if not st then error("the PS sent streams that are not hexadecimal text", 0) end
        worker:set_state(st)
        worker:_setup() -- the sampler now: a state that does not fit the shard is refused here
      end
      if type(cfg.attack) == "table" then
        col = Collusion.new(cfg.attack, { w = w, d = cfg.d, curve = curve, session = session,
                                          cluster = c or { wk_job = o["wk-job-name"], workers = {} }, -- --MPI
                                          mpi = o.MPI and require("agt.mpi") or nil,
                                          say = function(text) say(id, "%s", text) end })
      end
      if type(cfg.udp) == "table" then
        local oku, s = pcall(Lossy.sender, cfg.udp, c.ps, w, cfg.d, session)
        if not oku then error("cannot send rows over UDP: " .. tostring(s), 0) end
        udp = s
        say(id, "rows over UDP to port %d, %d chunk(s) of %d bytes%s", udp.port, udp.chunks, cfg.udp.chunk,
            udp.drop > 0 and string.format(", test drop rate %g", udp.drop) or "")
      end
      -- --momentum-at worker: m_i <- beta m_i + g_i, sent instead of g_i (a Byzantine worker's
      -- attack reads its momentum, as in a local run). From the PS's record when it sends one (a
      -- resumed run, a PS restarted from its checkpoint, a worker that rejoins), else from zero.
      momentum = nil
      if type(cfg.momentum) == "number" then
        momentum = T.new({ cfg.d })
        local m = type(cfg.momentum_state) == "string" and from_hex(cfg.momentum_state)
        if m and #m == cfg.d * 4 then ffi.copy(momentum.raw, m, #m)
        elseif cfg.momentum_state ~= nil and cfg.momentum_state ~= cjson.null then
          error("the PS sent a momentum that is not " .. cfg.d .. " values in hexadecimal text", 0)
        else momentum:zero() end
      end
    end)
    if not ok then
      local why = tostring(err)
      say(id, "cannot take part: %s", why)
      net:send(nil, N.ERROR, w, -1, 0, why)
      return false
    end
    if not theta or theta:numel() ~= cfg.d then theta, row = T.new({ cfg.d }), T.new({ cfg.d }) end
    net:send(nil, N.READY, w, -1, cfg.d)
    say(id, "ready: %s, d = %d, session %s, from step %s%s", tostring(cfg.experiment), cfg.d, cfg.session,
        tostring(cfg.step),
        col and string.format("; may attack (%s%s)", col.attack.name, col.colludes and ", colluding" or "") or "")
    return true
  end
  local function finish(code)
    close_session()
    if hello then hello:close() end
    return code
  end
  if not configure() then return finish(1) end

  -- 3. Steps until BYE. Silence from the PS for a while says READY again: if the PS dropped
  -- this connection (a stall past its heartbeat, a network cut), ZeroMQ has reconnected with
  -- a new one that the PS does not know until it hears from it; it then sends the step's θ.
  -- It also says HELLO again: a CONFIG of another session is a PS restarted from its
  -- checkpoint, and the worker joins it with the streams it sends (its own are then ahead).
  -- Over MPI only READY is said again (no HELLO handle, see 1.: no PS comes back within a job).
  local steps = 0
  -- The next THETA or BYE; or { config = the run } when the PS is another session; or nil.
  local function next_theta()
    local t_end, t_ready = clock.mono() + o["idle-timeout"], clock.mono() + 2
    while clock.mono() < t_end do
      local m = net:recv(500)
      if TRACE and m then TRACE(id, "recv %s step %d", N.TYPE_NAMES[m.type] or m.type, m.step) end
      if m and (m.type == N.THETA or m.type == N.BYE) then return m end
      local h = hello and hello:recv(0)
      while h do
        if h.type == N.CONFIG then
          local c2 = decode_config(h, w)
          if c2 and c2.session_id ~= session then return { config = c2 } end
        end
        h = hello:recv(0)
      end
      if clock.mono() >= t_ready then
        if TRACE then TRACE(id, "no θ for 2 s: READY again") end
        net:send(nil, N.READY, w, -1, cfg.d)
        if hello then hello:send(nil, N.HELLO, w, -1, Collusion.PROTOCOL) end
        t_ready = clock.mono() + 2
      end
    end
  end
  while true do
    -- (the next θ is put together straight in theta where the transport can: agt.net's expect)
    if net.expect then net:expect(nil, N.THETA, N.ANY_STEP, theta.raw, cfg.d * 4) end
    msg = next_theta()
    if net.expect then net:unexpect(nil) end
    if not msg then
      say(id, "nothing from the PS for --idle-timeout %g s: stopping", o["idle-timeout"])
      return finish(1)
    end
    if msg.config then
      cfg = msg.config
      say(id, "the PS is back with a new session (%s): continuing from its step %s", cfg.session, tostring(cfg.step))
      if not configure() then return finish(1) end
      msg = nil
    end
    -- Only the newest θ waiting is worth computing (after a stall, older ones are stale); a
    -- message's bytes live until the next recv, so each θ is copied out before looking further.
    local step, byzantine, want_state
    local bytes = cfg.d * 4
    local t0 = clock.mono()
    while msg do
      if msg.type == N.BYE then break end
      if msg.type ~= N.THETA then -- nothing else is expected from the PS now
      elseif msg.len ~= bytes then
        say(id, "a θ of %d bytes from the PS, expected %d: ignored", msg.len, bytes)
      else
        if msg.data ~= theta.raw then ffi.copy(theta.raw, msg.data, bytes) end
        -- aux: 1 Byzantine at this step, + 2 the PS wants the attack's state after it
        step, byzantine, want_state = msg.step, msg.aux % 2 == 1, msg.aux >= 2
      end
      msg = net:recv(0)
      if TRACE and msg then TRACE(id, "recv %s step %d (waiting)", N.TYPE_NAMES[msg.type] or msg.type, msg.step) end
    end
    if msg and msg.type == N.BYE then
      say(id, "the PS ended the run after %d steps", steps)
      if udp then say(id, "UDP: %d chunk(s) left out by the test drop rate", udp_dropped + udp.dropped) end
      return finish(0)
    end
    -- The row (in row) and its loss to the PS: as datagrams with --UDP (the GRAD then carries
    -- the loss only), else in the GRAD.
    local function send_row(loss)
      if udp then
        udp.dropped = udp.dropped + udp:send(step, row.raw, udp.drop, udp.drop_seed)
        net:send(nil, N.GRAD, w, step, loss)
      elseif net:send(nil, N.GRAD, w, step, loss, row.raw, bytes) ~= true then
        say(id, "step %d: the PS took no message for %g s (its queue full): this row is lost", step,
            N.SEND_WAIT_S)
      end
    end
    -- The attack's state after this step's attack, when the PS asks (it checkpoints at the
    -- end of the step): after the row, and after the coordinator's attack for its partners.
    local function send_attack_state()
      if not (want_state and col) then return end
      for _, p in ipairs(col:state_parts()) do net:send(nil, N.STATE, w, step, p.aux, p.s) end
      if TRACE then TRACE(id, "sent the attack's state of step %d", step) end
    end
    local again = step and answered and answered.step == step
    if again then
      -- θ of the step this worker answered last, sent again (the PS took a READY of ours for
      -- a lost θ or row): the same STATE and row again (row still holds it), not a second
      -- gradient, so the streams, the momentum and an attack move once per step as in a
      -- local run.
      net:send(nil, N.STATE, w, step, 0, answered.state)
      send_row(answered.loss)
      send_attack_state()
      if TRACE then TRACE(id, "sent STATE and GRAD of step %d again", step) end
    elseif step then
      local loss = worker:gradient(theta, row)
      if momentum then row:copy(Momentum.accumulate(momentum, row, cfg.momentum)) end
      -- The streams after the honest gradient, Byzantine or not: a PS restarted from its
      -- checkpoint gives them back, and the stream goes on as in a run never stopped.
      local state = worker:state()
      answered = { step = step, state = state, loss = loss }
      net:send(nil, N.STATE, w, step, 0, state)
      if byzantine and not col then
        say(id, "the PS marks this worker Byzantine at step %d but sent it no attack: sending its gradient", step)
      elseif byzantine then
        col:row(step, row, t0)
      end
      send_row(loss)
      if TRACE then TRACE(id, "sent STATE and GRAD of step %d", step) end
      if col and not byzantine then col:serve(step, t0) end
      send_attack_state()
      steps = steps + 1
    end
  end
end

return function(args)
  local ok, o, what = pcall(parse, args or {})
  if ok and what == "help" then
    io.stdout:write(USAGE, "\n")
    return 0
  end
  if not ok then
    io.stderr:write("agt worker: ", tostring(o), "\n")
    return 2
  end
  local function guarded()
    local okr, code = pcall(run, o)
    if not okr then
      io.stderr:write("agt worker: ", tostring(code), "\n")
      return 1
    end
    return code
  end
  if not o.MPI then return guarded() end
  local MPI = require("agt.mpi")
  local avail, why = MPI.available()
  if not avail then
    io.stderr:write("agt worker: --MPI: ", why, "\n")
    return 2
  end
  return MPI.run(function(rank)
    if rank == 0 then
      io.stderr:write("agt worker: --MPI: rank 0 is the parameter server ('agt run --MPI ...'), not a worker\n")
      return 2
    end
    return guarded()
  end)
end
