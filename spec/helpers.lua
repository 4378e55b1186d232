-- Helpers shared by the specs: running the agt binary as a child process, temp dirs.
local host = require("agt.host")
local H = {}

-- The binary running the specs (./agt, or ./agt-asan under `make asan-agt`), for child runs.
H.agt = host.root .. "/agt"
do
  local ffi = require("ffi")
  pcall(ffi.cdef, "long readlink(const char *path, char *buf, size_t n);")
  local buf = ffi.new("char[4096]")
  local k = tonumber(ffi.C.readlink("/proc/self/exe", buf, 4096))
  local exe = k > 0 and ffi.string(buf, k)
  if exe and exe:match("/agt[^/]*$") then H.agt = exe end
end

function H.shell_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- Runs a shell command; returns exit code, stdout, stderr.
function H.run(cmd)
  local out, err = os.tmpname(), os.tmpname()
  local ok, how, code = os.execute(cmd .. " >" .. out .. " 2>" .. err)
  -- LuaJIT (5.1 semantics) returns the raw status from os.execute
  local rc
  if type(ok) == "number" then rc = ok >= 256 and math.floor(ok / 256) or ok else rc = code or (ok and 0 or 1) end
  local function slurp(p) local f = io.open(p, "rb"); local s = f:read("*a"); f:close(); os.remove(p); return s end
  return rc, slurp(out), slurp(err)
end

function H.agt_run(args) return H.run(H.shell_quote(H.agt) .. " " .. args) end

function H.tmpdir()
  local p = io.popen("mktemp -d /tmp/agt-spec.XXXXXX")
  local d = p:read("*l")
  p:close()
  return d
end

-- The whole file, or nil when it cannot be read.
function H.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

-- A shell command's standard output.
function H.sh(cmd)
  local p = io.popen(cmd)
  local out = p:read("*a")
  p:close()
  return out
end

function H.write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end


-- The width and height of a PNG (from its IHDR) and its colour type, or nil and why.
function H.png_size(s)
  if not s or s:sub(1, 8) ~= "\137PNG\r\n\26\n" then return nil, "not a PNG signature" end
  if s:sub(13, 16) ~= "IHDR" then return nil, "no IHDR first" end
  local function be32(i) local a, b, c, d = s:byte(i, i + 3); return ((a * 256 + b) * 256 + c) * 256 + d end
  return be32(17), be32(21), s:byte(26)
end

-- The text a PDF shows: the strings of every Tj and TJ of its (zlib) content streams, in order,
-- joined (so a label drawn in one call is found whole). Enough for cairo's PDFs of Latin text.
local ffi = require("ffi")
pcall(ffi.cdef, [[int uncompress(uint8_t *dest, unsigned long *destLen, const uint8_t *source,
                                 unsigned long sourceLen);]])
function H.pdf_text(s)
  local out = {}
  for data in s:gmatch("stream\r?\n(.-)\r?\nendstream") do
    local cap, text = 64 * #data + 1024, nil
    while not text and cap < 2 ^ 28 do
      local buf, len = ffi.new("uint8_t[?]", cap), ffi.new("unsigned long[1]", cap)
      local rc = ffi.C.uncompress(buf, len, ffi.cast("const uint8_t *", data), #data)
      if rc == 0 then text = ffi.string(buf, len[0]) elseif rc == -5 then cap = cap * 4 else break end
    end
    if text and (text:find("Tj", 1, true) or text:find("TJ", 1, true)) then
      local i, depth, cur = 1, 0, nil
      while i <= #text do
        local c = text:sub(i, i)
        if depth == 0 then
          if c == "(" then depth, cur = 1, {} end
        elseif c == "\\" then
          local oct = text:match("^[0-7][0-7]?[0-7]?", i + 1)
          if oct then cur[#cur + 1] = string.char(tonumber(oct, 8)); i = i + #oct
          else
            local e = text:sub(i + 1, i + 1)
            cur[#cur + 1] = ({ n = "\n", r = "\r", t = "\t" })[e] or e
            i = i + 1
          end
        elseif c == "(" then depth = depth + 1; cur[#cur + 1] = c
        elseif c == ")" then
          depth = depth - 1
          if depth == 0 then out[#out + 1] = table.concat(cur) else cur[#cur + 1] = c end
        else
          cur[#cur + 1] = c
        end
        i = i + 1
      end
    end
  end
  return table.concat(out)
end

-- Distributed runs on 127.0.0.1 (the specs of agt run --server, agt worker, --UDP): ---------------

-- A port base no other spec run is likely to hold, from the pid and the clock; k spreads the
-- cases of one file apart.
-- A base port P for a test's cluster: P .. P+31 (the PS, its workers, and the offsets the specs
-- add) are used by no TCP or UDP socket of this machine in any state, listening, connected or in
-- TIME_WAIT (from /proc/net/{tcp,udp}{,6}). Drawn pseudo-randomly, so that runs at the same time
-- (two checkouts' test suites) are unlikely to draw the same block, and checked, so that one
-- does not take ports a leftover process or another run still holds.
local function ports_in_use()
  local used = {}
  for _, f in ipairs({ "tcp", "tcp6", "udp", "udp6" }) do
    local text = H.read("/proc/net/" .. f) or ""
    for hex in text:gmatch("\n%s*%d+: %x+:(%x+) ") do used[tonumber(hex, 16)] = true end
  end
  return used
end

function H.free_port(k)
  local seed = tonumber(H.sh("echo $$")) or 0
  local used = ports_in_use()
  for try = 0, 199 do
    local p = 20000 + (seed * 7919 + os.time() * 13 + ((k or 0) + try) * 101) % 30000
    local clear = true
    for q = p, p + 31 do if used[q] then clear = false; break end end
    if clear then return p end
  end
  error("no block of 32 free ports found between 20000 and 50031")
end

-- A cluster file in dir: the PS on port, n workers on port+1..port+n. Returns its path.
function H.cluster(dir, port, n)
  local w = {}
  for i = 1, n do w[i] = string.format("\"127.0.0.1:%d\"", port + i) end
  local path = dir .. "/cluster.json"
  H.write(path, string.format("{\"ps\": [\"127.0.0.1:%d\"], \"workers\": [%s]}", port, table.concat(w, ", ")))
  return path
end

-- Starts a shell command in the background, its output into log; returns its pid.
function H.spawn(cmd, log)
  local out = H.sh(string.format("(%s > '%s' 2>&1 & echo $!)", cmd, log))
  return assert(tonumber(out:match("%d+")), "no pid from: " .. cmd)
end

function H.stop(pids)
  for _, pid in pairs(pids) do os.execute(string.format("kill -9 %d 2>/dev/null", pid)) end
end

-- Waits (up to 20 s) until process pid has exited: gone, or a zombie whose other threads have
-- ended too. (A killed process's main thread turns zombie first; its files, a checkpoint
-- directory's lock among them, are released with its last thread, which on a loaded machine
-- can come later: a PS restarted at once then found the directory "in use by another run".)
function H.gone(pid)
  for _ = 1, 400 do
    if os.execute(string.format("s=$(ps -o stat= -p %d) && { [ \"${s#Z}\" = \"$s\" ] "
                                .. "|| [ $(ls /proc/%d/task 2>/dev/null | wc -l) -gt 1 ]; }", pid, pid)) ~= 0 then
      return
    end
    os.execute("sleep 0.05")
  end
end

-- The texts of the files at paths (a list) once each holds `text` (plain), or as they are
-- after secs seconds (default 30) in all: a line that processes write after an event (workers,
-- after the PS's BYE) is waited for, not slept for.
function H.wait_logs(paths, text, secs)
  local t_end, texts = os.time() + (secs or 30), {}
  repeat
    local all = true
    for k, path in ipairs(paths) do
      texts[k] = H.read(path) or ""
      if not texts[k]:find(text, 1, true) then all = false end
    end
    if all then return texts end
    os.execute("sleep 0.1")
  until os.time() > t_end
  return texts
end

-- The step of the newest model-N.ckpt in dir, or -1 (with --checkpoint-keep a file lives only
-- a few steps: a poll for one name can miss it).
function H.newest_checkpoint(dir)
  local names = require("agt.fs").list(dir)
  local best = -1
  for _, f in ipairs(names or {}) do
    local k = tonumber(f:match("^model%-(%d+)%.ckpt$"))
    if k and k > best then best = k end
  end
  return best
end

return H
