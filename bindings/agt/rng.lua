-- agt.rng — seeded counter-based random streams (src/rng.h).
--
-- A stream is (seed, stream id). The state is a plain struct: :state() returns its exact
-- bytes and :set_state() puts them back, so a resumed run continues the same sequence.
local F = require("agt.ffi")
local ffi, C = F.ffi, F.C

local R = {}
local Rng = {}
Rng.__index = Rng

local rng_t = ffi.typeof("agt_rng")
local STATE_SIZE = ffi.sizeof(rng_t)

-- A stable 53-bit id for a named purpose and an index (FNV-1a of the name, then the index).
function R.stream_id(name, i)
  local h = 2166136261
  for c in tostring(name):gmatch(".") do
    h = bit.bxor(h, c:byte())
    h = (h * 16777619) % 4294967296
  end
  return h * 1048576 + (i or 0)
end

function R.new(seed, stream)
  seed = seed or 0
  if type(stream) == "string" then stream = R.stream_id(stream) end
  local s = rng_t()
  C.agt_rng_init(s, seed, stream or 0)
  return setmetatable({ s = s }, Rng)
end

-- The f32 tensor a fill writes (n floats: an i32/u8/i64 tensor would get float bits, a u8
-- one past its end), and its two numeric parameters.
local function f32_fill(t, a, b, what)
  local T = require("agt.tensor")
  if not T.is_tensor(t) or t.dtype ~= "f32" then
    error(string.format("%s needs an f32 tensor, got %s", what, T.is_tensor(t) and t.dtype .. " tensor" or type(t)), 3)
  end
  if type(a) ~= "number" or type(b) ~= "number" then
    error(string.format("%s: its parameters must be numbers, got %s and %s", what, type(a), type(b)), 3)
  end
end

function Rng:uniform(t, lo, hi)
  lo, hi = lo or 0, hi or 1
  f32_fill(t, lo, hi, "uniform")
  C.agt_rng_uniform(self.s, t.raw, t.n, lo, hi)
  return t
end
function Rng:normal(t, mean, std)
  mean, std = mean or 0, std or 1
  f32_fill(t, mean, std, "normal")
  C.agt_rng_normal(self.s, t.raw, t.n, mean, std)
  return t
end
function Rng:truncnormal(t, mean, std)
  mean, std = mean or 0, std or 1
  f32_fill(t, mean, std, "truncnormal")
  C.agt_rng_truncnormal(self.s, t.raw, t.n, mean, std)
  return t
end
function Rng:double() return C.agt_rng_double(self.s) end
function Rng:normal1() return C.agt_rng_normal1(self.s) end
function Rng:gamma(shape)
  if type(shape) ~= "number" then error("gamma(shape) needs a number, got " .. type(shape), 2) end
  return C.agt_rng_gamma(self.s, shape)
end
function Rng:u32() return tonumber(C.agt_rng_u32(self.s)) end

function Rng:below(n)
  if type(n) ~= "number" or n ~= math.floor(n) or n < 1 or n > 2 ^ 53 then
    error("below(n) needs an integer n >= 1, got " .. tostring(n), 2)
  end
  return tonumber(C.agt_rng_below(self.s, n))
end

function Rng:permutation(n)
  if type(n) ~= "number" or n ~= math.floor(n) or n < 0 or n > 2 ^ 53 then
    error("permutation(n) needs an integer n >= 0, got " .. tostring(n), 2)
  end
  local t = require("agt.tensor").new({ n }, "i64")
  C.agt_rng_permutation(self.s, t.raw, n)
  return t
end

function Rng:shuffle(t)
  if not require("agt.tensor").is_tensor(t) or t.dtype ~= "i64" then
    error("shuffle needs an i64 tensor, got " .. (type(t) == "cdata" and t.dtype or type(t)), 2)
  end
  C.agt_rng_shuffle_i64(self.s, t.raw, t.n)
  return t
end

function Rng:state() return ffi.string(self.s, STATE_SIZE) end

function Rng:set_state(str)
  if type(str) ~= "string" or #str ~= STATE_SIZE then
    error(string.format("rng state must be a string of %d bytes, got %s", STATE_SIZE,
                        type(str) == "string" and (#str .. " bytes") or type(str)), 2)
  end
  ffi.copy(self.s, str, STATE_SIZE)
  return self
end

function Rng:clone()
  local c = R.new(0, 0)
  ffi.copy(c.s, self.s, STATE_SIZE)
  return c
end

R.STATE_SIZE = STATE_SIZE
return R
