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
local ffi = require("ffi")
local U = require("agt.util")
local fs = require("agt.fs")

local M = {}

---------------------------------------------------------------------------------------------------
-- POSIX and libsodium through the FFI (declared one by one: the engine's cdef may already have some)

local function cdef(decl) pcall(ffi.cdef, decl) end
cdef("int open(const char *path, int flags, int mode);")
cdef("int close(int fd);")
cdef("long write(int fd, const void *buf, size_t n);")
cdef("int fsync(int fd);")
cdef("int rename(const char *from, const char *to);")
cdef("int unlink(const char *path);")
cdef("char *strerror(int errnum);")
cdef("int getpid(void);")
cdef("int sodium_init(void);")
cdef("int crypto_hash_sha256(unsigned char *out, const unsigned char *in, unsigned long long inlen);")

local C = ffi.C
local O_WRONLY, O_CREAT, O_TRUNC, O_RDONLY, O_DIRECTORY = 1, 64, 512, 0, 65536

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
    if w < 0 then
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
  C.close(fd)
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
-- A directory of checkpoints

local function name_of(step) return string.format("model-%d.ckpt", step) end

-- Checkpoints in dir as a list of {step=, path=}, newest first.
function M.list(dir)
  local names = fs.list(dir)
  if not names then return {} end
  local out = {}
  for _, name in ipairs(names) do
    local step = name:match("^model%-(%d+)%.ckpt$")
    if step then out[#out + 1] = { step = tonumber(step), path = dir .. "/" .. name } end
  end
  table.sort(out, function(a, b) return a.step > b.step end)
  return out
end

-- Writes map as the checkpoint of `step` in dir, then keeps only the newest `keep` (>= 1).
-- Returns the path, or nil, message.
function M.save(dir, step, map, keep)
  local ok, err = fs.mkdir_p(dir)
  if not ok then return nil, err end
  local path = dir .. "/" .. name_of(step)
  ok, err = M.write_atomic(path, M.encode(map))
  if not ok then return nil, err end
  keep = keep or 3
  for i, c in ipairs(M.list(dir)) do
    if i > keep then C.unlink(c.path) end
  end
  return path
end

function M.load(path)
  local s, err = U.read_file(path)
  if not s then return nil, err end
  local map, why = M.decode(s)
  if not map then return nil, string.format("checkpoint %s refused: %s", path, why) end
  return map
end

-- The newest valid checkpoint of dir: map, path; or nil when there is none. Each refused file
-- is reported through warn(message) (default: stderr) before the previous one is tried.
function M.restore(dir, warn)
  warn = warn or function(msg) io.stderr:write("agt: ", msg, "\n") end
  local list = M.list(dir)
  for i, c in ipairs(list) do
    local map, err = M.load(c.path)
    if map then return map, c.path end
    warn(err .. (list[i + 1] and "; falling back to " .. list[i + 1].path or "; no older checkpoint"))
  end
  return nil
end

return M
