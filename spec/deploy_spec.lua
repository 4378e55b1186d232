-- Specs of `agt deploy` against a real sshd (Debian's openssh-server, installed by make setup)
-- that the spec starts itself: in the foreground (-D), on a random port of 127.0.0.1, .2 and .3,
-- with a host key and a user key it generates and an authorized_keys file of its own. The PS
-- runs here, the 3 workers over SSH ("remote" hosts 127.0.0.1..3), fashion-mnist (offline).
-- Deploy runs with PATH=/usr/bin:/bin, as CI may. Processes are found by the cluster's unique
-- PS port in their command lines, and stopped by pid.
local H = require("helpers")
local P = require("agt.proc")
local ffi = require("ffi")

local SSHD, KEYGEN = "/usr/sbin/sshd", "/usr/bin/ssh-keygen"
local q = H.shell_quote

local function exists(path) return os.execute("test -x " .. q(path)) == 0 end

-- The pids whose command line (its words separated by NUL bytes) contains every one of the
-- strings: "\0worker\0--server\0" is an agt worker itself, not the shell or ssh that started it.
local function pids_with(...)
  local want, out = { ... }, {}
  for pid in H.sh("ls /proc"):gmatch("%d+") do
    local cmd = H.read("/proc/" .. pid .. "/cmdline")
    if cmd then
      local all = true
      for _, w in ipairs(want) do if not cmd:find(w, 1, true) then all = false end end
      if all then out[#out + 1] = tonumber(pid) end
    end
  end
  return out
end

-- Waits up to secs for fn() to be true.
local function eventually(secs, fn)
  local t_end = os.time() + secs
  repeat
    if fn() then return true end
    os.execute("sleep 0.2")
  until os.time() > t_end
  return fn()
end

-- Runs argv with the output collected; returns the process and its output tables.
local function start(argv)
  local p = assert(P.spawn(argv, { group = true }))
  local out = { out = {}, err = {} }
  return p, out
end
local function pump_until(p, out, secs, fn)
  local t_end = os.time() + secs
  while not p:done() and os.time() <= t_end do
    P.pump({ p }, 200, function(_, which, line) table.insert(out[which], line) end)
    if fn and fn() then return true end
  end
  return p:done()
end
local function text(lines) return table.concat(lines, "\n") end

local have = exists(SSHD) and exists(KEYGEN) and exists("/usr/bin/ssh")

describe("agt deploy over SSH (a real sshd on 127.0.0.1..3)", function()
  local dir, sshd, port, base, cluster, ssh_flags, user
  local AGT = H.agt

  setup(function()
    if not have then return end
    dir = H.tmpdir()
    user = H.sh("id -un"):match("%S+")
    if H.sh("id -u"):match("%d+") == "0" then os.execute("mkdir -p /run/sshd && chmod 755 /run/sshd") end
    assert(os.execute(string.format("%s -q -t ed25519 -N '' -f %s && %s -q -t ed25519 -N '' -f %s",
      KEYGEN, q(dir .. "/host_key"), KEYGEN, q(dir .. "/user_key"))) == 0, "ssh-keygen failed")
    os.execute(string.format("cp %s %s", q(dir .. "/user_key.pub"), q(dir .. "/authorized_keys")))
    local hostpub = H.read(dir .. "/host_key.pub"):gsub("%s+$", "")
    local seed = (tonumber(H.sh("echo $$")) or 0) * 7919 + os.time()
    for attempt = 1, 5 do
      port = 42000 + (seed + attempt * 131) % 8000
      local listen = {}
      for k = 1, 3 do listen[k] = string.format("ListenAddress 127.0.0.%d:%d", k, port) end
      H.write(dir .. "/sshd_config", table.concat({
        table.concat(listen, "\n"),
        "HostKey " .. dir .. "/host_key",
        "AuthorizedKeysFile " .. dir .. "/authorized_keys",
        "PidFile none", "StrictModes no", "UsePAM no", "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "MaxStartups 50", "LogLevel ERROR", "",
      }, "\n"))
      local known = {}
      for k = 1, 3 do known[k] = string.format("[127.0.0.%d]:%d %s", k, port, hostpub) end
      H.write(dir .. "/known_hosts", table.concat(known, "\n") .. "\n")
      sshd = assert(P.spawn({ SSHD, "-D", "-e", "-f", dir .. "/sshd_config" }, { group = true }))
      ssh_flags = { "--ssh", "ssh -F /dev/null", "--ssh-port", tostring(port), "--ssh-user", user,
                    "--ssh-identity", dir .. "/user_key", "--ssh-option", "UserKnownHostsFile=" .. dir .. "/known_hosts",
                    "--ssh-option", "StrictHostKeyChecking=yes" }
      local probe = string.format("ssh -F /dev/null -p %d -l %s -i %s -o UserKnownHostsFile=%s -o BatchMode=yes "
        .. "127.0.0.3 true 2>/dev/null", port, user, q(dir .. "/user_key"), q(dir .. "/known_hosts"))
      local up = eventually(10, function()
        P.pump({ sshd }, 0, function(_, _, line) io.stderr:write("sshd: ", line, "\n") end)
        return sshd:done() or os.execute(probe) == 0
      end)
      if up and not sshd:done() then break end
      sshd:signal(P.SIGKILL)
      sshd:reap(true)
      sshd = nil
    end
    assert(sshd, "sshd did not start (see its lines above)")
    -- The PS's and workers' ports: 4 in a row that nothing listens on now (another spec's or
    -- session's process may hold a port near sshd's).
    local function free(p)
      return not H.sh(string.format("ss -Hltn 'sport = :%d' 2>/dev/null", p)):match("%S")
    end
    for k = 0, 40 do
      base = 42000 + (port - 42000 + 100 + k * 97) % 8000
      if free(base) and free(base + 1) and free(base + 2) and free(base + 3) then break end
    end
    cluster = dir .. "/cluster.json"
    H.write(cluster, string.format('{"ps": ["127.0.0.1:%d"], "workers": ["127.0.0.1:%d", "127.0.0.2:%d", "127.0.0.3:%d"]}',
                                   base, base + 1, base + 2, base + 3))
  end)

  teardown(function()
    if sshd then sshd:signal(P.SIGTERM); sshd:reap(true) end
    for _, pid in ipairs(pids_with("127.0.0.1:" .. tostring(base) .. "\"")) do os.execute("kill -9 " .. pid) end
    if dir then os.execute("rm -rf " .. q(dir)) end
  end)

  -- After each case, pass or fail: a deploy still running is interrupted, then anything of
  -- this cluster left is killed (so that the next case finds the ports free).
  local current
  local function cleanup()
    local p = current
    current = nil
    if p and not p:done() then
      p:signal(P.SIGINT)
      pump_until(p, { out = {}, err = {} }, 30)
      if not p:done() then p:signal(P.SIGKILL); p:reap(true); p:abandon_streams() end
    end
    for _, pid in ipairs(pids_with("127.0.0.1:" .. tostring(base) .. "\"")) do os.execute("kill -9 " .. pid .. " 2>/dev/null") end
    for _, pid in ipairs(pids_with("\0run\0--server\0" .. cluster .. "\0")) do os.execute("kill -9 " .. pid .. " 2>/dev/null") end
  end

  local function deploy(runner, extra)
    local argv = { "/usr/bin/env", "PATH=/usr/bin:/bin", AGT, "deploy", "--cluster", cluster, "--deploy",
                   "--id", "ps:0", "--runner", runner }
    for _, w in ipairs(ssh_flags) do argv[#argv + 1] = w end
    for _, w in ipairs(extra or {}) do argv[#argv + 1] = w end
    finally(cleanup)
    local p, out = start(argv)
    current = p
    return p, out
  end
  local RUN = "--experiment fashion-mnist --experiment-args eval-size:200 --aggregator average --nb-workers 3 "
    .. "--seed 3 --evaluation-period -1 --checkpoint-period -1 --summary-dir - --evaluation-file - "
  local function workers_alive() return pids_with("127.0.0.1:" .. base .. "\"", "\0worker\0--server\0") end
  -- Whether each of the 3 workers said it is ready (READY sent to the PS) on deploy's stderr.
  local function all_ready(out)
    local se = text(out.err)
    for i = 0, 2 do
      if not se:find(string.format("[workers:%d] ready", i), 1, true) then return false end
    end
    return true
  end
  local function ps_alive() return pids_with("\0run\0--server\0" .. cluster .. "\0") end

  it("runs the PS here and 3 workers over ssh, each line prefixed, and the workers are gone after", function()
    if not have then return pending("openssh-server is not installed (make setup installs it)") end
    local p, out = deploy(RUN .. "--auth none --max-step 30 --step-timeout 60", { "--nice", "5" })
    pump_until(p, out, 240)
    local so, se = text(out.out), text(out.err)
    assert.equal(0, p.code, se)
    assert.truthy(se:find("agt deploy: started 4 process(es) over ssh: workers:0, workers:1, workers:2, ps:0", 1, true), se)
    assert.truthy(so:find("[ps:0] Step 30:", 1, true), so)
    assert.truthy(so:find("[ps:0] Throughput:", 1, true), so)
    assert.truthy(se:find("[ps:0] agt: warning: --auth none", 1, true), se)
    for i = 0, 2 do
      assert.truthy(se:find(string.format("[workers:%d] ready: fashion-mnist", i), 1, true), se)
      assert.truthy(se:find(string.format("[workers:%d] the PS ended the run after 30 steps", i), 1, true), se)
    end
    -- every line is some node's or deploy's own
    for _, l in ipairs(out.out) do assert.truthy(l:match("^%[ps:0%] "), l) end
    for _, l in ipairs(out.err) do assert.truthy(l:match("^%[[%w]+:%d%] ") or l:match("^agt deploy: "), l) end
    assert.is_true(eventually(10, function() return #workers_alive() == 0 end), "workers left running")
  end)

  -- The nice value of a process (field 19 of /proc/PID/stat, after the command's parenthesis).
  local function niceness(pid)
    local st = H.read("/proc/" .. pid .. "/stat") or ""
    local rest = st:match("%)%s(.*)$") or ""
    local fields = {}
    for w in rest:gmatch("%S+") do fields[#fields + 1] = w end
    return tonumber(fields[17])
  end

  it("stops the PS and the workers on SIGINT mid-run (exit 130); --nice-only niced the workers", function()
    if not have then return pending("openssh-server is not installed (make setup installs it)") end
    local p, out = deploy(RUN .. "--auth none --max-step 1000000 --step-timeout 60",
                          { "--nice", "7", "--nice-only", "workers" })
    pump_until(p, out, 120, function() return all_ready(out) end)
    assert.truthy(all_ready(out), text(out.err))
    assert.equal(3, #workers_alive())
    local base_nice = niceness("self")
    for _, pid in ipairs(workers_alive()) do assert.equal(7, niceness(pid)) end
    assert.equal(base_nice, niceness(ps_alive()[1]))
    os.execute("sleep 1")
    ffi.C.kill(p.pid, P.SIGINT)
    pump_until(p, out, 120)
    local so, se = text(out.out), text(out.err)
    assert.equal(130, p.code, se)
    assert.truthy(se:find("agt deploy: interrupted: stopping the run", 1, true), se)
    assert.truthy(so:find("[ps:0] Interrupted at step", 1, true), so .. "\n--- stderr:\n" .. se)
    assert.is_true(eventually(10, function() return #workers_alive() == 0 end), "workers left running")
    assert.same({}, ps_alive())
  end)

  it("a deploy killed with SIGKILL takes its remote workers with it (their session's end)", function()
    if not have then return pending("openssh-server is not installed (make setup installs it)") end
    local p, out = deploy(RUN .. "--auth none --max-step 1000000 --step-timeout 2")
    -- (every worker ready, so that the PS is past connecting: killed while it waits for one
    -- still loading its data, it waits --connect-timeout, 60 s, and not one step)
    pump_until(p, out, 120, function() return #workers_alive() == 3 and all_ready(out) end)
    assert.truthy(all_ready(out), text(out.err))
    assert.equal(3, #workers_alive())
    ffi.C.kill(p.pid, P.SIGKILL)
    p:reap(true)
    p:abandon_streams()
    assert.is_true(eventually(20, function() return #workers_alive() == 0 end), "workers left running")
    -- the PS, alone, fails its next step (3 rows missing > f = 0) and ends
    assert.is_true(eventually(30, function() return #ps_alive() == 0 end), "the PS is still running")
  end)

  it("with CURVE keys copied to the workers' hosts first (--copy-keys)", function()
    if not have then return pending("openssh-server is not installed (make setup installs it)") end
    local keys = dir .. "/keys"
    local rc, _, err = H.agt_run(string.format("keygen %s %s", q(cluster), q(keys)))
    assert.equal(0, rc, err)
    local p, out = deploy(RUN .. "--keys " .. q(keys) .. " --max-step 5 --step-timeout 60", { "--copy-keys" })
    pump_until(p, out, 240)
    local se = text(out.err)
    assert.equal(0, p.code, se)
    assert.truthy(se:find("agt deploy: copied the keys of 3 worker(s) to " .. keys, 1, true), se)
    assert.truthy(se:find("[workers:2] the PS ended the run after 5 steps", 1, true), se)
    assert.equal("-rw-------", H.sh("stat -c %A " .. q(keys .. "/workers-1.secret")):match("%S+"))
  end)

  it("with --omit starts only the workers; the PS started by hand ends them, and deploy with them", function()
    if not have then return pending("openssh-server is not installed (make setup installs it)") end
    local p, out = deploy("--auth none", { "--omit" })
    pump_until(p, out, 120, function() return #workers_alive() == 3 end)
    assert.equal(3, #workers_alive(), text(out.err))
    local rc, _, err = H.agt_run(string.format("run --server %s %s--auth none --max-step 3 --step-timeout 60 --quiet",
                                               q(cluster), RUN))
    assert.equal(0, rc, err)
    pump_until(p, out, 60)
    local se = text(out.err)
    assert.equal(0, p.code, se)
    assert.truthy(se:find("agt deploy: started 3 process(es) over ssh: workers:0, workers:1, workers:2", 1, true), se)
    for i = 0, 2 do
      assert.truthy(se:find(string.format("[workers:%d] the PS ended the run after 3 steps", i), 1, true), se)
    end
    assert.same({}, workers_alive())
  end)

  it("names an unreachable host (ssh's exit 255) and a host without agt (exit 127), and stops the rest", function()
    if not have then return pending("openssh-server is not installed (make setup installs it)") end
    local p, out = deploy(RUN .. "--auth none --max-step 5", { "--remote-agt", "/nonexistent/agt" })
    pump_until(p, out, 120)
    local se = text(out.err)
    assert.equal(1, p.code, se)
    assert.truthy(se:find("no agt at /nonexistent/agt on 127.0.0.%d %(exit 127: command not found%)"), se)
    assert.is_true(eventually(10, function() return #ps_alive() == 0 end), "the PS is still running")
    -- sshd is not listening on this port: ssh fails
    local argv = { "/usr/bin/env", "PATH=/usr/bin:/bin", AGT, "deploy", "--cluster", cluster, "--deploy",
                   "--runner", RUN .. "--auth none --max-step 5", "--ssh", "ssh -F /dev/null",
                   "--ssh-port", tostring(base + 50), "--ssh-identity", dir .. "/user_key" }
    p, out = start(argv)
    current = p
    pump_until(p, out, 120)
    se = text(out.err)
    assert.equal(1, p.code, se)
    assert.truthy(se:find("ssh to 127.0.0.%d failed %(exit 255: host unreachable"), se)
    assert.truthy(se:find("Connection refused", 1, true), se)
    -- a host key not in known_hosts is refused, unless asked to accept new ones
    p, out = start({ AGT, "deploy", "--cluster", cluster, "--deploy", "--runner", RUN .. "--auth none --max-step 2",
                     "--ssh", "ssh -F /dev/null", "--ssh-port", tostring(port), "--ssh-user", user,
                     "--ssh-identity", dir .. "/user_key", "--ssh-option", "UserKnownHostsFile=" .. dir .. "/empty_known_hosts" })
    current = p
    pump_until(p, out, 120)
    se = text(out.err)
    assert.equal(1, p.code, se)
    assert.truthy(se:find("Host key verification failed", 1, true), se)
    assert.truthy(se:find("--accept-new-host-keys", 1, true), se)
    assert.is_true(eventually(10, function() return #ps_alive() == 0 end), "the PS is still running")
  end)
end)

describe("agt deploy's flags", function()
  it("refuses bad flags, naming them (exit 2)", function()
    local c = '{"ps":["127.0.0.1:7000"],"workers":["127.0.0.1:7001"]}'
    for _, case in ipairs({
      { "--runner '--server x'", "--runner: leave --server out" },
      { "--runner '--seed \"1'", "--runner: an unclosed \"" },
      { "--nice 40", "--nice: expects an integer in -20..19" },
      { "--nice-only ps", "--nice-only: needs --nice N" },
      { "--ssh-port 0", "--ssh-port: expects a port in 1..65535" },
      { "--frobnicate", "unknown argument '--frobnicate'" },
    }) do
      local rc, _, err = H.agt_run(string.format("deploy --cluster %s %s", q(c), case[1]))
      assert.equal(2, rc, err)
      assert.truthy(err:find(case[2], 1, true), err)
    end
    local rc, _, err = H.agt_run(string.format("deploy --cluster %s --deploy", q(c)))
    assert.equal(1, rc)
    assert.truthy(err:find("--runner: is required to start the PS", 1, true), err)
    rc, _, err = H.agt_run(string.format("deploy --cluster %s --id workers:4 --runner x", q(c)))
    assert.equal(1, rc)
    assert.truthy(err:find("--id: 'workers:4' is not a node of the cluster", 1, true), err)
  end)
end)

describe("the G5k cluster ($OAR_FILE_NODES)", function()
  local CL = require("agt.cluster")
  pcall(ffi.cdef, "int setenv(const char *name, const char *value, int overwrite); int unsetenv(const char *name);")

  it("has the first node as the PS and the others as workers, each node once, port 7000 or G5k:PORT", function()
    local dir = H.tmpdir()
    H.write(dir .. "/nodes", "node-1.rennes.grid5000.fr\nnode-1.rennes.grid5000.fr\n\n node-7.rennes.grid5000.fr \n"
      .. "node-3.rennes.grid5000.fr\nnode-7.rennes.grid5000.fr\n")
    ffi.C.setenv("OAR_FILE_NODES", dir .. "/nodes", 1)
    local c = CL.load("G5k")
    assert.equal("node-1.rennes.grid5000.fr:7000", c.ps)
    assert.same({ "node-7.rennes.grid5000.fr:7000", "node-3.rennes.grid5000.fr:7000" }, c.workers)
    c = CL.load("G5k:7100", { ps = "master", workers = "wk" })
    assert.equal("node-1.rennes.grid5000.fr:7100", c.ps)
    assert.equal("wk", c.wk_job)
    -- what a remote worker is given: the same cluster, inline
    local back = CL.load(CL.json(c), { ps = "master", workers = "wk" })
    assert.equal(c.ps, back.ps)
    assert.same(c.workers, back.workers)
    -- refusals
    H.write(dir .. "/nodes", "node-1\nnode-1\n")
    local ok, err = pcall(CL.load, "G5k")
    assert.is_false(ok)
    assert.truthy(err:find("lists 1 distinct node(s); a run needs 2 or more", 1, true), err)
    ok, err = pcall(CL.load, "G5k:99999")
    assert.truthy(not ok and err:find("G5k:PORT expects a port in 1..65535", 1, true), err)
    ffi.C.unsetenv("OAR_FILE_NODES")
    ok, err = pcall(CL.load, "G5k")
    assert.truthy(not ok and err:find("$OAR_FILE_NODES is not set", 1, true), err)
    os.execute("rm -rf " .. q(dir))
  end)
end)

describe("agt.proc", function()
  local function collect(p, secs)
    local out = { out = {}, err = {} }
    pump_until(p, out, secs or 20)
    return out
  end

  it("reads a child's lines from both streams, the last one without a newline, and its status", function()
    local p = assert(P.spawn({ "sh", "-c", "echo one; echo two >&2; printf 'last'; exit 3" }))
    local out = collect(p)
    assert.equal(3, p.code)
    assert.same({ "one", "last" }, out.out)
    assert.same({ "two" }, out.err)
  end)

  it("gives a child what is written to its stdin, and an end of file when closed", function()
    local p = assert(P.spawn({ "sh", "-c", "while read -r l; do echo \"got $l\"; done; echo eof" }, { stdin = "pipe" }))
    assert.is_true(p:write("a\nb\n"))
    p:close_stdin()
    local out = collect(p)
    assert.equal(0, p.code)
    assert.same({ "got a", "got b", "eof" }, out.out)
  end)

  it("signals a child's process group (128 + N) and names a command that cannot start", function()
    local p = assert(P.spawn({ "sh", "-c", "sleep 30 & wait" }, { group = true }))
    os.execute("sleep 0.2")
    p:signal(P.SIGTERM)
    collect(p)
    assert.equal(128 + P.SIGTERM, p.code)
    local none, err = P.spawn({ "/nonexistent/cmd" })
    assert.is_nil(none)
    assert.truthy(err:find("cannot start '/nonexistent/cmd'", 1, true), err)
  end)
end)
