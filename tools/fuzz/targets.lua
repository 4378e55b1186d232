-- What `make fuzz` feeds: each function takes the fuzzer's bytes and must return for any of
-- them. A refusal is fine (nil, message or, for a validator, an error that names the problem);
-- an internal Lua error (indexing nil, a bad argument to a library function, an overflow)
-- escaping is a bug and fails the run.
local K = require("agt.checkpoint")
local TF = require("agt.tfevents")
local AT = require("agt.attacks")
local KV = require("agt.kv")

local M = {}

local INTERNAL = { "attempt to", "bad argument", "table overflow", "stack overflow",
                   "not enough memory", "string length overflow", "invalid value" }

-- Runs fn(...); an error is accepted only when it is a message of agt's own.
local function refusal_only(fn, ...)
  local ok, err = pcall(fn, ...)
  if ok then return end
  local msg = tostring(err)
  for _, p in ipairs(INTERNAL) do
    if msg:find(p, 1, true) then error("internal error instead of a refusal: " .. msg, 0) end
  end
end

-- The checkpoint reader: decoding and every field's check.
function M.checkpoint(s)
  local map = K.decode(s)
  if not map then
    -- most inputs fail the checksum: also decode them with a right one
    if #s >= 8 then map = K.decode(s .. K.sha256(s)) end
    if not map then map = K.decode("AGTCKPT\1" .. s .. K.sha256("AGTCKPT\1" .. s)) end
  end
  if map then
    local ok, why = K.check_state(map, { step = 20, d = 3, n = 2, rng_bytes = 52 })
    assert(ok or type(why) == "string")
  end
end

-- The event file reader: TFRecord framing and Event protobufs.
function M.tfevents(s)
  local ev, err = TF.parse(s)
  assert(ev or type(err) == "string")
end

-- A little value language: the bytes choose types and contents, so that plugin tables take
-- every shape (missing fields, wrong types, nested lists).
local function gen(s)
  local i = 0
  local function byte() i = i + 1; return s:byte(i) or 0 end
  local function str()
    local n = byte() % 12
    local t = {}
    for k = 1, n do t[k] = string.char(32 + byte() % 95) end
    return table.concat(t)
  end
  local value
  local FIELDS = { "name", "kind", "apply", "poison", "args", "default", "type", "choices",
                   "doc", "auto", "min", "max" }
  value = function(depth)
    local c = byte() % (depth > 3 and 6 or 8)
    if c == 0 then return nil
    elseif c == 1 then return byte() - 128
    elseif c == 2 then return ({ 0 / 0, 1 / 0, -1 / 0, 0.5, 2 ^ 53 })[byte() % 5 + 1]
    elseif c == 3 then return str()
    elseif c == 4 then return ({ "gradient", "data", "label-flip", "poison-data", "number",
                                 "integer", "string", "boolean", "x" })[byte() % 9 + 1]
    elseif c == 5 then return byte() % 2 == 0 and function() end or (byte() % 2 == 0)
    elseif c == 6 then
      local t = {}
      for _ = 1, byte() % 4 do t[#t + 1] = value(depth + 1) end
      return t
    else
      local t = {}
      for _ = 1, byte() % 6 do t[FIELDS[byte() % #FIELDS + 1]] = value(depth + 1) end
      return t
    end
  end
  return value, byte, str
end

-- The plugin-table validators (an attack's table) and the key:value argument parser (agt.kv).
function M.plugin(s)
  local value, byte, str = gen(s)
  local def = value(0)
  local words = {}
  for k = 1, byte() % 4 do words[k] = str() .. (byte() % 2 == 0 and ":" or "") .. str() end
  local ok, d = pcall(AT.load, def)
  refusal_only(AT.load, def)
  -- a table the validator took: its arguments parsed from key:value words
  if ok and type(d) == "table" then refusal_only(KV.parse, words, d.args, "fuzz", { n = 5, f = 1 }) end
end

return M
