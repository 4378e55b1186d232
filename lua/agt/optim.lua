-- agt.optim — optimizers (`--optimizer NAME --optimizer-args key:value …`).
--
--   local O = require("agt.optim")
--   local opt = O.new("adam", {"adam-beta1:0.9"}, d)   -- words or a key -> value table; d params
--   opt:step(theta, g, lr)     -- one fused C update of theta (f32 tensor of d) by g at rate lr
--   opt:state() -> string      -- exact bytes of the slots and the update count
--   opt:set_state(s)           -- refuses a state of another optimizer, size or format
--
-- Names, arguments and defaults are the original system's; the update formulas are
-- TensorFlow 1's (see src/optim.h). The slots (momentum, Adam's m and v, accumulators) are
-- f32 vectors of d values owned by the optimizer and saved with a checkpoint.
local ffi = require("ffi")
local F = require("agt.ffi")
local T = require("agt.tensor")
local kv = require("agt.kv")
local B = require("agt.backend")

local O = {}

local function unit(v) return v >= 0 and v < 1, "must be in [0, 1)" end
local function pos(v) return v > 0, "must be > 0" end
local function nonneg(v) return v >= 0, "must be >= 0" end

local SPECS = {
  sgd = {
    doc = "plain gradient descent; momentum > 0 adds TF's momentum accumulator (optionally Nesterov)",
    args = {
      { name = "momentum", default = 0, type = "number", check = nonneg, doc = "momentum factor (0 = none)" },
      { name = "nesterov", default = false, doc = "Nesterov momentum (needs momentum > 0)" },
    },
    slots = function(a) return a.momentum > 0 and { "momentum" } or {} end,
  },
  adam = {
    doc = "Adam (TF1 AdamOptimizer)",
    args = {
      { name = "adam-beta1", default = 0.9, type = "number", check = unit, doc = "decay of the first moment" },
      { name = "adam-beta2", default = 0.999, type = "number", check = unit, doc = "decay of the second moment" },
      { name = "opt-epsilon", default = 1e-8, type = "number", check = pos, doc = "denominator fuzz (TF default)" },
    },
    slots = function() return { "m", "v" } end,
  },
  adagrad = {
    doc = "Adagrad (TF1 AdagradOptimizer)",
    args = {
      { name = "initial-accumulator-value", default = 0.1, type = "number", check = pos,
        doc = "starting value of the squared-gradient accumulator" },
    },
    slots = function() return { "accumulator" } end,
  },
  adadelta = {
    doc = "Adadelta (TF1 AdadeltaOptimizer; the rate still scales the update, as in TF)",
    args = {
      { name = "adadelta-rho", default = 0.95, type = "number", check = unit, doc = "decay rate" },
      { name = "opt-epsilon", default = 1.0, type = "number", check = pos, doc = "conditioning constant" },
    },
    slots = function() return { "accum", "accum-update" } end,
  },
  rmsprop = {
    doc = "RMSProp (TF1 RMSPropOptimizer with its defaults; the mean square starts at 1)",
    args = {
      { name = "rmsprop-decay", default = 0.9, type = "number", check = unit, doc = "decay of the mean square" },
      { name = "rmsprop-momentum", default = 0.0, type = "number", check = nonneg, doc = "momentum" },
      { name = "opt-epsilon", default = 1e-10, type = "number", check = pos, doc = "denominator fuzz" },
      { name = "rmsprop-centered", default = false, doc = "centered variant (divides by the variance)" },
    },
    slots = function(a)
      return a["rmsprop-centered"] and { "ms", "mom", "mg" } or { "ms", "mom" }
    end,
  },
}
local NAMES = { "adadelta", "adagrad", "adam", "rmsprop", "sgd" }

function O.list() return { unpack(NAMES) } end
function O.spec(name) return SPECS[name] and SPECS[name].args end

local Opt = {}
Opt.__index = Opt

local fptr_t = ffi.typeof("float *")
local function ptr(t) return ffi.cast(fptr_t, t:pointer()) end   -- on the tensor's device

-- O.new(name, args, d): d = the number of parameters (slots are allocated for it).
function O.new(name, args, d)
  local s = SPECS[name]
  if not s then
    error(string.format("--optimizer: unknown optimizer '%s' (known: %s)", tostring(name),
                        table.concat(NAMES, ", ")), 2)
  end
  local a = kv.parse(args, s.args, "--optimizer-args (" .. name .. ")")
  if name == "sgd" and a.nesterov and a.momentum <= 0 then
    error("--optimizer-args (sgd): nesterov needs momentum > 0", 2)
  end
  if type(d) ~= "number" or d < 1 or d % 1 ~= 0 then
    error("optimizer needs the number of parameters d >= 1, got " .. tostring(d), 2)
  end
  local opt = setmetatable({ name = name, args = a, d = d, t = 0, slot_names = s.slots(a), slots = {} }, Opt)
  for i, sn in ipairs(opt.slot_names) do
    local v = T.new({ d })
    if (name == "adagrad" and sn == "accumulator") then v:fill(a["initial-accumulator-value"]) end
    if (name == "rmsprop" and sn == "ms") then v:fill(1) end
    opt.slots[i] = v
    opt.slots[sn] = v
  end
  return opt
end

-- One update: theta -= step(g, lr). theta and g: f32 tensors of d values.
function Opt:step(theta, g, lr)
  if not (T.is_tensor(theta) and T.is_tensor(g)) or theta:numel() ~= self.d or g:numel() ~= self.d then
    error(string.format("optimizer step needs theta and g as f32 tensors of %d values", self.d), 2)
  end
  if type(lr) ~= "number" or lr ~= lr then error("optimizer step needs a learning rate, got " .. tostring(lr), 2) end
  if theta.dev ~= g.dev then
    error(string.format("optimizer step: theta and g on two devices (%s and %s)", theta.device, g.device), 2)
  end
  -- the kernel comes from theta's device (an error naming op and device where it has none)
  local be = B.of(theta)
  local a, s, d = self.args, self.slots, self.d
  local n = self.name
  local op = n == "sgd" and a.momentum > 0 and "optim.momentum" or "optim." .. n
  local k = be:op(op, 2)
  for i, sn in ipairs(self.slot_names) do   -- the slots follow theta to its device (copied)
    if s[i].dev ~= theta.dev then
      s[i] = s[i]:to(theta.device)
      s[sn] = s[i]
    end
  end
  local th, gp = ptr(theta), ptr(g)
  self.t = self.t + 1
  if op == "optim.momentum" then
    k(th, ptr(s.momentum), gp, d, lr, a.momentum, a.nesterov and 1 or 0)
  elseif n == "sgd" then
    k(th, gp, d, lr)
  elseif n == "adam" then
    k(th, ptr(s.m), ptr(s.v), gp, d, lr, a["adam-beta1"], a["adam-beta2"], a["opt-epsilon"], self.t)
  elseif n == "adagrad" then
    k(th, ptr(s.accumulator), gp, d, lr)
  elseif n == "adadelta" then
    k(th, ptr(s.accum), ptr(s["accum-update"]), gp, d, lr, a["adadelta-rho"], a["opt-epsilon"])
  else
    k(th, ptr(s.ms), s.mg and ptr(s.mg) or nil, ptr(s.mom), gp, d, lr,
      a["rmsprop-decay"], a["rmsprop-momentum"], a["opt-epsilon"])
  end
end

-- "agt-optim 1 <name> <d> <t> <nslots>\n" then the slots' raw float32 bytes, in order.
function Opt:state()
  local parts = { string.format("agt-optim 1 %s %d %d %d\n", self.name, self.d, self.t, #self.slots) }
  for i, v in ipairs(self.slots) do parts[i + 1] = ffi.string((v.device == "cpu" and v or v:to("cpu")).data, self.d * 4) end
  return table.concat(parts)
end

function Opt:set_state(str)
  if type(str) ~= "string" then error("optimizer state must be a string, got " .. type(str), 2) end
  local name, d, t, ns, rest = str:match("^agt%-optim 1 (%S+) (%d+) (%d+) (%d+)\n()")
  if not name then error("optimizer state: not an agt optimizer state", 2) end
  d, t, ns = tonumber(d), tonumber(t), tonumber(ns)
  if name ~= self.name or d ~= self.d or ns ~= #self.slots then
    error(string.format("optimizer state is for %s with d=%d and %d slots; this is %s with d=%d and %d slots",
                        name, d, ns, self.name, self.d, #self.slots), 2)
  end
  if #str - rest + 1 ~= ns * d * 4 then
    error(string.format("optimizer state is truncated or padded: %d bytes of slots, expected %d",
                        #str - rest + 1, ns * d * 4), 2)
  end
  for i, v in ipairs(self.slots) do
    if v.device ~= "cpu" then   -- restored on the host; the next step moves it to theta's device
      v = T.new({ d })
      self.slots[i], self.slots[self.slot_names[i]] = v, v
    end
    ffi.copy(v.data, ffi.cast("const char *", str) + (rest - 1) + (i - 1) * d * 4, d * 4)
  end
  self.t = t
end

function O.help()
  local out = { "Optimizers (--optimizer NAME --optimizer-args key:value ...), TF1 update rules:" }
  for _, n in ipairs(NAMES) do
    out[#out + 1] = string.format("\n%s — %s", n, SPECS[n].doc)
    out[#out + 1] = kv.help(SPECS[n].args, "  ")
  end
  return table.concat(out, "\n")
end

return O
