-- agt deploy — starts a distributed run's processes over SSH and streams their output back.
--
--   agt deploy --cluster CLUSTER --deploy --id ps:0 --runner "<agt run flags>"
--
-- AggregaThor's deploy.py, for agt: with --deploy, every node of the cluster but the local one
-- (--id, default ps:0) is started over SSH — `ssh HOST AGT worker --server CLUSTER --id JOB:I …`
-- (the same agt path and the same data on every host) —, and the local node here unless
-- --omit: the PS is `agt run --server CLUSTER <the --runner flags>`. Every line a process prints
-- comes back prefixed with its node, "[workers:3] …", on this command's stdout or stderr as the
-- process wrote it. The run ends when the PS ends; the workers then stop (they are told by the
-- PS), and any still running after --grace seconds are stopped. Ctrl-C or SIGTERM stops the PS
-- first (it saves its checkpoint), then the workers. A remote process ends when its SSH
-- session does (the remote side watches its standard input), and is killed through the pid
-- file it leaves in /tmp if the session does not end. Exit status: the PS's; 130 when
-- interrupted; 1 when a host cannot be reached or has no agt (said so, naming the node).
local cjson = require("cjson.safe")
local P = require("agt.proc")
local CL = require("agt.cluster")
local host = require("agt.host")
local clock = require("agt.clock")
local ffi = require("ffi")

local USAGE = [[
Usage: agt deploy --cluster CLUSTER [--deploy] [--id JOB:I] [--omit] [--runner "FLAGS"] [flags]

Starts the processes of a distributed run (docs/distributed.md, "agt deploy").
  --cluster CLUSTER      the cluster: JSON {"ps": ["host:port"], "workers": [...]}, a file
                         holding it, or G5k (the nodes of $OAR_FILE_NODES)
  --deploy               start every node but the local one over SSH (without it, only the
                         local node runs here)
  --id JOB:I             the local node (default: ps:0)
  --omit                 do not start the local node (e.g. the PS is started by hand)
  --runner "FLAGS"       the PS's 'agt run' flags, without --server (added); --auth, --keys,
                         --ps-job-name and --wk-job-name found there go to the workers too
  --worker-args "FLAGS"  more 'agt worker' flags (e.g. "--idle-timeout 600")
  --nice N               run the processes under nice -n N (all of them, or --nice-only's)
  --nice-only LIST       JOB or JOB:I entries, comma-separated: the processes --nice applies to
  --remote-agt PATH      agt's path on the other hosts (default: this agt's absolute path)
  --copy-keys            copy each worker's keys (ps-0.pub, <job>-<i>.pub and .secret of the
                         runner's --keys DIR) to the same DIR on its host first
  --grace S              seconds the workers have to end after the PS (default: 10)
SSH (BatchMode=yes: never a prompt; keys or an agent):
  --ssh "CMD"            the ssh command (default: $AGT_SSH or ssh; e.g. oarsh on Grid'5000)
  --ssh-port N  --ssh-user USER  --ssh-identity FILE
  --ssh-option OPT       an ssh -o option, repeatable (also the words of $AGT_SSH_OPTS)
  --accept-new-host-keys accept the key of a host seen for the first time (default: a host
                         must already be in known_hosts)
Exit status: the PS's; 130 when interrupted; 1 on a failure to start; 2 on bad flags.]]

local VALUE = { cluster = true, id = true, runner = true, ["worker-args"] = true, nice = true,
                ["nice-only"] = true, ["remote-agt"] = true, grace = true, ssh = true, ["ssh-port"] = true,
                ["ssh-user"] = true, ["ssh-identity"] = true, ["ssh-option"] = true }
local SWITCH = { deploy = true, omit = true, ["copy-keys"] = true, ["accept-new-host-keys"] = true }

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- The words of a shell command line (quotes and backslashes as sh reads them; no expansion):
-- only to find flags in --runner, which itself is handed to sh.
local function words(s, what)
  local out, cur, i, n, inword = {}, {}, 1, #s, false
  while i <= n do
    local ch = s:sub(i, i)
    if ch:match("%s") then
      if inword then out[#out + 1] = table.concat(cur); cur = {}; inword = false end
    elseif ch == "'" then
      local j = s:find("'", i + 1, true)
      if not j then error(string.format("%s: an unclosed ' in \"%s\"", what, s), 0) end
      cur[#cur + 1] = s:sub(i + 1, j - 1)
      inword, i = true, j
    elseif ch == '"' then
      local j = i + 1
      while true do
        local c2 = s:sub(j, j)
        if c2 == "" then error(string.format("%s: an unclosed \" in \"%s\"", what, s), 0) end
        if c2 == '"' then break end
        if c2 == "\\" and s:sub(j + 1, j + 1):match('[\\"$`]') then j = j + 1; c2 = s:sub(j, j) end
        cur[#cur + 1] = c2
        j = j + 1
      end
      inword, i = true, j
    elseif ch == "\\" then
      cur[#cur + 1] = s:sub(i + 1, i + 1)
      inword, i = true, i + 1
    else
      cur[#cur + 1] = ch
      inword = true
    end
    i = i + 1
  end
  if inword then out[#out + 1] = table.concat(cur) end
  return out
end

-- The value of --name in a word list (--name V or --name=V), or nil.
local function flag_value(list, name)
  local v
  for k, w in ipairs(list) do
    if w == "--" .. name then v = list[k + 1]
    else
      local x = w:match("^%-%-" .. name:gsub("%-", "%%-") .. "=(.*)$")
      if x then v = x end
    end
  end
  return v
end

local function parse(args)
  local o = { ["ssh-option"] = {}, grace = "10" }
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--help" or a == "-h" then return nil, "help" end
    local name, val = a:match("^%-%-([^=]+)=(.*)$")
    if not name then name = a:match("^%-%-(.+)$") end
    if not name or not (VALUE[name] or SWITCH[name]) then
      error(string.format("unknown argument '%s' (see agt deploy --help)", a), 0)
    end
    if SWITCH[name] then
      if val then error(string.format("--%s: takes no value", name), 0) end
      o[name] = true
    else
      if not val then
        i = i + 1
        val = args[i]
        if val == nil then error(string.format("--%s: expects a value", name), 0) end
      end
      if name == "ssh-option" then table.insert(o[name], val) else o[name] = val end
    end
    i = i + 1
  end
  if not o.cluster then error("--cluster: is required (JSON, a file, or G5k)", 0) end
  o.id = o.id or "ps:0"
  o.grace = tonumber(o.grace)
  if not o.grace or o.grace < 0 then error("--grace: expects seconds >= 0", 0) end
  if o.nice then
    local n = tonumber(o.nice)
    if not n or n ~= math.floor(n) or n < -20 or n > 19 then
      error(string.format("--nice: expects an integer in -20..19 (19 the lowest priority), got '%s'", o.nice), 0)
    end
  elseif o["nice-only"] then
    error("--nice-only: needs --nice N", 0)
  end
  if o["ssh-port"] then
    local p = tonumber(o["ssh-port"])
    if not p or p ~= math.floor(p) or p < 1 or p > 65535 then
      error(string.format("--ssh-port: expects a port in 1..65535, got '%s'", o["ssh-port"]), 0)
    end
  end
  o.runner_words = words(o.runner or "", "--runner")
  for _, w in ipairs(o.runner_words) do
    local f = w:match("^%-%-([%w-]+)")
    if f == "server" or f == "client" or f == "MPI" then
      error(string.format("--runner: leave --%s out (agt deploy adds --server CLUSTER)", f), 0)
    end
  end
  words(o["worker-args"] or "", "--worker-args")
  return o
end

-- This agt's absolute path (what the other hosts are expected to have too).
local function self_path()
  pcall(ffi.cdef, "long readlink(const char *path, char *buf, size_t n);")
  local buf = ffi.new("char[4096]")
  local k = tonumber(ffi.C.readlink("/proc/self/exe", buf, 4095))
  if k and k > 0 then return ffi.string(buf, k) end
  return host.root .. "/agt"
end

local function cwd_path()
  pcall(ffi.cdef, "char *getcwd(char *buf, size_t size);")
  local buf = ffi.new("char[4096]")
  local p = ffi.C.getcwd(buf, 4096)
  return p ~= nil and ffi.string(p) or (os.getenv("PWD") or ".")
end

local function token()
  local fh = io.open("/dev/urandom", "rb")
  local b = fh and fh:read(6) or tostring(clock.mono())
  if fh then fh:close() end
  return (b:gsub(".", function(c) return string.format("%02x", c:byte()) end)):sub(1, 12)
end

-- The ssh argv up to the host (the caller appends host and command).
local function ssh_argv(o)
  local argv = words(o.ssh or os.getenv("AGT_SSH") or "ssh", "--ssh")
  if #argv == 0 then error("--ssh: empty", 0) end
  -- ssh keeps the first value given for an option: the user's come first.
  for _, opt in ipairs(o["ssh-option"]) do argv[#argv + 1] = "-o"; argv[#argv + 1] = opt end
  for _, w in ipairs(words(os.getenv("AGT_SSH_OPTS") or "", "$AGT_SSH_OPTS")) do argv[#argv + 1] = w end
  if o["ssh-port"] then argv[#argv + 1] = "-p"; argv[#argv + 1] = o["ssh-port"] end
  if o["ssh-user"] then argv[#argv + 1] = "-l"; argv[#argv + 1] = o["ssh-user"] end
  if o["ssh-identity"] then argv[#argv + 1] = "-i"; argv[#argv + 1] = o["ssh-identity"] end
  for _, opt in ipairs({ "BatchMode=yes", "ConnectTimeout=10", "ServerAliveInterval=5", "ServerAliveCountMax=6",
                         o["accept-new-host-keys"] and "StrictHostKeyChecking=accept-new" or nil }) do
    argv[#argv + 1] = "-o"
    argv[#argv + 1] = opt
  end
  argv[#argv + 1] = "-T"
  return argv
end

-- The remote side of a node: runs the command in the background with its pid in `pidfile`,
-- and kills it (SIGTERM) when this session's standard input ends — when agt deploy closes it,
-- exits or dies, or the connection drops — or when sshd signals the shell. Its exit status is
-- the command's (127: the command was not found).
local function remote_script(cmd, pidfile, cwd)
  return table.concat({
    "cd " .. q(cwd) .. " 2>/dev/null",
    "exec 3<&0",
    cmd .. " </dev/null 3<&- &",
    "p=$!",
    "echo $p > " .. q(pidfile),
    "trap 'kill $p 2>/dev/null' HUP INT TERM",
    "(cat <&3 >/dev/null 2>&1; kill $p 2>/dev/null) >/dev/null 2>&1 &",
    "w=$!",
    "exec 3<&-",
    "wait $p; rc=$?",
    "while kill -0 $p 2>/dev/null; do wait $p; rc=$?; done",
    "kill $w 2>/dev/null",
    "rm -f " .. q(pidfile),
    "exit $rc",
  }, "\n")
end

local function say(fmt, ...) io.stderr:write("agt deploy: ", string.format(fmt, ...), "\n"); io.stderr:flush() end

local function run(o)
  local jobs = { ps = flag_value(o.runner_words, "ps-job-name") or "ps",
                 workers = flag_value(o.runner_words, "wk-job-name") or "workers" }
  local c = CL.load(o.cluster, jobs)
  local nodes = { { job = c.ps_job, i = 0, addr = c.ps, ps = true } }
  for i, a in ipairs(c.workers) do nodes[#nodes + 1] = { job = c.wk_job, i = i - 1, addr = a } end
  local lj, li = o.id:match("^([^:]+):(%d+)$")
  local local_node
  for _, nd in ipairs(nodes) do
    nd.name = nd.job .. ":" .. nd.i
    if nd.job == lj and nd.i == tonumber(li) then local_node = nd end
  end
  if not local_node then
    error(string.format("--id: '%s' is not a node of the cluster (%s:0, %s:0..%s:%d)", o.id, c.ps_job,
                        c.wk_job, c.wk_job, #c.workers - 1), 0)
  end
  local ps_node = nodes[1]
  local starts_ps = (ps_node == local_node and not o.omit) or (ps_node ~= local_node and o.deploy)
  if starts_ps and not o.runner then
    error("--runner: is required to start the PS (its 'agt run' flags, e.g. --runner \"--experiment "
          .. "fashion-mnist --nb-workers " .. #c.workers .. " --max-step 1000\")", 0)
  end
  if not o.deploy and o.omit then error("--omit without --deploy: nothing to start", 0) end

  local nice_set
  if o["nice-only"] then
    nice_set = {}
    for e in o["nice-only"]:gmatch("[^,%s]+") do nice_set[e] = true end
  end
  local function niced(nd)
    return o.nice and (not nice_set or nice_set[nd.job] or nice_set[nd.name]) and ("nice -n " .. o.nice .. " ") or ""
  end

  local agt_local = self_path()
  local agt_remote = o["remote-agt"] or agt_local
  local cluster_inline = CL.json(c)
  local auth = flag_value(o.runner_words, "auth")
  local keys = flag_value(o.runner_words, "keys")
  local worker_flags = {}
  for _, f in ipairs({ { "ps-job-name", jobs.ps ~= "ps" and jobs.ps }, { "wk-job-name", jobs.workers ~= "workers" and jobs.workers },
                       { "auth", auth }, { "keys", keys } }) do
    if f[2] then worker_flags[#worker_flags + 1] = "--" .. f[1] .. " " .. q(f[2]) end
  end
  if o["worker-args"] then worker_flags[#worker_flags + 1] = o["worker-args"] end

  -- The shell command of a node, with agt at `agt` and the cluster as `cluster`.
  local function command(nd, agt, cluster)
    if nd.ps then
      return niced(nd) .. q(agt) .. " run --server " .. q(cluster) .. " " .. o.runner
    end
    return niced(nd) .. q(agt) .. " worker --server " .. q(cluster) .. " --id " .. q(nd.name)
      .. (#worker_flags > 0 and (" " .. table.concat(worker_flags, " ")) or "")
  end

  local ssh = ssh_argv(o)
  local tok = token()
  local cwd = cwd_path()
  local procs, by_proc = {}, {}
  local function on_line(p, which, line)
    local nd = by_proc[p]
    local tag = nd and ("[" .. nd.name .. "] ") or ""
    if nd then nd.last_err = which == "err" and line or nd.last_err end
    local f = which == "out" and io.stdout or io.stderr
    if line:sub(1, #tag) == tag then tag = "" end -- agt worker names itself already
    f:write(tag, line, "\n")
    f:flush()
  end
  local function pump(ms) P.pump(procs, ms, on_line) end
  local function ssh_to(nd, script, stdin)
    local argv = {}
    for k, w in ipairs(ssh) do argv[k] = w end
    argv[#argv + 1] = CL.host(nd.addr)
    argv[#argv + 1] = script
    return P.spawn(argv, { stdin = stdin or "pipe", group = true })
  end

  -- Waits until every process of list is done or `secs` have passed; true when all are.
  local function wait_all(list, secs)
    local t_end = clock.mono() + secs
    while true do
      local all = true
      for _, p in ipairs(list) do if not p:done() then all = false end end
      if all then return true end
      if clock.mono() >= t_end then return false end
      pump(100)
    end
  end

  -- 0. Keys to the worker hosts.
  if o["copy-keys"] and o.deploy then
    if not keys then error("--copy-keys: the runner has no --keys DIR (with --auth curve, the default)", 0) end
    if local_node ~= ps_node then error("--copy-keys: only from the PS's host (--id " .. c.ps_job .. ":0)", 0) end
    local copies = {}
    for _, nd in ipairs(nodes) do
      if nd ~= local_node then
        local files = { CL.key_path(keys, c.ps_job, 0, "pub"), CL.key_path(keys, c.wk_job, nd.i, "pub"),
                        CL.key_path(keys, c.wk_job, nd.i, "secret") }
        local lines = {}
        for k, f in ipairs(files) do lines[k] = CL.read_key(f) end
        -- in the directory the worker will run in (a relative DIR is found there)
        local script = string.format("cd %s 2>/dev/null; umask 077; mkdir -p %s && chmod 700 %s && IFS= read -r a && "
          .. "IFS= read -r b && IFS= read -r c && printf '%%s\\n' \"$a\" > %s && printf '%%s\\n' \"$b\" > %s && "
          .. "printf '%%s\\n' \"$c\" > %s && chmod 600 %s",
          q(cwd), q(keys), q(keys), q(files[1]), q(files[2]), q(files[3]), q(files[3]))
        local p, err = ssh_to(nd, script)
        if not p then error(err, 0) end
        by_proc[p] = nd
        procs[#procs + 1] = p
        p:write(table.concat(lines, "\n") .. "\n")
        p:close_stdin()
        copies[#copies + 1] = p
      end
    end
    wait_all(copies, 60)
    for _, p in ipairs(copies) do
      if not p:done() then p:signal(P.SIGKILL); p:reap(true); p:abandon_streams(on_line) end
      if p.code ~= 0 then
        error(string.format("--copy-keys: copying the keys of %s to %s failed (exit %s)", by_proc[p].name,
                            CL.host(by_proc[p].addr), tostring(p.code)), 0)
      end
    end
    procs = {}
    say("copied the keys of %d worker(s) to %s on their hosts", #copies, keys)
  end

  -- 1. The remote nodes, then the local one.
  host.sigint_raises(false)
  local started = {}
  local function start(nd)
    local p, err
    if nd == local_node then
      p, err = P.spawn({ "/bin/sh", "-c", "exec " .. command(nd, agt_local, o.cluster) }, { group = true })
    else
      nd.pidfile = string.format("/tmp/agt-deploy.%s.%s-%d.pid", tok, nd.job, nd.i)
      p, err = ssh_to(nd, remote_script(command(nd, agt_remote, cluster_inline), nd.pidfile, cwd))
      nd.remote = true
    end
    if not p then error(string.format("%s: %s", nd.name, err), 0) end
    nd.proc = p
    by_proc[p] = nd
    procs[#procs + 1] = p
    started[#started + 1] = nd
  end
  if o.deploy then
    for _, nd in ipairs(nodes) do
      if nd ~= local_node and (not nd.ps or starts_ps) then start(nd) end
    end
  end
  if not o.omit then start(local_node) end
  say("started %d process(es)%s: %s", #started, o.deploy and (" over " .. ssh[1]) or "",
      table.concat((function() local t = {} for k, nd in ipairs(started) do t[k] = nd.name end return t end)(), ", "))

  -- 2. Until the PS ends (or, without it, every worker), an unreachable host, or a signal.
  local failure, interrupted
  local reported = {}
  local function why(nd)
    local h = CL.host(nd.addr)
    if nd.proc.code == 255 then
      local hint = "see --ssh-port, --ssh-user, --ssh-identity"
      if nd.last_err and nd.last_err:find("Host key verification failed", 1, true) then
        hint = "the host's key is not in known_hosts: add it (ssh-keyscan), or give --accept-new-host-keys"
      end
      return string.format("ssh to %s failed (exit 255: host unreachable, sshd not listening, the key refused or "
        .. "the host's key unknown; %s)%s", h, hint, nd.last_err and (": " .. nd.last_err) or "")
    elseif nd.proc.code == 127 then
      return string.format("no agt at %s on %s (exit 127: command not found): install agt there at the same path, "
        .. "or give --remote-agt PATH", agt_remote, h)
    end
  end
  while true do
    pump(200)
    if host.interrupted() then interrupted = true; break end
    local ps_done, all_done = ps_node.proc == nil or ps_node.proc:done(), true
    for _, nd in ipairs(started) do
      if nd.proc:done() then
        if not reported[nd] then
          reported[nd] = true
          local w = nd.remote and why(nd)
          if w then failure = string.format("[%s] %s", nd.name, w)
          elseif nd.proc.code ~= 0 and not nd.ps then say("[%s] exited with status %d", nd.name, nd.proc.code) end
        end
      else
        all_done = false
      end
    end
    if failure then break end
    if ps_node.proc and ps_done then break end
    if all_done then break end
  end
  if failure then say("%s", failure) end
  if interrupted then say("interrupted: stopping the run") end

  -- 3. Stop what still runs: the PS first (SIGTERM: it stops cleanly after its step and ends the
  -- workers), then the workers that did not end by themselves.
  local function running(nd) return nd.proc and not nd.proc:done() end
  local function close_remote(list)
    for _, nd in ipairs(list) do nd.proc:close_stdin() end
  end
  local ps = ps_node.proc
  if ps and not ps:done() then
    if ps_node.remote then close_remote({ ps_node }) else ps:signal(P.SIGTERM) end
    if not wait_all({ ps }, 60) then ps:signal(P.SIGKILL) end
  end
  local rest = {}
  for _, nd in ipairs(started) do if running(nd) then rest[#rest + 1] = nd end end
  if #rest > 0 then
    local list = {}
    for k, nd in ipairs(rest) do list[k] = nd.proc end
    -- After a PS that ended well, the workers have been told and end by themselves.
    if not (failure or interrupted) and ps and ps.code == 0 then wait_all(list, o.grace) end
    local left = {}
    for _, nd in ipairs(rest) do if running(nd) then left[#left + 1] = nd end end
    if #left > 0 then
      if not (failure or interrupted) then
        say("stopping %d worker(s) still running%s", #left,
            (ps and ps.code == 0) and string.format(" after --grace %g s", o.grace) or "")
      end
      close_remote(left)
      local lp = {}
      for k, nd in ipairs(left) do lp[k] = nd.proc end
      if not wait_all(lp, 5) then
        -- The session did not end: kill through the pid file, then end the ssh client.
        local kills = {}
        for _, nd in ipairs(left) do
          if running(nd) and nd.remote then
            local p = ssh_to(nd, string.format("kill $(cat %s 2>/dev/null) 2>/dev/null; rm -f %s", q(nd.pidfile), q(nd.pidfile)), "null")
            if p then kills[#kills + 1] = p end
          end
        end
        local saved = procs
        procs = kills
        wait_all(kills, 15)
        procs = saved
        for _, p in ipairs(kills) do if not p:done() then p:signal(P.SIGKILL); p:reap(true) end; p:abandon_streams() end
        wait_all(lp, 3)
        for _, nd in ipairs(left) do
          if running(nd) then
            say("[%s] the ssh session to %s did not end, even after a kill through %s: ssh stopped here "
                .. "(check that host for a process left)", nd.name, CL.host(nd.addr), nd.pidfile)
            nd.proc:signal(P.SIGKILL)
          end
        end
      end
    end
  end
  for _, nd in ipairs(started) do
    nd.proc:close_stdin()
    if not nd.proc:reap(false) then nd.proc:signal(P.SIGKILL); nd.proc:reap(true) end
    nd.proc:abandon_streams(on_line)
  end
  host.sigint_raises(true)
  if failure then return 1 end
  if interrupted then return 130 end
  if ps then return ps.code end
  for _, nd in ipairs(started) do if nd.proc.code ~= 0 then return 1 end end
  return 0
end

return function(args)
  local ok, o, what = pcall(parse, args or {})
  if ok and what == "help" then
    io.stdout:write(USAGE, "\n")
    return 0
  end
  if not ok then
    io.stderr:write("agt deploy: ", tostring(o), "\n")
    return 2
  end
  local okr, code = pcall(run, o)
  if not okr then
    host.sigint_raises(true)
    io.stderr:write("agt deploy: ", tostring(code), "\n")
    return 1
  end
  return code
end
