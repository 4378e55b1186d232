-- agt.checkpoint — crash-safe, checksummed training checkpoints.
--
-- A checkpoint is a flat map of names to byte strings (θ as raw float32, the optimizer state,
-- the step, every random stream, rule, attack and sampler states), written as
--
--   "AGTCKPT" 0x01 | u32 count | count × (u32 key length, key, u64 value length, value) | sha256
--
-- (little-endian; the SHA-256 covers every byte before it). Writing goes to a hidden temporary
-- file in the same directory, which is fsync'd, renamed over `model-<step>.ckpt` and followed by
-- an fsync of the directory: a crash leaves either the old set of checkpoints or the new one,
-- never a torn file under a checkpoint's name. Reading checks the size, the magic, the digest and
-- every length against the file's end before trusting any byte, so a truncated or corrupt file is
-- refused with a message that says why; `restore` then falls back to the previous valid one.
--
-- Only regular files are read (opened non-blocking and checked with fstat, so a FIFO, a device
-- or a directory under a checkpoint's name is skipped, never waited on or read). A refused file
-- is moved aside to `model-<step>.ckpt.invalid` (kept for inspection, no longer listed), and
-- only valid checkpoints count toward `keep`. `lock(dir)` takes the directory for one run: an
-- flock on `dir/.lock` (released by the kernel when the process dies, even by kill -9) holding
-- the owner's pid, and then removes the temporary files that an interrupted write left.
local ffi = require("ffi")
local U = require("agt.util")
local fs = require("agt.fs")

local M = {}

---------------------------------------------------------------------------------------------------
-- POSIX and libsodium through the FFI (declared one by one: the engine's cdef may already have some)

local function cdef(decl) pcall(ffi.cdef, decl) end
cdef("int open(const char *path, int flags, int mode);")
cdef("long read(int fd, void *buf, size_t n);")
cdef("int flock(int fd, int op);")
cdef("int ftruncate(int fd, int64_t length);")
cdef("int close(int fd);")
cdef("long write(int fd, const void *buf, size_t n);")
cdef("int fsync(int fd);")
cdef("int rename(const char *from, const char *to);")
cdef("int unlink(const char *path);")
cdef("char *strerror(int errnum);")
cdef("int getpid(void);")
cdef("int usleep(unsigned int usec);")
cdef("int sodium_init(void);")
cdef("int crypto_hash_sha256(unsigned char *out, const unsigned char *in, unsigned long long inlen);")


local C = ffi.C
local O_WRONLY, O_CREAT, O_TRUNC, O_RDONLY, O_DIRECTORY = 1, 64, 512, 0, 65536
local O_RDWR, O_CLOEXEC = 2, 524288
local LOCK_EX, LOCK_NB = 2, 4
local EINTR, EWOULDBLOCK = 4, 11

local function errno_msg()
  return ffi.string(C.strerror(ffi.errno()))
end

-- libsodium: the agt binary links it (its symbols are visible through ffi.C); a plain LuaJIT
-- loads the shared library.
local sodium
local function get_sodium()
  if sodium then return sodium end
  if pcall(function() return C.crypto_hash_sha256 end) then
    sodium = C
  else
    sodium = ffi.load("sodium")
  end
  sodium.sodium_init()
  return sodium
end

-- SHA-256 of a Lua string, as 32 raw bytes.
function M.sha256(s)
  local out = ffi.new("unsigned char[32]")
  get_sodium().crypto_hash_sha256(out, s, #s)
  return ffi.string(out, 32)
end

function M.hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

-- The bytes of hexadecimal text (M.hex's), or nil when it is not such text.
function M.unhex(h)
  if type(h) ~= "string" or #h % 2 ~= 0 or h:find("[^%x]") then return nil end
  return (h:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end))
end

-- Writes data to path durably: temporary file, write, fsync, rename, fsync of the directory.
function M.write_atomic(path, data)
  local dir, base = path:match("^(.*)/([^/]+)$")
  if not dir then dir, base = ".", path end
  local tmp = string.format("%s/.%s.tmp.%d", dir, base, C.getpid())
  local fd = C.open(tmp, O_WRONLY + O_CREAT + O_TRUNC, tonumber("644", 8))
  if fd < 0 then return nil, string.format("cannot create %s: %s", tmp, errno_msg()) end
  local buf, off, n = ffi.cast("const char *", data), 0, #data
  while off < n do
    local w = C.write(fd, buf + off, n - off)
    if w < 0 and ffi.errno() == EINTR then
      w = 0
    elseif w < 0 then
      local msg = errno_msg()
      C.close(fd); C.unlink(tmp)
      return nil, string.format("cannot write %s: %s", tmp, msg)
    end
    off = off + tonumber(w)
  end
  if C.fsync(fd) ~= 0 then
    local msg = errno_msg()
    C.close(fd); C.unlink(tmp)
    return nil, string.format("cannot fsync %s: %s", tmp, msg)
  end
  if C.close(fd) ~= 0 then
    local msg = errno_msg()
    C.unlink(tmp)
    return nil, string.format("cannot close %s: %s", tmp, msg)
  end
  if C.rename(tmp, path) ~= 0 then
    local msg = errno_msg()
    C.unlink(tmp)
    return nil, string.format("cannot rename %s to %s: %s", tmp, path, msg)
  end
  local dfd = C.open(dir, O_RDONLY + O_DIRECTORY, 0)
  if dfd >= 0 then C.fsync(dfd); C.close(dfd) end
  return true
end

---------------------------------------------------------------------------------------------------
-- Encoding

local MAGIC = "AGTCKPT\1"

local function u32(x)
  return string.char(x % 256, math.floor(x / 256) % 256, math.floor(x / 65536) % 256,
                     math.floor(x / 16777216) % 256)
end
local function u64(x)
  return u32(x % 4294967296) .. u32(math.floor(x / 4294967296))
end
local function get_u32(s, i)
  local a, b, c, d = s:byte(i, i + 3)
  return a + b * 256 + c * 65536 + d * 16777216
end
local function get_u64(s, i)
  return get_u32(s, i) + get_u32(s, i + 4) * 4294967296
end

-- Serialises a map name -> string (keys sorted, so equal maps give equal bytes).
function M.encode(map)
  local keys = {}
  for k, v in pairs(map) do
    if type(k) ~= "string" then error("checkpoint keys must be strings, got " .. type(k), 2) end
    if type(v) ~= "string" then
      error(string.format("checkpoint value %q must be a string, got %s", k, type(v)), 2)
    end
    keys[#keys + 1] = k
  end
  table.sort(keys)
  local parts = { MAGIC, u32(#keys) }
  for _, k in ipairs(keys) do
    local v = map[k]
    parts[#parts + 1] = u32(#k)
    parts[#parts + 1] = k
    parts[#parts + 1] = u64(#v)
    parts[#parts + 1] = v
  end
  local body = table.concat(parts)
  return body .. M.sha256(body)
end

-- Parses and verifies; returns the map or nil, reason.
function M.decode(s)
  if #s < #MAGIC + 4 + 32 then
    return nil, string.format("truncated (%d bytes, smaller than an empty checkpoint)", #s)
  end
  if s:sub(1, #MAGIC) ~= MAGIC then
    return nil, "not an agt checkpoint (bad magic or unsupported version)"
  end
  local body, digest = s:sub(1, -33), s:sub(-32)
  if M.sha256(body) ~= digest then
    return nil, "checksum mismatch (the file is corrupt or truncated)"
  end
  local n = get_u32(body, #MAGIC + 1)
  local pos, map = #MAGIC + 5, {}
  for _ = 1, n do
    if pos + 4 - 1 > #body then return nil, "malformed: entry header past the end" end
    local kl = get_u32(body, pos); pos = pos + 4
    if pos + kl + 8 - 1 > #body then return nil, "malformed: key past the end" end
    local k = body:sub(pos, pos + kl - 1); pos = pos + kl
    local vl = get_u64(body, pos); pos = pos + 8
    if pos + vl - 1 > #body then return nil, "malformed: value of " .. k .. " past the end" end
    map[k] = body:sub(pos, pos + vl - 1); pos = pos + vl
  end
  if pos ~= #body + 1 then return nil, "malformed: trailing bytes after the last entry" end
  return map
end

---------------------------------------------------------------------------------------------------
-- Reading one file: regular files only, never blocking

-- Opens path only when it is a regular file (never blocking on a FIFO): fd, size, signature
-- (what identifies its content for the cache of verified checkpoints), or nil, reason.
local open_regular = fs.open_regular

-- The bytes of a checkpoint file and its signature, or nil, reason. max_bytes (optional) refuses
-- a file larger than any checkpoint of the run could be before reading it.
function M.read(path, max_bytes)
  local fd, size, sig = open_regular(path)
  if not fd then return nil, size end
  if max_bytes and size > max_bytes then
    C.close(fd)
    return nil, string.format("%d bytes, more than a checkpoint of this run can hold (%d)", size,
                              max_bytes)
  end
  local buf, off = ffi.new("char[?]", math.max(size, 1)), 0
  while off < size do
    local r = C.read(fd, buf + off, size - off)
    if r < 0 and ffi.errno() ~= EINTR then
      local msg = errno_msg()
      C.close(fd)
      return nil, "cannot read: " .. msg
    end
    if r == 0 then break end                       -- shrank since fstat: decode will refuse it
    if r > 0 then off = off + tonumber(r) end
  end
  C.close(fd)
  return ffi.string(buf, off), sig
end

---------------------------------------------------------------------------------------------------
-- The fields of a training state (what agt.session saves)

local function uint(s)
  return type(s) == "string" and s:match("^%d+$") and #s <= 15 and tonumber(s) or nil
end

-- Checks the type and range of every field a training state must have, after the checksum (a
-- forged file can have a right checksum): true, or nil, what is wrong. expect: { step = the
-- step of the file's name, d = parameters, n = workers, rng_bytes = size of a stream's state }.
function M.check_state(map, expect)
  expect = expect or {}
  local step = uint(map.step)
  if not step then return nil, string.format("step %q is not a step number", tostring(map.step)) end
  if expect.step and step ~= expect.step then
    return nil, string.format("holds step %d but is named for step %d", step, expect.step)
  end
  local d = uint(map.d)
  if not d then return nil, string.format("d %q is not a parameter count", tostring(map.d)) end
  if expect.d and d ~= expect.d then
    return nil, string.format("holds %d parameters, the experiment has %d", d, expect.d)
  end
  if type(map.theta) ~= "string" or #map.theta ~= 4 * d then
    return nil, string.format("theta has %d bytes, %d parameters need %d",
                              type(map.theta) == "string" and #map.theta or 0, d, 4 * d)
  end
  if type(map.optimizer) ~= "string" then return nil, "no optimizer state" end
  for _, k in ipairs({ "rng.rule", "rng.attack" }) do
    local v = map[k]
    if type(v) ~= "string" or (expect.rng_bytes and #v ~= expect.rng_bytes) then
      return nil, string.format("%s is %s, a random stream's state has %s bytes", k,
                                type(v) == "string" and (#v .. " bytes") or "missing",
                                tostring(expect.rng_bytes or "some"))
    end
  end
  for k in pairs(map) do
    local w = k:match("^worker%.([^.]*)$")   -- (worker.<i>.<part> entries are the parts')
    if w then
      local i = uint(w)
      if not i or i < 1 or (expect.n and i > expect.n) then
        return nil, string.format("has a state for worker %q, the run has %s", w,
                                  tostring(expect.n or "fewer"))
      end
    end
  end
  -- (a gradient source other than local workers may keep no worker entries at all)
  local any = false
  for k in pairs(map) do if k:match("^worker%.") then any = true end end
  for i = 1, any and expect.n or 0 do
    if type(map["worker." .. i]) ~= "string" then return nil, "has no state for worker " .. i end
  end
  return true
end

---------------------------------------------------------------------------------------------------
-- A directory of checkpoints

local function name_of(step) return string.format("model-%d.ckpt", step) end

-- Checkpoints in dir as a list of {step=, path=}, newest first (every entry named like one,
-- whatever it is: reading decides).
function M.list(dir)
  local names = fs.list(dir)
  if not names then return {} end
  local out = {}
  for _, name in ipairs(names) do
    local step = name:match("^model%-(%d+)%.ckpt$")
    if step and #step <= 15 then out[#out + 1] = { step = tonumber(step), path = dir .. "/" .. name } end
  end
  table.sort(out, function(a, b) return a.step > b.step end)
  return out
end

local function default_warn(msg) io.stderr:write("agt: warning: ", msg, "\n") end

-- Signatures of the files this process wrote or verified: path -> signature.
local verified = {}

-- Reads, decodes and checks one checkpoint: map, or nil, reason. opts: max_bytes, check(map,
-- step) -> true | nil, why; step: the step of its name.
local function load_checked(path, step, opts)
  local s, sig = M.read(path, opts.max_bytes)
  if not s then return nil, sig end
  local map, why = M.decode(s)
  if not map then return nil, why end
  if opts.check then
    local ok, err = opts.check(map, step)
    if not ok then return nil, err end
  end
  verified[path] = sig
  return map
end

-- Whether the checkpoint at path is valid, reading it only when this process has not already
-- verified these bytes.
local function is_valid(c, opts)
  local fd, why, sig = open_regular(c.path)
  if not fd then return nil, why end
  C.close(fd)
  if verified[c.path] == sig then return true end
  return load_checked(c.path, c.step, opts)
end

-- Moves a refused checkpoint aside (`<name>.invalid`, or `.invalid.2`, ... if taken) and says
-- so through warn. Returns the new path (nil if it could not be moved).
function M.set_aside(path, why, warn)
  warn = warn or default_warn
  verified[path] = nil
  local dir, base = path:match("^(.*)/([^/]+)$")
  local taken = {}
  for _, n in ipairs(fs.list(dir or ".") or {}) do taken[n] = true end
  local to, k = base .. ".invalid", 1
  while taken[to] do k = k + 1; to = string.format("%s.invalid.%d", base, k) end
  to = (dir or ".") .. "/" .. to
  if C.rename(path, to) ~= 0 then
    warn(string.format("checkpoint %s refused: %s (could not move it aside: %s)", path, why,
                       errno_msg()))
    return nil
  end
  warn(string.format("checkpoint %s refused: %s; moved to %s", path, why, to))
  return to
end

-- Writes map as the checkpoint of `step` in dir, then keeps only the newest `keep` (>= 1)
-- valid ones: an invalid checkpoint newer than them is moved aside (it would otherwise count,
-- and push the new one out). opts: warn(message), check, max_bytes (as restore's).
-- Returns the path, or nil, message.
function M.save(dir, step, map, keep, opts)
  opts = opts or {}
  local ok, err = fs.mkdir_p(dir)
  if not ok then return nil, err end
  local path = dir .. "/" .. name_of(step)
  ok, err = M.write_atomic(path, M.encode(map))
  if not ok then return nil, err end
  local fd, _, sig = open_regular(path)
  if fd then verified[path] = sig; C.close(fd) end
  keep = keep or 3
  local valid = 0
  for _, c in ipairs(M.list(dir)) do
    if valid >= keep then
      C.unlink(c.path)
    else
      local good, why = is_valid(c, opts)
      if good then valid = valid + 1 else M.set_aside(c.path, why, opts.warn) end
    end
  end
  return path
end

-- The decoded checkpoint at path, or nil, message.
function M.load(path, opts)
  local map, why = load_checked(path, tonumber(path:match("model%-(%d+)%.ckpt$")), opts or {})
  if not map then return nil, string.format("checkpoint %s refused: %s", path, why) end
  return map
end

-- The newest valid checkpoint of dir: map, path; or nil when there is none. Each refused file
-- is moved aside and reported through opts.warn (default: stderr) before the previous one is
-- tried. opts (or just the warn function): warn, max_bytes, check(map, step) -> true | nil, why
-- (fields), apply(map, path) -> true | nil, why (an error raised by apply is not a refusal:
-- it propagates).
function M.restore(dir, opts)
  if type(opts) == "function" then opts = { warn = opts } end
  opts = opts or {}
  local warn = opts.warn or default_warn
  local list = M.list(dir)
  for i, c in ipairs(list) do
    local map, why = load_checked(c.path, c.step, opts)
    if map and opts.apply then
      local ok, err = opts.apply(map, c.path)
      if not ok then map, why = nil, err end
    end
    if map then return map, c.path end
    local next_one = list[i + 1] and "; falling back to " .. list[i + 1].path or "; no older checkpoint"
    M.set_aside(c.path, why .. next_one, warn)
  end
  return nil
end

---------------------------------------------------------------------------------------------------
-- One run per directory

local Lock = {}
Lock.__index = Lock

local function pid_in(path)
  local s = U.read_file(path)
  return s and s:match("%d+")
end

-- Whether the run that holds a lock is ending: its pid gone from this host or a zombie. A
-- process killed with -9 turns zombie at once, but its lock goes with its last thread, which
-- on a busy machine can take a moment: a PS restarted right away (by hand, a supervisor) waits
-- for it rather than being refused. (A pid from another host sharing the directory also reads
-- as gone here: that costs the wait, then the same refusal.)
local function ending(pid)
  if not pid then return false end
  local stat = U.read_file("/proc/" .. pid .. "/stat")
  if not stat then return true end
  local state = stat:match("^%d+ %b() (%a)")
  return state == "Z" or state == "X"
end
local LOCK_WAIT_S = 10

-- Takes dir (created if needed) for this process: a lock object, or nil, message naming the
-- pid of the run that holds it. Then removes the temporary files of interrupted writes
-- (`.model-<step>.ckpt.tmp.<pid>`), which no live writer can own once the lock is held.
function M.lock(dir, warn)
  warn = warn or default_warn
  local ok, err = fs.mkdir_p(dir)
  if not ok then return nil, err end
  local path = dir .. "/.lock"
  local fd = C.open(path, O_RDWR + O_CREAT + O_CLOEXEC, tonumber("644", 8))
  if fd < 0 then
    return nil, string.format("cannot create %s: %s (the directory must be writable)", path, errno_msg())
  end
  local waited = 0
  while C.flock(fd, LOCK_EX + LOCK_NB) ~= 0 do
    local e = ffi.errno()
    if e == EWOULDBLOCK and waited < LOCK_WAIT_S and ending(pid_in(path)) then
      C.usleep(50000)
      waited = waited + 0.05
    elseif e ~= EINTR then
      local msg = errno_msg()
      C.close(fd)
      if e == EWOULDBLOCK then
        return nil, string.format("%s is in use by another run (pid %s); wait for it to end or "
                                  .. "use another directory", dir, pid_in(path) or "unknown")
      end
      return nil, string.format("cannot lock %s: %s", path, msg)
    end
  end
  local pid = tostring(C.getpid()) .. "\n"
  if C.ftruncate(fd, 0) ~= 0 or C.write(fd, pid, #pid) ~= #pid then
    local msg = errno_msg()
    C.close(fd)
    return nil, string.format("cannot write %s: %s", path, msg)
  end
  for _, name in ipairs(fs.list(dir) or {}) do
    if name:match("^%.model%-%d+%.ckpt%.tmp%.%d+$") then
      if C.unlink(dir .. "/" .. name) == 0 then
        warn(string.format("removed %s/%s, left by an interrupted checkpoint write", dir, name))
      end
    end
  end
  return setmetatable({ fd = fd, dir = dir, path = path }, Lock)
end

-- Lets another run take the directory (process exit does the same).
function Lock:release()
  if self.fd then C.close(self.fd); self.fd = nil end
end

return M
