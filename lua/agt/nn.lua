-- agt.nn — models built from layers, over ONE flat parameter vector.
--
--   local nn = require("agt.nn")
--   local model = nn.sequential({1, 28, 28}, {          -- per-example input shape (C, H, W)
--     nn.conv2d(32, { kernel = 5, padding = "SAME" }), nn.relu(), nn.maxpool({ kernel = 2 }),
--     nn.flatten(), nn.linear(10),
--   })
--   model.d                                  -- number of parameters
--   model:init(theta, rng)                   -- theta: f32 tensor of model.d values
--   local loss = model:loss_grad(theta, x, y, B, grad [, rng])   -- grad: f32 tensor of d
--
-- Invariants. Shapes are inferred from the input shape, layer by layer. Every layer's
-- parameters are a slice of θ at a fixed offset (layer order, weight before bias), and
-- every kernel reads them in place from whatever θ it is given; the gradient is written
-- (overwritten, every slice) into the caller's flat vector, so a row of the n×d gradient
-- matrix is filled with no copy. Activations and scratch live in buffers owned by the
-- model and reused from call to call (one call at a time per model). An activation that
-- follows a linear or conv layer is fused into that layer's bias pass and its backward
-- runs in place.
--
-- One file (over 500 lines) on purpose: the layers and the model that chains them share a
-- private protocol (buffers grown per model, output geometry, an activation fused into the
-- layer before it, parameter offsets), which splitting would turn into a public one.
local ffi = require("ffi")
local F = require("agt.ffi")
local T = require("agt.tensor")
local Bk = require("agt.backend")
local C = F.C

local nn = { init = {} }

local fptr_t = ffi.typeof("float *")
local iptr_t = ffi.typeof("int32_t *")
local size2_t = ffi.typeof("size_t[2]")

local function numel(shape)
  local n = 1
  for _, v in ipairs(shape) do n = n * v end
  return n
end

local function shape_str(s) return "(" .. table.concat(s, ", ") .. ")" end

-- A growable scratch buffer on the device of self.be (the backend of the last forward's θ):
-- returns a pointer to at least n elements, made again when the device changed.
local function grow(self, key, n, dtype)
  local cap = self["_cap_" .. key] or 0
  if cap < n or self["_dev_" .. key] ~= self.be then
    local t = T.new({ math.max(n, 1) }, dtype or "f32", self.be.name)
    self["_buf_" .. key] = t
    self["_ptr_" .. key] = ffi.cast(dtype == "i32" and iptr_t or fptr_t, t:pointer())
    self["_cap_" .. key] = n
    self["_dev_" .. key] = self.be
  end
  return self["_ptr_" .. key]
end

---------------------------------------------------------------------------------------------
-- Initialisers: function(view, rng, fan_in, fan_out) filling the f32 view.

-- Glorot (Xavier) uniform: U(−l, l), l = √(6 / (fan_in + fan_out)). For a 1-D parameter
-- (a bias) fan_in = fan_out = its length, as TensorFlow computes it.
function nn.init.glorot_uniform()
  return function(view, rng, fan_in, fan_out)
    local l = math.sqrt(6 / (fan_in + fan_out))
    rng:uniform(view, -l, l)
  end, "glorot_uniform"
end

-- Normal(mean, stddev) re-drawn beyond two standard deviations (TensorFlow's truncated normal).
function nn.init.truncated_normal(stddev, mean)
  if type(stddev) ~= "number" or stddev <= 0 then
    error("truncated_normal needs a positive stddev, got " .. tostring(stddev), 2)
  end
  return function(view, rng) rng:truncnormal(view, mean or 0, stddev) end,
         string.format("truncated_normal(%g)", stddev)
end

-- He (Kaiming) normal: N(0, 2 / fan), fan = fan_in or, with mode "fan_out", fan_out (ResNet's).
function nn.init.he_normal(mode)
  if mode ~= nil and mode ~= "fan_in" and mode ~= "fan_out" then
    error("he_normal's mode must be 'fan_in' or 'fan_out', got " .. tostring(mode), 2)
  end
  return function(view, rng, fan_in, fan_out)
    rng:normal(view, 0, math.sqrt(2 / (mode == "fan_out" and fan_out or fan_in)))
  end, "he_normal(" .. (mode or "fan_in") .. ")"
end

function nn.init.constant(v)
  if type(v) ~= "number" then error("constant initialiser needs a number, got " .. tostring(v), 2) end
  return function(view) view:fill(v) end, string.format("constant(%g)", v)
end

function nn.init.zeros() return nn.init.constant(0) end

local function initialiser(x, default)
  if x == nil then return default end
  if type(x) == "function" then return x end
  if type(x) == "number" then return (nn.init.constant(x)) end
  error("an initialiser must be a function (nn.init.*) or a number, got " .. type(x), 3)
end

---------------------------------------------------------------------------------------------
-- Layers. Each has build(in_shape) -> out_shape and params (list of {name, shape, init,
-- fan_in, fan_out}); forward(th, x, B, ctx) -> y pointer; backward(th, g, x, y, dy, B,
-- need_dx) -> dx pointer (nil when not needed). th and g are float* of the whole vectors.

local ACT = { relu = 0, tanh = 1, sigmoid = 2 }

local Layer = {}
Layer.__index = Layer
function Layer:describe() return self.kind end

local function layer(kind, fields)
  fields.kind = kind
  return setmetatable(fields, Layer)
end

local function pair(v, what, kind)
  if type(v) == "number" then v = { v, v } end
  if type(v) ~= "table" or type(v[1]) ~= "number" or type(v[2]) ~= "number"
     or v[1] < 1 or v[2] < 1 or v[1] % 1 ~= 0 or v[2] % 1 ~= 0 then
    error(string.format("%s: %s must be a positive integer or a pair of them, got %s",
                        kind, what, tostring(v)), 3)
  end
  return v
end

local function padding_mode(p, kind, numeric)
  if numeric and type(p) == "number" then
    if p < 0 or p % 1 ~= 0 then error(kind .. ": padding must be 'SAME', 'VALID' or an integer >= 0, got " .. p, 3) end
    return p
  end
  p = tostring(p or "VALID"):upper()
  if p ~= "SAME" and p ~= "VALID" then
    error(kind .. ": padding must be 'SAME' or 'VALID', got '" .. tostring(p) .. "'", 3)
  end
  return p
end

local function geometry(kind, n, k, s, pad)
  if type(pad) == "number" then   -- p on both sides (PyTorch's padding = p)
    if n + 2 * pad < k then
      error(string.format("%s: kernel %d larger than the padded input %d + 2*%d", kind, k, n, pad), 4)
    end
    if pad >= k then error(string.format("%s: padding %d must be smaller than the kernel %d", kind, pad, k), 4) end
    return math.floor((n + 2 * pad - k) / s) + 1, pad
  end
  local o = size2_t()
  local st = C.agt_nn_conv_geometry(n, k, s, pad == "SAME" and 1 or 0, o, o + 1)
  if st ~= 0 then error(kind .. ": " .. F.errmsg(), 4) end
  return tonumber(o[0]), tonumber(o[1])
end

-- linear(out [, {bias = true, weight_init = init, bias_init = init}]): y = x·W + b,
-- W (in, out). The input is used flattened. Defaults: Glorot uniform weights, zero bias.
function nn.linear(out, opts)
  if type(out) ~= "number" or out < 1 or out % 1 ~= 0 then
    error("linear needs a positive number of outputs, got " .. tostring(out), 2)
  end
  opts = opts or {}
  local l = layer("linear", { nout = out, bias = opts.bias ~= false,
    winit = initialiser(opts.weight_init, (nn.init.glorot_uniform())),
    binit = initialiser(opts.bias_init, (nn.init.zeros())) })
  function l:build(in_shape)
    self.nin = numel(in_shape)
    self.params = { { name = "weight", shape = { self.nin, self.nout }, init = self.winit,
                      fan_in = self.nin, fan_out = self.nout } }
    if self.bias then
      self.params[2] = { name = "bias", shape = { self.nout }, init = self.binit,
                         fan_in = self.nout, fan_out = self.nout }
    end
    return { self.nout }
  end
  function l:forward(th, x, B)
    local y = grow(self, "y", B * self.nout)
    self.be:op("nn.linear_forward")(x, th + self.params[1].offset, nil, y, B, self.nin, self.nout)
    if self.bias or self.act then
      self.be:op("nn.bias_act")(y, self.bias and th + self.params[2].offset or nil, B, self.nout, 1,
                                self.act or -1)
    end
    return y
  end
  function l:backward(th, g, x, y, dy, B, need_dx)
    local dx = need_dx and grow(self, "dx", B * self.nin) or nil
    self.be:op("nn.linear_backward")(x, th + self.params[1].offset, dy, dx, g + self.params[1].offset,
                                     self.bias and g + self.params[2].offset or nil, B, self.nin, self.nout)
    return dx
  end
  function l:describe() return string.format("linear %d -> %d%s", self.nin, self.nout, self.bias and "" or " (no bias)") end
  return l
end

-- conv2d(out_channels, {kernel = 5 | {kh, kw}, stride = 1, padding = "SAME"|"VALID"|p (default
-- SAME; a number p pads p on every side, PyTorch's padding), bias = true, weight_init,
-- bias_init}) on (C, H, W) inputs; W is (OC, C, KH, KW).
function nn.conv2d(oc, opts)
  if type(oc) ~= "number" or oc < 1 or oc % 1 ~= 0 then
    error("conv2d needs a positive number of output channels, got " .. tostring(oc), 2)
  end
  opts = opts or {}
  local k = pair(opts.kernel or opts.kernel_size or 3, "kernel", "conv2d")
  local s = pair(opts.stride or 1, "stride", "conv2d")
  local l = layer("conv2d", { oc = oc, kh = k[1], kw = k[2], sh = s[1], sw = s[2],
    padding = padding_mode(opts.padding or "SAME", "conv2d", true), bias = opts.bias ~= false,
    winit = initialiser(opts.weight_init, (nn.init.glorot_uniform())),
    binit = initialiser(opts.bias_init, (nn.init.zeros())) })
  function l:build(in_shape)
    if #in_shape ~= 3 then
      error("conv2d needs (C, H, W) inputs, got " .. shape_str(in_shape), 0)
    end
    self.c, self.h, self.w = in_shape[1], in_shape[2], in_shape[3]
    self.oh, self.pt = geometry("conv2d", self.h, self.kh, self.sh, self.padding)
    self.ow, self.pl = geometry("conv2d", self.w, self.kw, self.sw, self.padding)
    local recept = self.kh * self.kw
    self.params = { { name = "weight", shape = { self.oc, self.c, self.kh, self.kw }, init = self.winit,
                      fan_in = self.c * recept, fan_out = self.oc * recept } }
    if self.bias then
      self.params[2] = { name = "bias", shape = { self.oc }, init = self.binit,
                         fan_in = self.oc, fan_out = self.oc }
    end
    return { self.oc, self.oh, self.ow }
  end
  function l:forward(th, x, B)
    local P = self.oh * self.ow
    local conv = self.be:op("nn.conv2d_forward")   -- before the buffers: a device may lack it
    local y = grow(self, "y", B * self.oc * P)
    -- the CPU keeps the unfolded patches from forward to backward; the device unfolds into its
    -- own scratch arena (src/gpu_nn.h) and needs no buffer here
    local col = self.be.name == "cpu" and grow(self, "col", tonumber(C.agt_nn_conv2d_scratch(B, self.c,
                  self.h, self.w, self.oc, self.kh, self.kw, self.sh, self.sw, self.oh, self.ow))) or nil
    conv(x, th + self.params[1].offset, self.bias and th + self.params[2].offset or nil,
         y, col, B, self.c, self.h, self.w, self.oc, self.kh, self.kw, self.sh,
         self.sw, self.pt, self.pl, self.oh, self.ow, self.act or -1)
    if self.be.say_conv_path then self.be.say_conv_path() end   -- cuDNN or im2col, once, after
    return y                                                     -- the first one ran
  end
  function l:backward(th, g, x, y, dy, B, need_dx)
    local dx = need_dx and grow(self, "dx", B * self.c * self.h * self.w) or nil
    self.be:op("nn.conv2d_backward")(x, th + self.params[1].offset, dy, dx, g + self.params[1].offset,
                                     self.bias and g + self.params[2].offset or nil,
                                     self.be.name == "cpu" and self._ptr_col or nil,
                                     B, self.c, self.h, self.w, self.oc, self.kh, self.kw, self.sh,
                                     self.sw, self.pt, self.pl, self.oh, self.ow)
    return dx
  end
  function l:describe()
    return string.format("conv2d %dx%d %d -> %d, stride %dx%d, %s%s", self.kh, self.kw, self.c, self.oc,
                         self.sh, self.sw, type(self.padding) == "number" and "padding " or "", self.padding)
  end
  return l
end

local function pool(kind, opts)
  opts = opts or {}
  local k = pair(opts.kernel or opts.kernel_size or 2, "kernel", kind)
  local s = pair(opts.stride or k, "stride", kind)
  local l = layer(kind, { kh = k[1], kw = k[2], sh = s[1], sw = s[2],
                          padding = padding_mode(opts.padding, kind) })
  function l:build(in_shape)
    if #in_shape ~= 3 then error(kind .. " needs (C, H, W) inputs, got " .. shape_str(in_shape), 0) end
    self.c, self.h, self.w = in_shape[1], in_shape[2], in_shape[3]
    self.oh, self.pt = geometry(kind, self.h, self.kh, self.sh, self.padding)
    self.ow, self.pl = geometry(kind, self.w, self.kw, self.sw, self.padding)
    self.params = {}
    return { self.c, self.oh, self.ow }
  end
  function l:describe()
    return string.format("%s %dx%d, stride %dx%d, %s", kind, self.kh, self.kw, self.sh, self.sw, self.padding)
  end
  return l
end

-- maxpool({kernel = 2, stride = kernel, padding = "VALID"|"SAME"}): padding never wins.
function nn.maxpool(opts)
  local l = pool("maxpool", opts)
  function l:forward(th, x, B)
    local n = B * self.c * self.oh * self.ow
    local y, idx = grow(self, "y", n), grow(self, "idx", n, "i32")
    self.be:op("nn.maxpool_forward")(x, y, idx, B * self.c, self.h, self.w, self.kh, self.kw,
                                     self.sh, self.sw, self.pt, self.pl, self.oh, self.ow)
    return y
  end
  function l:backward(th, g, x, y, dy, B, need_dx)
    if not need_dx then return nil end
    local dx = grow(self, "dx", B * self.c * self.h * self.w)
    self.be:op("nn.maxpool_backward")(dy, self._ptr_idx, self.relu_before and y or nil, dx, B * self.c,
                                      self.h, self.w, self.kh, self.kw, self.sh, self.sw, self.pt,
                                      self.pl, self.oh, self.ow)
    return dx
  end
  return l
end

-- avgpool({kernel = 2, stride = kernel, padding = "VALID"|"SAME"}): padding is not counted.
function nn.avgpool(opts)
  local l = pool("avgpool", opts)
  function l:forward(th, x, B)
    local y = grow(self, "y", B * self.c * self.oh * self.ow)
    self.be:op("nn.avgpool_forward")(x, y, B * self.c, self.h, self.w, self.kh, self.kw,
                                     self.sh, self.sw, self.pt, self.pl, self.oh, self.ow)
    return y
  end
  function l:backward(th, g, x, y, dy, B, need_dx)
    if not need_dx then return nil end
    local dx = grow(self, "dx", B * self.c * self.h * self.w)
    self.be:op("nn.avgpool_backward")(dy, dx, B * self.c, self.h, self.w, self.kh, self.kw,
                                      self.sh, self.sw, self.pt, self.pl, self.oh, self.ow)
    return dx
  end
  return l
end

local function activation(name)
  local code = ACT[name]
  local l = layer(name, { code = code })
  function l:build(in_shape)
    self.n = numel(in_shape)
    self.params = {}
    return in_shape
  end
  function l:forward(th, x, B)
    if self.fused then return x end       -- applied by the previous layer's bias pass
    local y = grow(self, "y", B * self.n)
    self.be:op("nn.act_forward")(code, x, y, B * self.n)
    return y
  end
  function l:backward(th, g, x, y, dy, B, need_dx)
    if not need_dx then return nil end
    if self.folded then return dy end   -- the max-pool after it applied the ReLU mask
    self.be:op("nn.act_backward")(code, y, dy, dy, B * self.n)   -- in place: dy is ours alone
    return dy
  end
  return l
end

function nn.relu() return activation("relu") end
function nn.tanh() return activation("tanh") end
function nn.sigmoid() return activation("sigmoid") end

-- dropout(p): in training, zeroes each value with probability p and scales the others by
-- 1/(1−p), drawing from the random stream the caller passes (a worker's own); identity in
-- evaluation.
function nn.dropout(p)
  if type(p) ~= "number" or p < 0 or p >= 1 then
    error("dropout needs a rate in [0, 1), got " .. tostring(p), 2)
  end
  local l = layer("dropout", { p = p })
  function l:build(in_shape)
    self.n = numel(in_shape)
    self.params = {}
    return in_shape
  end
  function l:forward(th, x, B, ctx)
    if not ctx.train or ctx.recalibrate or self.p == 0 then self.active = false; return x end
    if not ctx.rng then error("dropout needs a random stream in training (pass rng)", 0) end
    self.active = true
    local n = B * self.n
    local y, mask = grow(self, "y", n), grow(self, "mask", n)
    self.be:op("nn.dropout_forward")(x, y, mask, n, self.p, ctx.rng)
    return y
  end
  function l:backward(th, g, x, y, dy, B, need_dx)
    if not need_dx then return nil end
    if self.active then self.be:op("nn.dropout_backward")(dy, self._ptr_mask, dy, B * self.n) end
    return dy
  end
  function l:describe() return string.format("dropout %g", self.p) end
  return l
end

-- batchnorm({momentum = 0.1, eps = 1e-5}) on (C, H, W) (per channel) or (n) (per feature)
-- inputs: y = weight·(x − mean)/√(var + eps) + bias, weight 1 and bias 0 at init (in θ,
-- trained and aggregated like any parameter). In training the batch's own statistics
-- normalise (each worker's batch: the statistics are per worker), and the layer's running
-- statistics (mean 0 and variance 1 at first; not in θ) move by momentum toward them
-- (PyTorch's rule, the variance unbiased); evaluation normalises with the running statistics.
-- An activation right after it is fused into its pass. Model:recalibrate sets the running
-- statistics from batches at a given θ (the evaluator's way: see docs/learning.md).
function nn.batchnorm(opts)
  opts = opts or {}
  local mom, eps = opts.momentum or 0.1, opts.eps or 1e-5
  if type(mom) ~= "number" or mom < 0 or mom > 1 then
    error("batchnorm: momentum must be a number in [0, 1], got " .. tostring(mom), 2)
  end
  if type(eps) ~= "number" or not (eps > 0) then error("batchnorm: eps must be > 0, got " .. tostring(eps), 2) end
  local l = layer("batchnorm", { momentum = mom, eps = eps })
  function l:build(in_shape)
    if #in_shape == 3 then
      self.c, self.s = in_shape[1], in_shape[2] * in_shape[3]
    elseif #in_shape == 1 then
      self.c, self.s = in_shape[1], 1
    else
      error("batchnorm needs (C, H, W) or (n) inputs, got " .. shape_str(in_shape), 0)
    end
    local c = self.c
    self.params = { { name = "weight", shape = { c }, init = (nn.init.constant(1)), fan_in = c, fan_out = c },
                    { name = "bias", shape = { c }, init = (nn.init.zeros()), fan_in = c, fan_out = c } }
    self.run_mean, self.run_var = nil, nil
    return in_shape
  end
  -- The running statistics on the layer's device (made there at the first use; moved with the model).
  function l:running()
    if not self.run_mean then
      self.run_mean, self.run_var = T.new({ self.c }):fill(0), T.new({ self.c }):fill(1)
    end
    if Bk.of(self.run_mean) ~= self.be then
      self.run_mean, self.run_var = self.run_mean:to(self.be.name), self.run_var:to(self.be.name)
    end
    return ffi.cast(fptr_t, self.run_mean:pointer()), ffi.cast(fptr_t, self.run_var:pointer())
  end
  function l:forward(th, x, B, ctx)
    local y = grow(self, "y", B * self.c * self.s)
    local rm, rv = self:running()
    local mean, invstd
    if ctx.train then mean, invstd = grow(self, "mean", self.c), grow(self, "invstd", self.c) end
    self.be:op("nn.batchnorm_forward")(x, th + self.params[1].offset, th + self.params[2].offset, y, mean,
                                       invstd, rm, rv, B, self.c, self.s, ctx.bn_momentum or self.momentum,
                                       self.eps, ctx.train and 1 or 0, self.act or -1)
    self.trained = ctx.train
    return y
  end
  function l:backward(th, g, x, y, dy, B, need_dx)
    if not self.trained then error("batchnorm: backward needs a forward in training mode", 0) end
    local dx = need_dx and grow(self, "dx", B * self.c * self.s) or nil
    self.be:op("nn.batchnorm_backward")(x, th + self.params[1].offset, dy, self._ptr_mean, self._ptr_invstd,
                                        dx, g + self.params[1].offset, g + self.params[2].offset, B, self.c, self.s)
    return dx
  end
  function l:describe() return string.format("batchnorm %d (momentum %g, eps %g)", self.c, self.momentum, self.eps) end
  return l
end

-- flatten(): (C, H, W) -> (C·H·W); the memory is already in that order, so it costs nothing.
function nn.flatten()
  local l = layer("flatten", {})
  function l:build(in_shape)
    self.params = {}
    return { numel(in_shape) }
  end
  function l:forward(th, x) return x end
  function l:backward(th, g, x, y, dy, B, need_dx) return need_dx and dy or nil end
  return l
end

-- How a layer works with the one before it in a chain: an activation after a linear, conv or
-- batch-norm layer is fused into that layer's pass; max(relu(z)) routes its gradient only where
-- the pooled max is > 0, so the max-pool's backward applies the ReLU mask and the ReLU's own
-- backward pass is skipped.
local FUSES = { linear = true, conv2d = true, batchnorm = true }

local function link(prev, l)
  if ACT[l.kind] and prev and FUSES[prev.kind] and not prev.act then
    prev.act = ACT[l.kind]
    l.fused = true
  end
  if l.kind == "maxpool" and prev and prev.kind == "relu" then
    l.relu_before = true
    prev.folded = true
  end
end

-- residual(body, shortcut, {act = "relu"}): y = act(body(x) + shortcut(x)), body and shortcut
-- lists of layers ({} or nil: the identity) whose outputs have the same shape; act "none" for
-- no activation. ResNet's basic block is residual({conv, batchnorm, relu, conv, batchnorm},
-- {} or {1x1 conv, batchnorm}). The parameters are the body's, then the shortcut's. The last
-- layer of either may not be an activation or dropout (the sum takes the activation; their
-- backward would write over the gradient both branches read).
function nn.residual(body, shortcut, opts)
  shortcut, opts = shortcut or {}, opts or {}
  for what, list in pairs({ body = body, shortcut = shortcut }) do
    if type(list) ~= "table" then error("residual: " .. what .. " must be a list of layers", 2) end
    for i, sub in ipairs(list) do
      if getmetatable(sub) ~= Layer then error(string.format("residual: %s layer %d is not an nn layer", what, i), 2) end
    end
    local last = list[#list]
    if last and (ACT[last.kind] or last.kind == "dropout") then
      error("residual: the last layer of the " .. what .. " may not be " .. last.kind
            .. " (the residual applies the activation after the sum)", 2)
    end
  end
  if #body == 0 then error("residual needs a body of at least one layer", 2) end
  local act = opts.act or "relu"
  if act ~= "none" and not ACT[act] then
    error("residual: act must be relu, tanh, sigmoid or none, got " .. tostring(act), 2)
  end
  local l = layer("residual", { body = body, shortcut = shortcut, act = ACT[act], act_name = act })
  function l:build(in_shape)
    local params = {}
    local function chain(list, name)
      local shape = in_shape
      for i, sub in ipairs(list) do
        sub.in_shape = shape
        local ok, out = pcall(sub.build, sub, shape)
        if not ok then error(string.format("%s layer %d (%s): %s", name, i, sub.kind, out), 0) end
        sub.out_shape = out
        for _, p in ipairs(sub.params) do
          p.name = name .. i .. "." .. p.name
          params[#params + 1] = p
        end
        link(list[i - 1], sub)
        shape = out
      end
      return shape
    end
    local a, b = chain(self.body, "body"), chain(self.shortcut, "shortcut")
    if shape_str(a) ~= shape_str(b) then
      error(string.format("residual: the body gives %s, the shortcut %s", shape_str(a), shape_str(b)), 0)
    end
    self.params = params
    self.n_in, self.n_out = numel(in_shape), numel(a)
    return a
  end
  local function run(self, list, key, th, x, B, ctx)
    local acts = self[key] or {}
    self[key] = acts
    acts[0] = x
    for i, sub in ipairs(list) do
      sub.be = self.be
      acts[i] = sub:forward(th, acts[i - 1], B, ctx)
    end
    return acts[#list]
  end
  function l:forward(th, x, B, ctx)
    local a = run(self, self.body, "_acts_body", th, x, B, ctx)
    local b = run(self, self.shortcut, "_acts_short", th, x, B, ctx)
    local y = grow(self, "y", B * self.n_out)
    self.be:op("nn.add_act")(a, b, y, B * self.n_out, self.act or -1)
    return y
  end
  local function back(list, acts, th, g, dy, B, need_dx)
    local d = dy
    for i = #list, 1, -1 do d = list[i]:backward(th, g, acts[i - 1], acts[i], d, B, i > 1 or need_dx) end
    return d
  end
  function l:backward(th, g, x, y, dy, B, need_dx)
    if self.act then self.be:op("nn.act_backward")(self.act, y, dy, dy, B * self.n_out) end
    local da = back(self.body, self._acts_body, th, g, dy, B, need_dx)
    local db = back(self.shortcut, self._acts_short, th, g, dy, B, need_dx)
    if not need_dx then return nil end
    local dx = grow(self, "dx", B * self.n_in)
    self.be:op("nn.add_act")(da, db, dx, B * self.n_in, -1)
    return dx
  end
  function l:describe()
    local function kinds(list)
      local k = {}
      for _, sub in ipairs(list) do k[#k + 1] = sub.kind == "conv2d" and ("conv" .. sub.kh .. "x" .. sub.kw .. "/" .. sub.sh)
                                                 or sub.kind == "batchnorm" and "bn" or sub.kind end
      return table.concat(k, " ")
    end
    return string.format("residual %s + %s, %s", kinds(self.body),
                         #self.shortcut > 0 and kinds(self.shortcut) or "identity", self.act_name)
  end
  return l
end

---------------------------------------------------------------------------------------------
-- The sequential container.

local Model = {}
Model.__index = Model

-- nn.sequential(input_shape, layers): input_shape is per example, e.g. {1, 28, 28} or {784}.
function nn.sequential(input_shape, layers)
  if type(input_shape) ~= "table" or #input_shape == 0 then
    error("sequential needs the per-example input shape, e.g. {1, 28, 28}", 2)
  end
  if type(layers) ~= "table" or #layers == 0 then error("sequential needs a list of layers", 2) end
  local m = setmetatable({ input_shape = { unpack(input_shape) }, layers = {}, d = 0 }, Model)
  local shape = m.input_shape
  for i, l in ipairs(layers) do
    if getmetatable(l) ~= Layer then
      error(string.format("layer %d is not an nn layer (got %s)", i, type(l)), 2)
    end
    l.in_shape = shape
    local ok, out = pcall(l.build, l, shape)
    if not ok then error(string.format("layer %d (%s): %s", i, l.kind, out), 2) end
    l.out_shape = out
    for _, p in ipairs(l.params) do
      p.offset = m.d
      p.n = numel(p.shape)
      m.d = m.d + p.n
    end
    link(m.layers[i - 1], l)
    m.layers[i] = l
    shape = out
  end
  m.output_shape = shape
  m.classes = numel(shape)
  m.in_numel = numel(m.input_shape)
  return m
end

-- A tensor's pointer on its device (be: the device it must be on, that of θ); a raw pointer
-- is taken to be there.
local function on_device(v, be, what)
  if be and Bk.of(v) ~= be then
    error(string.format("%s is on %s but theta on %s: copy it with :to(\"%s\")", what, v.device,
                        be.name, be.name), 4)
  end
end

local function fptr(v, n, what, be)
  if T.is_tensor(v) then
    if v.dtype ~= "f32" then error(what .. " must be an f32 tensor, got " .. v.dtype, 3) end
    if n and v:numel() ~= n then
      error(string.format("%s must hold %d values, got %d", what, n, v:numel()), 3)
    end
    on_device(v, be, what)
    return ffi.cast(fptr_t, v:pointer())
  end
  if type(v) == "cdata" then return v end
  error(what .. " must be an f32 tensor, got " .. type(v), 3)
end

local function iptr(v, n, what, be)
  if T.is_tensor(v) then
    if v.dtype ~= "i32" then error(what .. " must be an i32 tensor, got " .. v.dtype, 3) end
    if n and v:numel() < n then error(string.format("%s must hold %d labels, got %d", what, n, v:numel()), 3) end
    on_device(v, be, what)
    return ffi.cast(iptr_t, v:pointer())
  end
  if type(v) == "cdata" then return v end
  error(what .. " must be an i32 tensor, got " .. type(v), 3)
end

-- Fills theta (f32 tensor of d) with each parameter's initialiser, in layer order.
function Model:init(theta, rng)
  fptr(theta, self.d, "theta")
  if not rng then error("init needs a random stream (agt.rng)", 2) end
  for _, l in ipairs(self.layers) do
    for _, p in ipairs(l.params) do
      p.init(theta:narrow(p.offset + 1, p.n), rng, p.fan_in, p.fan_out)
    end
  end
  return theta
end

-- Views of each parameter inside theta (no copy): list of {name = "3.weight", tensor = view}.
function Model:params(theta)
  fptr(theta, self.d, "theta")
  local out = {}
  for i, l in ipairs(self.layers) do
    for _, p in ipairs(l.params) do
      out[#out + 1] = { name = string.format("%d.%s", i, p.name), offset = p.offset,
                        tensor = theta:narrow(p.offset + 1, p.n):reshape(p.shape) }
    end
  end
  return out
end

-- Runs the layers on B examples at x; returns a pointer to the (B, classes) outputs, valid
-- until the next call. opts: {train = bool, rng = agt.rng object or agt_rng*}.
-- The layers' kernels are those of θ's device (agt.backend): with θ and x CUDA tensors, the model
-- runs there, its buffers on the device; a layer the device lacks says so. θ given as a raw
-- pointer is host memory.
function Model:forward(theta, x, B, opts)
  local th = fptr(theta, self.d, "theta")
  local be = T.is_tensor(theta) and Bk.of(theta) or Bk.get("cpu")
  self.be = be
  for _, l in ipairs(self.layers) do l.be = be end
  local xp = fptr(x, nil, "x", be)
  if T.is_tensor(x) and x:numel() < B * self.in_numel then
    error(string.format("x must hold %d values (%d examples of %s), got %d", B * self.in_numel, B,
                        shape_str(self.input_shape), x:numel()), 2)
  end
  local rng = opts and opts.rng
  if type(rng) == "table" then rng = rng.s end
  local ctx = { train = opts and opts.train or false, rng = rng, bn_momentum = opts and opts.bn_momentum,
                recalibrate = opts and opts.recalibrate }
  local acts = self._acts or {}
  self._acts = acts
  acts[0] = xp
  local a = xp
  for i, l in ipairs(self.layers) do
    a = l:forward(th, a, B, ctx)
    acts[i] = a
  end
  self._B = B
  return a
end

-- Back-propagates dout (B, classes) from the last forward, writing every parameter's
-- gradient into grad (a flat f32 tensor of d, or a float*).
function Model:backward(theta, grad, dout)
  local th = fptr(theta, self.d, "theta", self.be)
  local g = fptr(grad, self.d, "grad", self.be)
  local acts, B = self._acts, self._B
  if not acts then error("backward needs a forward first", 2) end
  local dy = dout
  for i = #self.layers, 1, -1 do
    local l = self.layers[i]
    -- an input gradient is needed only if some earlier layer has parameters
    local need = false
    for j = 1, i - 1 do if #self.layers[j].params > 0 then need = true break end end
    dy = l:backward(th, g, acts[i - 1], acts[i], dy, B, need)
  end
end

-- Mean softmax cross-entropy of B examples (x: f32 (B, input), y: i32 (B)) and its gradient,
-- written into grad. Returns the loss (a Lua number).
function Model:loss_grad(theta, x, y, B, grad, rng)
  local logits = self:forward(theta, x, B, { train = true, rng = rng })
  local K = self.classes
  local dl = grow(self, "dlogits", B * K)
  local loss = self._loss or ffi.new("double[1]")
  self._loss = loss
  self.be:op("nn.softmax_xent")(logits, iptr(y, B, "y", self.be), B, K, loss, dl)
  self:backward(theta, grad, dl)
  return loss[0]
end

-- Evaluation of B examples: sum of cross-entropies and number of correct top-1 predictions.
function Model:eval_batch(theta, x, y, B)
  local logits = self:forward(theta, x, B, { train = false })
  local ls = self._ls or ffi.new("double[1]")
  local cr = self._cr or ffi.new("size_t[1]")
  self._ls, self._cr = ls, cr
  self.be:op("nn.eval_batch")(logits, iptr(y, B, "y", self.be), B, self.classes, ls, cr)
  return ls[0], tonumber(cr[0])
end

-- Every layer, those inside residual blocks included, in order.
local function each_layer(layers, out)
  out = out or {}
  for _, l in ipairs(layers) do
    out[#out + 1] = l
    if l.kind == "residual" then
      each_layer(l.body, out)
      each_layer(l.shortcut, out)
    end
  end
  return out
end

function Model:has_batchnorm()
  for _, l in ipairs(each_layer(self.layers)) do if l.kind == "batchnorm" then return true end end
  return false
end

-- Batch k (1, 2, ...) of a re-estimation of the batch-norm layers' running statistics at θ:
-- after batches 1..k they are the mean of those batches' means and (unbiased) variances (a
-- training-mode forward with momentum 1/k, dropout off). Returns nothing.
function Model:recalibrate(theta, x, B, k)
  if type(k) ~= "number" or k < 1 or k % 1 ~= 0 then error("recalibrate: k must be an integer >= 1", 2) end
  self:forward(theta, x, B, { train = true, bn_momentum = 1 / k, recalibrate = true })
end

function Model:summary()
  local lines = { string.format("input %s", shape_str(self.input_shape)) }
  for i, l in ipairs(self.layers) do
    local np = 0
    for _, p in ipairs(l.params) do np = np + p.n end
    lines[#lines + 1] = string.format("%2d  %-44s -> %-16s %s", i, l:describe(), shape_str(l.out_shape),
                                      np > 0 and (np .. " params") or "")
  end
  lines[#lines + 1] = string.format("total %d parameters", self.d)
  return table.concat(lines, "\n")
end

-- Drops the activation and scratch buffers (they are re-made on the next call).
function Model:release()
  for _, l in ipairs(each_layer(self.layers)) do
    for k in pairs(l) do
      if type(k) == "string" and k:match("^_") then l[k] = nil end
    end
  end
  for _, k in ipairs({ "_buf_dlogits", "_ptr_dlogits", "_cap_dlogits", "_dev_dlogits", "_acts" }) do self[k] = nil end
end

nn.Model = Model
return nn
