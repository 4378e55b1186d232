-- Writes the seed corpus of `make fuzz` under DIR/<target>/: valid inputs to mutate from.
local dir = assert(arg[1], "usage: agt tools/fuzz/seeds.lua DIR")
local K = require("agt.checkpoint")
local TF = require("agt.tfevents")
local function put(target, name, bytes)
  os.execute("mkdir -p '" .. dir .. "/" .. target .. "'")
  local f = assert(io.open(dir .. "/" .. target .. "/" .. name, "wb"))
  f:write(bytes)
  f:close()
end
put("checkpoint", "state", K.encode({ step = "20", d = "3", theta = string.rep("\0", 12),
  optimizer = "", ["rng.rule"] = string.rep("r", 52), ["rng.attack"] = string.rep("a", 52),
  ["worker.1"] = "w1", ["worker.2"] = "w2", ["config.seed"] = "1" }))
put("checkpoint", "empty", K.encode({}))
local ev = TF.frame(TF.encode_event({ wall_time = 1, file_version = "brain.Event:2" }))
  .. TF.frame(TF.encode_event({ wall_time = 2, step = 7, scalars = { { "loss", 0.5 } } }))
  .. TF.frame(TF.encode_event({ wall_time = 3, step = 8, session_status = TF.STOP }))
put("tfevents", "run", ev)
put("plugin", "a", "\7\3\0\4\1\6\2\1\3\4name\5")
put("plugin", "b", string.rep("\6\7\2", 20))
-- net: a state byte (bit 0: a session is set; bits 1-2: the payload cap, 0/16/1024/any; bit 3:
-- chunks taken), then a frame as src/net.h lays it out (little-endian), well-formed.
local function le(v, n)
  local t = {}
  for k = 1, n do t[k] = string.char(v % 256); v = math.floor(v / 256) end
  return table.concat(t)
end
local SESSION = "\x88\x77\x66\x55\x44\x33\x22\x11"
local function frame(state, typ, session, payload, chunk, len)
  return string.char(state) .. "AGTN" .. le(2, 2) .. le(typ, 2) .. le(3, 4) .. le(chunk or 0, 4) .. session
    .. le(7, 8) .. le(0, 8) .. le(len or #payload, 8) .. payload
end
put("net", "hello", frame(1, 1, string.rep("\0", 8), ""))
put("net", "grad", frame(5, 5, SESSION, string.rep("\0\0\128\63", 4)))
put("net", "config", frame(4, 2, string.rep("\0", 8), '{"worker": 3, "d": 10}'))
put("net", "chunk", frame(15, 5, SESSION, string.rep("\1", 16), 2, 2 * 1048576 + 16))
put("net", "short", frame(6, 4, SESSION, ""):sub(1, 30))
-- net-chunks (tools/fuzz/net.c's other target): operations, each a byte (mod 3) then its
-- arguments: 1 expect (type - 1, step, size code), 2 unexpect, 0 a frame (its 48-byte header, a
-- size mode: 0 its chunk's size, and a fill byte). A GRAD of step 5 and 3.25 chunks into the
-- destination (size code 4): chunk 2 out of order, then whole, then whole again (not there: once);
-- θ of 100 bytes at any step (step code 7, size code 1), twice; a GRAD under way there when the
-- destination ends.
local function hdr(typ, chunk, step, len)
  return "AGTN" .. le(2, 2) .. le(typ, 2) .. le(3, 4) .. le(chunk, 4) .. string.rep("\0", 8) .. le(step, 8)
    .. le(0, 8) .. le(len, 8)
end
local CAP = 3 * 1048576 + 262144
local ops = { "\1\4\5\4" }
local function grad(c, fill) ops[#ops + 1] = "\0" .. hdr(5, c, 5, CAP) .. "\0" .. string.char(fill or c + 1) end
for _, c in ipairs({ 0, 2, 0, 1, 2, 3, 0, 1, 2, 3 }) do grad(c) end
ops[#ops + 1] = "\2\1\3\7\1" .. ("\0" .. hdr(4, 0, 9, 100) .. "\0\9"):rep(2) .. "\2\1\4\5\4"
grad(0, 20)
ops[#ops + 1] = "\2"
for _, c in ipairs({ 1, 2, 3 }) do grad(c, 20 + c) end
put("net-chunks", "assembly", table.concat(ops))
