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
