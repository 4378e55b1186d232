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

function Rng:uniform(t, lo, hi) C.agt_rng_uniform(self.s, t.raw, t.n, lo or 0, hi or 1); return t end
function Rng:normal(t, mean, std) C.agt_rng_normal(self.s, t.raw, t.n, mean or 0, std or 1); return t end
function Rng:truncnormal(t, mean, std) C.agt_rng_truncnormal(self.s, t.raw, t.n, mean or 0, std or 1); return t end
function Rng:double() return C.agt_rng_double(self.s) end
function Rng:normal1() return C.agt_rng_normal1(self.s) end
function Rng:gamma(shape) return C.agt_rng_gamma(self.s, shape) end
function Rng:u32() return tonumber(C.agt_rng_u32(self.s)) end

function Rng:below(n)
  if n < 1 then error("below(n) needs n >= 1, got " .. tostring(n), 2) end
  return tonumber(C.agt_rng_below(self.s, n))
end

function Rng:permutation(n)
  local t = require("agt.tensor").new({ n }, "i64")
  C.agt_rng_permutation(self.s, t.raw, n)
  return t
end

function Rng:shuffle(t)
  if t.dtype ~= "i64" then error("shuffle needs an i64 tensor, got " .. t.dtype, 2) end
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
