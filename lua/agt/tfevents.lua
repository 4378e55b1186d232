-- agt.tfevents — TensorBoard event files, written and read by agt itself (no TensorFlow).
--
-- An event file is a TFRecord stream: each record is
--   u64 length (LE) | u32 masked_crc32c(length bytes) | data | u32 masked_crc32c(data)
-- with masked(c) = ((c >> 15) | (c << 17)) + 0xa282ead8 (mod 2^32), CRC-32C (Castagnoli). Each
-- record's data is an `Event` protobuf (tensorflow/core/util/event.proto):
--   Event { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5;
--           SessionLog session_log = 7; }
--   Summary { repeated Value value = 1; }  Value { string tag = 1; float simple_value = 2; }
--   SessionLog { SessionStatus status = 1; }  (START = 1, STOP = 2, CHECKPOINT = 3)
-- The first event of a file carries file_version "brain.Event:2". The protobuf wire format is
-- encoded by hand: varint keys (field << 3 | wire type), wire types 0 (varint), 1 (64-bit),
-- 2 (length-delimited) and 5 (32-bit). The reader checks both CRCs of every record and refuses
-- a torn or corrupt one, so specs can prove that what the writer produced is well formed.
local ffi = require("ffi")
local U = require("agt.util")
local fs = require("agt.fs")
local bit = require("bit")
local band, bxor, rshift, lshift, bor = bit.band, bit.bxor, bit.rshift, bit.lshift, bit.bor

local M = {}

---------------------------------------------------------------------------------------------------
-- CRC-32C, reflected polynomial 0x82F63B78, one table lookup per byte

local crc_table = ffi.new("uint32_t[256]")
for i = 0, 255 do
  local c = i
  for _ = 1, 8 do
    if band(c, 1) ~= 0 then c = bxor(rshift(c, 1), 0x82F63B78) else c = rshift(c, 1) end
  end
  crc_table[i] = c
end

-- CRC-32C of a string, as a non-negative number below 2^32.
function M.crc32c(s)
  local p, c = ffi.cast("const uint8_t *", s), 0xFFFFFFFF
  for i = 0, #s - 1 do
    c = bxor(rshift(c, 8), crc_table[band(bxor(c, p[i]), 0xFF)])
  end
  c = bxor(c, 0xFFFFFFFF)
  return c < 0 and c + 4294967296 or c
end

function M.masked_crc32c(s)
  local c = M.crc32c(s)
  local r = bor(rshift(c, 15), lshift(c, 17))
  if r < 0 then r = r + 4294967296 end
  return (r + 0xa282ead8) % 4294967296
end

---------------------------------------------------------------------------------------------------
-- Little-endian fixed-width values

local u32buf, u64buf = ffi.new("uint32_t[1]"), ffi.new("uint64_t[1]")
local f32buf, f64buf = ffi.new("float[1]"), ffi.new("double[1]")

local function le32(x) u32buf[0] = x; return ffi.string(u32buf, 4) end
local function le64(x) u64buf[0] = x; return ffi.string(u64buf, 8) end
local function f32(x) f32buf[0] = x; return ffi.string(f32buf, 4) end
local function f64(x) f64buf[0] = x; return ffi.string(f64buf, 8) end
local function get_le32(s, i) ffi.copy(u32buf, s:sub(i, i + 3), 4); return tonumber(u32buf[0]) end
local function get_le64(s, i) ffi.copy(u64buf, s:sub(i, i + 7), 8); return tonumber(u64buf[0]) end
local function get_f32(s, i) ffi.copy(f32buf, s:sub(i, i + 3), 4); return tonumber(f32buf[0]) end
local function get_f64(s, i) ffi.copy(f64buf, s:sub(i, i + 7), 8); return tonumber(f64buf[0]) end

---------------------------------------------------------------------------------------------------
-- Protobuf encoding

local function varint(x)
  -- x is a non-negative integer (int64 steps fit in a double exactly up to 2^53)
  local out = {}
  repeat
    local b = x % 128
    x = math.floor(x / 128)
    out[#out + 1] = string.char(x > 0 and b + 128 or b)
  until x == 0
  return table.concat(out)
end

local function key(field, wire) return varint(field * 8 + wire) end
local function field_bytes(field, s) return key(field, 2) .. varint(#s) .. s end

-- Encodes an Event table: { wall_time = s, step = k, file_version = "...",
-- scalars = { {tag, value}, ... }, session_status = 1|2|3 }.
function M.encode_event(ev)
  local parts = { key(1, 1) .. f64(ev.wall_time or 0) }
  if ev.step and ev.step ~= 0 then parts[#parts + 1] = key(2, 0) .. varint(ev.step) end
  if ev.file_version then
    parts[#parts + 1] = field_bytes(3, ev.file_version)
  elseif ev.scalars then
    local values = {}
    for _, tv in ipairs(ev.scalars) do
      values[#values + 1] = field_bytes(1, field_bytes(1, tv[1]) .. key(2, 5) .. f32(tv[2]))
    end
    parts[#parts + 1] = field_bytes(5, table.concat(values))
  elseif ev.session_status then
    parts[#parts + 1] = field_bytes(7, key(1, 0) .. varint(ev.session_status))
  end
  return table.concat(parts)
end

function M.frame(data)
  local len = le64(#data)
  return len .. le32(M.masked_crc32c(len)) .. data .. le32(M.masked_crc32c(data))
end

---------------------------------------------------------------------------------------------------
-- Protobuf decoding (just what Event needs; unknown fields are skipped by wire type)

local function read_varint(s, i)
  local x, mul = 0, 1
  while true do
    local b = s:byte(i)
    if not b then error("truncated varint", 0) end
    x = x + (b % 128) * mul
    i = i + 1
    if b < 128 then return x, i end
    mul = mul * 128
    if mul > 2 ^ 63 then error("varint too long", 0) end
  end
end

-- Calls fn(field, wire, value) for each field of the message s; value is a number for varint,
-- the raw bytes for the others.
local function each_field(s, fn)
  local i = 1
  while i <= #s do
    local k
    k, i = read_varint(s, i)
    local field, wire = math.floor(k / 8), k % 8
    if wire == 0 then
      local v
      v, i = read_varint(s, i)
      fn(field, wire, v)
    elseif wire == 1 then
      if i + 7 > #s then error("truncated 64-bit field", 0) end
      fn(field, wire, s:sub(i, i + 7)); i = i + 8
    elseif wire == 5 then
      if i + 3 > #s then error("truncated 32-bit field", 0) end
      fn(field, wire, s:sub(i, i + 3)); i = i + 4
    elseif wire == 2 then
      local n
      n, i = read_varint(s, i)
      if i + n - 1 > #s then error("truncated length-delimited field", 0) end
      fn(field, wire, s:sub(i, i + n - 1)); i = i + n
    else
      error("unsupported wire type " .. wire, 0)
    end
  end
end

function M.decode_event(s)
  local ev = { step = 0 }
  each_field(s, function(field, wire, v)
    if field == 1 and wire == 1 then ev.wall_time = get_f64(v, 1)
    elseif field == 2 and wire == 0 then ev.step = v
    elseif field == 3 and wire == 2 then ev.file_version = v
    elseif field == 5 and wire == 2 then
      ev.scalars = ev.scalars or {}
      each_field(v, function(f2, w2, value)
        if f2 == 1 and w2 == 2 then
          local tag, val
          each_field(value, function(f3, w3, x)
            if f3 == 1 and w3 == 2 then tag = x
            elseif f3 == 2 and w3 == 5 then val = get_f32(x, 1) end
          end)
          ev.scalars[#ev.scalars + 1] = { tag, val }
        end
      end)
    elseif field == 7 and wire == 2 then
      each_field(v, function(f2, w2, x)
        if f2 == 1 and w2 == 0 then ev.session_status = x end
      end)
    end
  end)
  return ev
end

-- Reads a whole event file: list of events, or nil, message at the first bad record.
function M.read(path)
  local s, err = U.read_file(path)
  if not s then return nil, err end
  return M.parse(s)
end

-- The events of an event file's bytes, or nil, message at the first bad record.
function M.parse(s)
  local events, i, n = {}, 1, 0
  while i <= #s do
    n = n + 1
    if i + 11 > #s then return nil, string.format("record %d: truncated header", n) end
    local lenb = s:sub(i, i + 7)
    if get_le32(s, i + 8) ~= M.masked_crc32c(lenb) then
      return nil, string.format("record %d: length CRC mismatch", n)
    end
    local len = get_le64(s, i)
    local data_at = i + 12
    if data_at + len + 3 > #s then return nil, string.format("record %d: truncated data", n) end
    local data = s:sub(data_at, data_at + len - 1)
    if get_le32(s, data_at + len) ~= M.masked_crc32c(data) then
      return nil, string.format("record %d: data CRC mismatch", n)
    end
    local ok, ev = pcall(M.decode_event, data)
    if not ok then return nil, string.format("record %d: bad Event protobuf: %s", n, ev) end
    events[#events + 1] = ev
    i = data_at + len + 4
  end
  return events
end

---------------------------------------------------------------------------------------------------
-- Writer

local Writer = {}
Writer.__index = Writer

pcall(ffi.cdef, "int getpid(void);")
local opened = 0   -- event files opened by this process (the name's last part)

-- Raises, naming the file, when a write, flush or close failed (a full disk must not pass
-- for success).
local function checked(path, what, ok, err)
  if not ok then error(string.format("cannot %s %s: %s", what, path, tostring(err)), 0) end
  return ok
end

-- Opens a new event file in dir (created if needed), named as TensorFlow names them:
-- events.out.tfevents.<unix s>.<host>.<pid>.<counter>, so that runs at the same second, on
-- the same host or in the same process never share one.
function M.writer(dir, opts)
  opts = opts or {}
  local ok, err = fs.mkdir_p(dir)
  if not ok then return nil, err end
  local host = opts.host
  if not host then
    local f = io.open("/etc/hostname", "r")
    host = f and f:read("*l") or "localhost"
    if f then f:close() end
  end
  local now = opts.wall_time or os.time()
  local path
  repeat
    path = string.format("%s/events.out.tfevents.%d.%s.%d.%d%s", dir, math.floor(now), host,
                         ffi.C.getpid(), opened, opts.suffix or "")
    opened = opened + 1
    local taken = io.open(path, "rb")
    if taken then taken:close() end
  until not taken
  local f
  f, err = io.open(path, "wb")
  if not f then return nil, err end
  local w = setmetatable({ path = path, f = f }, Writer)
  local okw, werr = pcall(w.write_event, w, { wall_time = opts.wall_time or now,
                                              file_version = "brain.Event:2" })
  if not okw then f:close(); return nil, werr end
  return w
end

function Writer:write_event(ev)
  checked(self.path, "write", self.f:write(M.frame(M.encode_event(ev))))
end

-- scalars: list of {tag, value}.
function Writer:scalars(step, wall_time, scalars)
  self:write_event({ wall_time = wall_time, step = step, scalars = scalars })
end

function Writer:session_log(step, wall_time, status)
  self:write_event({ wall_time = wall_time, step = step, session_status = status })
end

function Writer:flush() checked(self.path, "write", self.f:flush()) end

function Writer:close()
  if self.f then
    local f = self.f
    self.f = nil
    checked(self.path, "write", f:close())
  end
end

M.checked = checked

M.START, M.STOP, M.CHECKPOINT = 1, 2, 3

return M
