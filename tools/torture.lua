-- agt torture: runs treated as a failing machine and a hostile user would treat them, then the
-- result compared with an uninterrupted run.
--   ./agt tools/torture.lua [rounds]      (make torture; make test runs a short form)
-- 1. kill -9 / SIGTERM at random points of runs with --checkpoint-delta 1, some restarts after
--    damaging the newest checkpoint (truncated, bit-flipped, emptied, a FIFO or a directory in
--    its place) or leaving a stale temporary; the finished run's θ must have the SHA-256 of an
--    uninterrupted run's.
-- 2. two runs at once in one directory: exactly one is refused (status 2, naming the other's pid).
-- 3. a full disk: the evaluation file and summary.csv on /dev/full, and a file-size limit
--    (ulimit -f, SIGXFSZ ignored) under the checkpoints: status 1 with a message naming the
--    file, never a crash, and the checkpoints already there stay valid.
-- Every run must exit 0, 1, 2, 130 or by our SIGKILL; anything else (a sanitizer's report, a
-- segfault) is a failure. Prints "N passed, N failed".
local K = require("agt.checkpoint")
local host = require("agt.host")
local ffi = require("ffi")

local rounds = tonumber(arg and arg[1]) or tonumber(os.getenv("TORTURE_ROUNDS")) or 20
pcall(ffi.cdef, "long readlink(const char *path, char *buf, size_t n);")
local AGT = host.root .. "/agt"
do
  local buf = ffi.new("char[4096]")
  local k = tonumber(ffi.C.readlink("/proc/self/exe", buf, 4096))
  if k > 0 and ffi.string(buf, k):match("/agt[^/]*$") then AGT = ffi.string(buf, k) end
end

local function sh(cmd)
  local p = io.popen(cmd)
  local out = p:read("*a")
  p:close()
  return out
end
local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end
local function sleep(s) os.execute("sleep " .. s) end

local tmp = sh("mktemp -d /tmp/agt-torture.XXXXXX"):match("%S+")
local passed, failed = 0, 0
local function check(ok, what, detail)
  if ok then
    passed = passed + 1
  else
    failed = failed + 1
    io.stderr:write("torture: FAILED: ", what, detail and ("\n" .. detail) or "", "\n")
  end
end

local TARGET = 40
local BASE = "run --experiment fashion-mnist --aggregator krum --nb-workers 5 --nb-decl-byz-workers 1 "
  .. "--experiment-args batch-size:16 eval-size:200 --evaluation-period -1 --checkpoint-period -1 "
  .. "--summary-period -1 --quiet --checkpoint-delta 1 --checkpoint-keep 3 --checkpoint-dir "

-- Starts a run in the background; returns its pid and the files where its status and output go.
local function start(dir, more, tag)
  local out, rcf = dir .. "." .. tag .. ".out", dir .. "." .. tag .. ".rc"
  local pid = sh(string.format("sh -c %s >/dev/null 2>&1 & echo $!", q(string.format(
    "%s %s%s %s >%s 2>&1 & echo $! >%s.pid; wait $!; echo $? >%s", q(AGT), BASE, q(dir), more,
    q(out), q(rcf), q(rcf)))))
  for _ = 1, 500 do
    if (read(rcf .. ".pid") or ""):match("%d+\n") then break end
    sleep(0.01)
  end
  return (read(rcf .. ".pid") or ""):match("%d+"), rcf, out
end

local function wait_rc(rcf, limit)
  for _ = 1, (limit or 1200) do
    local s = read(rcf)
    if s and s:match("%d+") then return tonumber(s:match("%d+")) end
    sleep(0.05)
  end
  return nil
end

-- The newest valid checkpoint's step and θ's SHA-256 (0, nil when there is none).
local function newest(dir)
  for _, c in ipairs(K.list(dir)) do
    local s = K.read(c.path)
    local map = s and K.decode(s)
    if map and map.theta then return c.step, K.hex(K.sha256(map.theta)) end
  end
  return 0, nil
end

local function sanitizer_report(out)
  local s = read(out) or ""
  return s:find("AddressSanitizer") or s:find("runtime error:") or s:find("LeakSanitizer")
end

-- 0. the uninterrupted reference
local ref = tmp .. "/ref"
local _, rcf, out = start(ref, "--max-step " .. TARGET, "ref")
local rc = wait_rc(rcf)
check(rc == 0, "the reference run exits 0", read(out))
local ref_step, ref_sha = newest(ref)
check(ref_step == TARGET, "the reference run checkpoints step " .. TARGET)

-- 1. interrupted, damaged, resumed
local damage = {
  function(p) local s = read(p); local f = io.open(p, "wb"); f:write(s:sub(1, math.floor(#s / 2))); f:close() end,
  function(p) local s = read(p); local f = io.open(p, "wb")
              f:write(s:sub(1, 99) .. string.char((s:byte(100) + 1) % 256) .. s:sub(101)); f:close() end,
  function(p) local f = io.open(p, "wb"); f:close() end,
  function(p) os.remove(p); os.execute("mkfifo " .. q(p)) end,
  function(p) os.remove(p); os.execute("mkdir " .. q(p)) end,
  function(p) local d, b = p:match("^(.*)/([^/]+)$"); local f = io.open(d .. "/." .. b .. ".tmp.99999", "wb")
              f:write("half"); f:close() end,
}
math.randomseed(tonumber(os.getenv("TORTURE_SEED")) or os.time())
local dir = tmp .. "/kill"
local launches = 0
for r = 1, rounds do
  local step = newest(dir)
  if step >= TARGET then break end
  if r > 1 and math.random() < 0.4 then
    local list = K.list(dir)
    if list[1] then damage[math.random(#damage)](list[1].path) end
  end
  launches = launches + 1
  local pid, rf, o = start(dir, "--max-step " .. (TARGET - newest(dir)), "r" .. r)
  sleep(string.format("%.2f", 0.3 + math.random() * 1.2))
  local sig = math.random() < 0.5 and "KILL" or "TERM"
  os.execute("kill -" .. sig .. " " .. pid .. " 2>/dev/null")
  local code = wait_rc(rf)
  local okc = code == 0 or code == 130 or (sig == "KILL" and code == 137)
  check(okc and not sanitizer_report(o), string.format("round %d: %s gives status 0, 130 or 137", r, sig),
        "status " .. tostring(code) .. "\n" .. (read(o) or ""))
end
-- then to the end, uninterrupted
local step = newest(dir)
if step < TARGET then
  local _, rf, o = start(dir, "--max-step " .. (TARGET - step), "last")
  local code = wait_rc(rf)
  check(code == 0 and not sanitizer_report(o), "the last resumed run exits 0", read(o))
end
local got_step, got_sha = newest(dir)
check(got_step == TARGET and got_sha == ref_sha,
      string.format("after %d interrupted runs, θ at step %d has the uninterrupted run's SHA-256", launches, TARGET),
      string.format("step %d %s, reference %s", got_step, tostring(got_sha), tostring(ref_sha)))

-- 2. two runs at once
local two = tmp .. "/two"
local pa, ra, oa = start(two, "--max-step 0", "a")
for _ = 1, 400 do if #K.list(two) > 0 then break end sleep(0.05) end
local _, rb, ob = start(two, "--max-step 5", "b")
local cb = wait_rc(rb)
os.execute("kill -TERM " .. pa)
local ca = wait_rc(ra)
check(ca == 130 and not sanitizer_report(oa), "the first of two runs stops cleanly on SIGTERM", read(oa))
check(cb == 2 and (read(ob) or ""):find("in use by another run %(pid " .. pa .. "%)"),
      "the second of two runs is refused, naming the first's pid", read(ob))

-- 3. a full disk
for _, name in ipairs({ "eval", "summary.csv" }) do
  local d = tmp .. "/full-" .. name:gsub("%W", "")
  os.execute("mkdir -p " .. q(d) .. " && ln -s /dev/full " .. q(d .. "/" .. name))
  local _, rf, o = start(d, "--max-step 5 --summary-delta 1", "full")
  local code = wait_rc(rf)
  check(code == 1 and (read(o) or ""):find("cannot write " .. (d .. "/" .. name):gsub("%p", "%%%0")
        .. ": No space left on device") and not sanitizer_report(o),
        "a full disk under " .. name .. " is status 1 naming the file", read(o))
end
do
  local d = tmp .. "/fsize"
  local _, rf, o = start(d, "--max-step 3", "fsize0")
  check(wait_rc(rf) == 0, "a run before the file-size limit", read(o))
  local before = newest(d)
  -- 600 kB: the evaluation file and summaries fit, the next checkpoint (320 kB) twice does not
  local out2 = d .. ".fsize.out"
  local code = os.execute(string.format("sh -c %s", q(string.format(
    "trap '' XFSZ; ulimit -f 300; exec %s %s%s --max-step 5 >%s 2>&1", q(AGT), BASE, q(d), q(out2)))))
  code = type(code) == "number" and (code >= 256 and math.floor(code / 256) or code) or code
  local msg = read(out2) or ""
  check(code == 1 and msg:find("File too large") and not sanitizer_report(out2),
        "a checkpoint past the file-size limit is status 1 naming why", "status " .. tostring(code) .. "\n" .. msg)
  check(newest(d) >= before, "the checkpoints written before the full disk stay valid")
end

os.execute("rm -rf " .. q(tmp))
print(string.format("%d passed, %d failed", passed, failed))
os.exit(failed == 0 and 0 or 1)
