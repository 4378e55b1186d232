-- agt worker — one worker of a distributed run (the PS is `agt run --server CLUSTER ...`).
--
--   agt worker --server CLUSTER --id workers:3 --auth none
--
-- Connects to the PS of the cluster and says who it is; the PS answers with the run (the
-- experiment and its arguments, the seed, n, this worker's shard and poison, the model size, the
-- session id). The worker loads its data locally, then each step takes θ and sends back its
-- gradient row and loss — what the local source (agt.session.workers) computes for that row, bit
-- for bit. It stops when the PS says the run is over (exit 0), or when nothing has come from
-- the PS for --idle-timeout seconds (exit 1). If several θ are waiting (after a stall), only
-- the newest is computed. See agt.session.remote for the protocol.
local ffi = require("ffi")
local N = require("agt.net")
local CL = require("agt.cluster")
local E = require("agt.experiments")
local T = require("agt.tensor")
local clock = require("agt.clock")
local cjson = require("cjson.safe")

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
  --idle-timeout S       seconds without a word from the PS before giving up (default: 120)
Exit status: 0 when the PS ends the run, 1 on a failure, 2 on bad flags.]]

local FLAGS = { server = true, id = true, ["ps-job-name"] = true, ["wk-job-name"] = true,
                auth = true, keys = true, ["connect-timeout"] = true, ["idle-timeout"] = true }

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
    if not val then
      i = i + 1
      val = args[i]
      if val == nil then error(string.format("--%s: expects a value", name), 0) end
    end
    o[name] = val
    i = i + 1
  end
  if not o.server then error("--server: is required (the cluster)", 0) end
  if not o.id then error("--id: is required (e.g. --id workers:0)", 0) end
  for _, k in ipairs({ "connect-timeout", "idle-timeout" }) do
    local x = tonumber(o[k])
    if not x or x <= 0 then error(string.format("--%s: expects seconds > 0, got '%s'", k, o[k]), 0) end
    o[k] = x
  end
  if o.auth ~= "none" and o.auth ~= "curve" then error("--auth: expects curve or none, got '" .. o.auth .. "'", 0) end
  if o.auth == "curve" and not o.keys then
    error("--keys: is required with --auth curve (the default); or give --auth none on a trusted network", 0)
  end
  return o
end

local function say(id, fmt, ...)
  io.stderr:write(string.format("[%s] " .. fmt .. "\n", id, ...))
end

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

local function run(o)
  local c = CL.load(o.server, { ps = o["ps-job-name"], workers = o["wk-job-name"] })
  local w = CL.parse_id(o.id, c, c.wk_job)
  local id = o.id
  local endpoint = CL.endpoint(c.ps, false)
  local curve
  if o.auth == "curve" then
    curve = { server = CL.read_key(CL.key_path(o.keys, c.ps_job, 0, "pub")),
              public = CL.read_key(CL.key_path(o.keys, c.wk_job, w, "pub")),
              secret = CL.read_key(CL.key_path(o.keys, c.wk_job, w, "secret")) }
  else
    say(id, "--auth none: not authenticated, not encrypted (a trusted network only)")
  end

  -- 1. Who am I -> the run (on a socket capped at 16 MiB: the run's description is small).
  local hello = N.client(endpoint, 16 * 2 ^ 20, curve)
  hello:send(nil, N.HELLO, w, -1, 0)
  local msg = wait_for(hello, o["connect-timeout"], { [N.CONFIG] = true, [N.BYE] = true })
  if not msg then
    hello:close()
    say(id, "no answer from the PS at %s within --connect-timeout %g s", endpoint, o["connect-timeout"])
    return 1
  end
  if msg.type == N.BYE then hello:close(); return 0 end
  local cfg = cjson.decode(msg:text())
  hello:close()
  local session = type(cfg) == "table" and type(cfg.session) == "string" and tonumber(cfg.session, 16)
  if not session or cfg.worker ~= w or type(cfg.d) ~= "number" then
    say(id, "the PS sent a run description this agt does not understand")
    return 1
  end

  -- 2. The data and the model, then READY on the step socket, capped at one θ.
  local net = N.client(endpoint, math.max(cfg.d * 4, 65536), curve)
  net:set_session(session)
  local ok, worker = pcall(function()
    local exp = E.load(cfg.experiment, cfg.experiment_args, { seed = cfg.seed, n = cfg.n })
    if exp.d ~= cfg.d then
      error(string.format("the experiment has %d parameters here, %d at the PS (another version of agt "
        .. "or of the experiment?)", exp.d, cfg.d), 0)
    end
    exp:shards(cfg.n) -- the data and the shards now, not in the first step's time
    return exp:worker(w + 1, { seed = cfg.seed, l1 = cfg.l1, l2 = cfg.l2,
                               poison = cfg.poison ~= cjson.null and cfg.poison or nil })
  end)
  if not ok then
    local why = tostring(worker)
    say(id, "cannot take part: %s", why)
    net:send(nil, N.ERROR, w, -1, 0, why)
    net:close()
    return 1
  end
  local d, bytes = cfg.d, cfg.d * 4
  local theta, row = T.new({ d }), T.new({ d })
  net:send(nil, N.READY, w, -1, d)
  say(id, "ready: %s, d = %d, session %s", tostring(cfg.experiment), d, cfg.session)

  -- 3. Steps until BYE. Silence from the PS for a while says READY again: if the PS dropped
  -- this connection (a stall past its heartbeat, a network cut), ZeroMQ has reconnected with
  -- a new one that the PS does not know until it hears from it; it then sends the step's θ.
  local steps = 0
  local function next_theta()
    local t_end, t_ready = clock.mono() + o["idle-timeout"], clock.mono() + 2
    while clock.mono() < t_end do
      local m = net:recv(500)
      if m and (m.type == N.THETA or m.type == N.BYE) then return m end
      if clock.mono() >= t_ready then
        net:send(nil, N.READY, w, -1, d)
        t_ready = clock.mono() + 2
      end
    end
  end
  while true do
    msg = next_theta()
    if not msg then
      say(id, "nothing from the PS for --idle-timeout %g s: stopping", o["idle-timeout"])
      net:close()
      return 1
    end
    -- Only the newest θ waiting is worth computing (after a stall, older ones are stale); a
    -- message's bytes live until the next recv, so each θ is copied out before looking further.
    local step
    while msg do
      if msg.type == N.BYE then break end
      if msg.type ~= N.THETA then -- nothing else is expected from the PS now
      elseif msg.len ~= bytes then
        say(id, "a θ of %d bytes from the PS, expected %d: ignored", msg.len, bytes)
      else
        ffi.copy(theta.raw, msg.data, bytes)
        step = msg.step
      end
      msg = net:recv(0)
    end
    if msg and msg.type == N.BYE then
      say(id, "the PS ended the run after %d steps", steps)
      net:close()
      return 0
    end
    if step then
      local loss = worker:gradient(theta, row)
      net:send(nil, N.GRAD, w, step, loss, row.raw, bytes)
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
  local okr, code = pcall(run, o)
  if not okr then
    io.stderr:write("agt worker: ", tostring(code), "\n")
    return 1
  end
  return code
end
