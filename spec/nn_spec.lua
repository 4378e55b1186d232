-- agt.nn: every layer's backward against central finite differences of a double-precision
-- reference written here in plain Lua (independent of the C kernels: its own padding
-- arithmetic, direct loops). Each check draws random parameters and inputs, computes the
-- engine's gradient (float32) and compares it with the reference's (double).
local nn = require("agt.nn")
local T = require("agt.tensor")
local R = require("agt.rng")

-- Reference geometry (TF): SAME: out = ceil(n/s), padding split with the odd one after.
local function geo(n, k, s, padding)
  if type(padding) == "number" then return math.floor((n + 2 * padding - k) / s) + 1, padding end
  if padding == "SAME" then
    local out = math.ceil(n / s)
    local total = math.max((out - 1) * s + k - n, 0)
    return out, math.floor(total / 2)
  end
  return math.floor((n - k) / s) + 1, 0
end

local ACTF = {
  relu = function(v) return math.max(v, 0) end, tanh = math.tanh,
  sigmoid = function(v) return 1 / (1 + math.exp(-v)) end,
}

-- Forward of one layer on a flat Lua array a (B examples), in double.
local function ref_layer(l, th, a, B)
  local k = l.kind
  if k == "flatten" then return a end
  if k == "residual" then
    local x, y = a, a
    for _, sub in ipairs(l.body) do x = ref_layer(sub, th, x, B) end
    for _, sub in ipairs(l.shortcut) do y = ref_layer(sub, th, y, B) end
    local o, f = {}, ACTF[l.act_name]
    for i = 1, #x do o[i] = f and f(x[i] + y[i]) or x[i] + y[i] end
    return o
  end
  if k == "batchnorm" then   -- training mode: the batch's statistics
    local Cn, S = l.c, l.s
    local w, b = l.params[1].offset, l.params[2].offset
    local o = {}
    for c = 0, Cn - 1 do
      local sum, sq = 0, 0
      for i = 0, B - 1 do for j = 0, S - 1 do sum = sum + a[(i * Cn + c) * S + j + 1] end end
      local m = sum / (B * S)
      for i = 0, B - 1 do for j = 0, S - 1 do sq = sq + (a[(i * Cn + c) * S + j + 1] - m) ^ 2 end end
      local is = 1 / math.sqrt(sq / (B * S) + l.eps)
      for i = 0, B - 1 do
        for j = 0, S - 1 do
          local at = (i * Cn + c) * S + j + 1
          o[at] = th[w + c + 1] * (a[at] - m) * is + th[b + c + 1]
        end
      end
    end
    return o
  end
  if k == "relu" or k == "tanh" or k == "sigmoid" then
    local o = {}
    for i = 1, #a do
      local v = a[i]
      o[i] = k == "relu" and math.max(v, 0) or k == "tanh" and math.tanh(v) or 1 / (1 + math.exp(-v))
    end
    return o
  end
  if k == "dropout" then
    local o = {}
    local m = l._ptr_mask
    for i = 1, #a do o[i] = a[i] * (l.active and m[i - 1] or 1) end
    return o
  end
  if k == "linear" then
    local W, b = l.params[1].offset, l.params[2] and l.params[2].offset
    local nin, nout = l.nin, l.nout
    local o = {}
    for i = 0, B - 1 do
      for j = 0, nout - 1 do
        local s = b and th[b + j + 1] or 0
        for q = 0, nin - 1 do s = s + a[i * nin + q + 1] * th[W + q * nout + j + 1] end
        o[i * nout + j + 1] = s
      end
    end
    return o
  end
  local C, H, W = l.in_shape[1], l.in_shape[2], l.in_shape[3]
  local OH, pt = geo(H, l.kh, l.sh, l.padding)
  local OW, pl = geo(W, l.kw, l.sw, l.padding)
  local o = {}
  if k == "conv2d" then
    local OC, Wo, bo = l.oc, l.params[1].offset, l.params[2] and l.params[2].offset
    for i = 0, B - 1 do
      for oc = 0, OC - 1 do
        for oh = 0, OH - 1 do
          for ow = 0, OW - 1 do
            local s = bo and th[bo + oc + 1] or 0
            for c = 0, C - 1 do
              for kh = 0, l.kh - 1 do
                for kw = 0, l.kw - 1 do
                  local ih, iw = oh * l.sh + kh - pt, ow * l.sw + kw - pl
                  if ih >= 0 and ih < H and iw >= 0 and iw < W then
                    s = s + a[((i * C + c) * H + ih) * W + iw + 1]
                            * th[Wo + ((oc * C + c) * l.kh + kh) * l.kw + kw + 1]
                  end
                end
              end
            end
            o[((i * OC + oc) * OH + oh) * OW + ow + 1] = s
          end
        end
      end
    end
    return o
  end
  -- pools
  for p = 0, B * C - 1 do
    for oh = 0, OH - 1 do
      for ow = 0, OW - 1 do
        local best, sum, cnt = -math.huge, 0, 0
        for kh = 0, l.kh - 1 do
          for kw = 0, l.kw - 1 do
            local ih, iw = oh * l.sh + kh - pt, ow * l.sw + kw - pl
            if ih >= 0 and ih < H and iw >= 0 and iw < W then
              local v = a[(p * H + ih) * W + iw + 1]
              best = math.max(best, v)
              sum, cnt = sum + v, cnt + 1
            end
          end
        end
        o[(p * OH + oh) * OW + ow + 1] = k == "maxpool" and best or sum / cnt
      end
    end
  end
  return o
end

-- Mean softmax cross-entropy of the reference forward.
local function ref_loss(model, th, x, y, B)
  local a = x
  for _, l in ipairs(model.layers) do a = ref_layer(l, th, a, B) end
  local K = model.classes
  local L = 0
  for i = 0, B - 1 do
    local m = -math.huge
    for j = 1, K do m = math.max(m, a[i * K + j]) end
    local s = 0
    for j = 1, K do s = s + math.exp(a[i * K + j] - m) end
    L = L + m + math.log(s) - a[i * K + y[i + 1] + 1]
  end
  return L / B
end

-- Compares model:loss_grad with central differences of the reference on up to `probe`
-- parameters of each parameter tensor. Returns the worst error relative to max(1, |g|).
local function gradcheck(model, B, seed, probe)
  local rng = R.new(seed, 1)
  local theta = T.new({ model.d })
  rng:uniform(theta, -0.5, 0.5)
  local per = 1
  for _, v in ipairs(model.input_shape) do per = per * v end
  local xs = { B }
  for _, v in ipairs(model.input_shape) do xs[#xs + 1] = v end
  local x = rng:uniform(T.new(xs), -1, 1)
  local y = T.new({ B }, "i32")
  for i = 1, B do y[i] = rng:below(model.classes) end
  local grad = T.new({ model.d })
  grad:fill(12345)   -- every value must be overwritten
  local loss = model:loss_grad(theta, x, y, B, grad, R.new(seed, 2))
  local th, xt, yt = theta:totable(), x:totable(), y:totable()
  for i = 1, #th do th[i] = tonumber(th[i]) end
  local ref0 = ref_loss(model, th, xt, yt, B)
  assert.is_true(math.abs(ref0 - loss) < 1e-4 * math.max(1, math.abs(ref0)),
                 string.format("forward loss %g, reference %g", loss, ref0))
  local worst = 0
  local h = 1e-5
  for _, l in ipairs(model.layers) do
    for _, p in ipairs(l.params) do
      local step = math.max(1, math.floor(p.n / probe))
      for j = p.offset + 1, p.offset + p.n, step do
        local keep = th[j]
        th[j] = keep + h
        local lp = ref_loss(model, th, xt, yt, B)
        th[j] = keep - h
        local lm = ref_loss(model, th, xt, yt, B)
        th[j] = keep
        local fd = (lp - lm) / (2 * h)
        local err = math.abs(fd - grad[j]) / math.max(1, math.abs(fd))
        if err > worst then worst = err end
      end
    end
  end
  return worst
end

describe("agt.nn", function()
  it("infers shapes and lays parameters out in one flat vector", function()
    local m = nn.sequential({ 3, 32, 32 }, {
      nn.conv2d(64, { kernel = 5, padding = "SAME" }), nn.relu(), nn.maxpool({ kernel = 3, stride = 2, padding = "SAME" }),
      nn.conv2d(64, { kernel = 5, padding = "SAME" }), nn.relu(), nn.maxpool({ kernel = 3, stride = 2, padding = "SAME" }),
      nn.flatten(), nn.linear(384), nn.relu(), nn.linear(192), nn.relu(), nn.linear(10),
    })
    assert.are.same({ 64, 8, 8 }, m.layers[6].out_shape)
    assert.are.equal(1756426, m.d)
    assert.are.equal(10, m.classes)
    local theta = T.new({ m.d })
    m:init(theta, R.new(1, 0))
    local ps = m:params(theta)
    assert.are.equal(10, #ps)
    assert.are.same({ 64, 3, 5, 5 }, ps[1].tensor.shape)
    -- a view shares θ's storage: writing through it changes θ
    ps[2].tensor[1] = 42
    assert.are.equal(42, theta[ps[2].offset + 1])
  end)

  it("refuses bad layers and shapes with a clear message", function()
    assert.has_error(function() nn.linear(0) end, "linear needs a positive number of outputs, got 0")
    assert.has_error(function() nn.conv2d(4, { padding = "FULL" }) end)
    assert.has_error(function() nn.dropout(1) end)
    assert.has_error(function() nn.sequential({ 784 }, { nn.conv2d(4) }) end)
    assert.has_error(function() nn.sequential({ 1, 3, 3 }, { nn.conv2d(4, { kernel = 5, padding = "VALID" }) }) end)
  end)

  it("initialisers: Glorot bounds, truncated normal within 2 stddev, constants", function()
    local m = nn.sequential({ 20 }, { nn.linear(30, { weight_init = nn.init.glorot_uniform(),
      bias_init = nn.init.constant(0.25) }), nn.linear(5, { weight_init = nn.init.truncated_normal(0.1) }) })
    local theta = m:init(T.new({ m.d }), R.new(3, 0))
    local ps = m:params(theta)
    local lim = math.sqrt(6 / 50)
    assert.is_true(ps[1].tensor:max() <= lim and ps[1].tensor:min() >= -lim)
    assert.is_true(ps[1].tensor:max() > 0.8 * lim)
    assert.are.equal(0.25, ps[2].tensor:min())
    assert.are.equal(0.25, ps[2].tensor:max())
    assert.is_true(ps[3].tensor:max() <= 0.2 and ps[3].tensor:min() >= -0.2)
    assert.are.equal(0, ps[4].tensor:norm())
    -- the same seed gives the same parameters
    local again = m:init(T.new({ m.d }), R.new(3, 0))
    assert.is_true(again:allclose(theta, 0, 0))
  end)

  it("linear + fused relu + tanh + sigmoid match finite differences", function()
    local m = nn.sequential({ 6 }, { nn.linear(5), nn.relu(), nn.linear(4), nn.tanh(),
                                     nn.linear(4), nn.sigmoid(), nn.linear(3) })
    assert.is_true(gradcheck(m, 4, 11, 40) < 2e-3)
  end)

  it("conv2d SAME stride 1 and 2, VALID, max-pool and avg-pool match finite differences", function()
    local m = nn.sequential({ 2, 7, 6 }, {
      nn.conv2d(3, { kernel = 3, stride = 1, padding = "SAME" }), nn.relu(),
      nn.maxpool({ kernel = 3, stride = 2, padding = "SAME" }),
      nn.conv2d(4, { kernel = { 2, 3 }, stride = 2, padding = "SAME" }), nn.tanh(),
      nn.avgpool({ kernel = 2, stride = 1, padding = "SAME" }),
      nn.flatten(), nn.linear(3),
    })
    assert.is_true(gradcheck(m, 2, 12, 25) < 2e-3)
    local v = nn.sequential({ 1, 11, 9 }, {
      nn.conv2d(2, { kernel = 3, stride = 2, padding = "VALID" }),
      nn.avgpool({ kernel = 2, padding = "VALID" }), nn.sigmoid(),
      nn.conv2d(2, { kernel = 1, padding = "VALID" }), nn.relu(),
      nn.maxpool({ kernel = 2, stride = 1, padding = "VALID" }), nn.linear(4),
    })
    assert.is_true(gradcheck(v, 3, 13, 25) < 2e-3)
  end)

  it("dropout matches finite differences with its drawn mask, and is off in evaluation", function()
    local m = nn.sequential({ 8 }, { nn.linear(16), nn.relu(), nn.dropout(0.5), nn.linear(3) })
    assert.is_true(gradcheck(m, 4, 14, 40) < 2e-3)
    local drop = m.layers[3]
    local zeros = 0
    for i = 0, 4 * 16 - 1 do if drop._ptr_mask[i] == 0 then zeros = zeros + 1 end end
    assert.is_true(zeros > 10 and zeros < 54)
    local theta = m:init(T.new({ m.d }), R.new(1, 0))
    local x = R.new(1, 5):uniform(T.new({ 4, 8 }))
    local y = T.from_table({ 0, 1, 2, 0 }, "i32")
    local l1 = m:eval_batch(theta, x, y, 4)
    local l2 = m:eval_batch(theta, x, y, 4)
    assert.are.equal(l1, l2)
    assert.has_error(function() m:loss_grad(theta, x, y, 4, T.new({ m.d })) end)
  end)

  it("batch norm (fused ReLU, dense and per channel) and residual blocks match finite differences", function()
    local m = nn.sequential({ 2, 6, 6 }, {
      nn.conv2d(3, { kernel = 3, padding = 1, bias = false }), nn.batchnorm(), nn.relu(),
      nn.residual({ nn.conv2d(3, { kernel = 3, padding = 1, bias = false }), nn.batchnorm(), nn.relu(),
                    nn.conv2d(3, { kernel = 3, padding = 1, bias = false }), nn.batchnorm() }),
      nn.residual({ nn.conv2d(4, { kernel = 3, stride = 2, padding = 1 }), nn.batchnorm(), nn.tanh(),
                    nn.conv2d(4, { kernel = 3, padding = 1 }), nn.batchnorm() },
                  { nn.conv2d(4, { kernel = 1, stride = 2, padding = "VALID" }), nn.batchnorm() }),
      nn.avgpool({ kernel = 3 }), nn.flatten(), nn.linear(5), nn.batchnorm(), nn.sigmoid(), nn.linear(3),
    })
    assert.are.same({ 4, 3, 3 }, m.layers[5].out_shape)   -- padding 1, stride 2: PyTorch's size
    assert.is_true(gradcheck(m, 3, 15, 20) < 2e-3)
  end)

  it("batch norm keeps running statistics in training, uses them in evaluation, and recalibrates", function()
    local m = nn.sequential({ 2, 3, 3 }, { nn.batchnorm({ momentum = 0.5 }), nn.flatten(), nn.linear(2) })
    local theta = m:init(T.new({ m.d }), R.new(4, 0))
    local x = R.new(4, 1):normal(T.new({ 5, 2, 3, 3 }), 3, 2)
    local y = T.from_table({ 0, 1, 1, 0, 1 }, "i32")
    local bn = m.layers[1]
    -- the batch's statistics of channel 0, in double
    local sum, sq, n = 0, 0, 5 * 9
    local xt = x:totable()
    for i = 0, 4 do for j = 0, 8 do sum = sum + xt[i * 18 + j + 1] end end
    local mean = sum / n
    for i = 0, 4 do for j = 0, 8 do sq = sq + (xt[i * 18 + j + 1] - mean) ^ 2 end end
    m:loss_grad(theta, x, y, 5, T.new({ m.d }))
    assert.is_true(math.abs(bn.run_mean[1] - 0.5 * mean) < 1e-5)
    assert.is_true(math.abs(bn.run_var[1] - (0.5 + 0.5 * sq / (n - 1))) < 1e-4)
    -- evaluation normalises with the running statistics, not the batch's: one example alone
    -- gives the same logits as within the batch
    local l5 = m:forward(theta, x, 5)
    local first = l5[0]
    local l1 = m:forward(theta, x:narrow(1, 1, 1), 1)
    assert.are.equal(first, l1[0])
    -- recalibration: batch k with momentum 1/k; after one batch, the statistics are the batch's
    m:recalibrate(theta, x, 5, 1)
    assert.is_true(math.abs(bn.run_mean[1] - mean) < 1e-5)
    assert.is_true(math.abs(bn.run_var[1] - sq / (n - 1)) < 1e-4)
    assert.is_true(m:has_batchnorm())
    assert.has_error(function() nn.batchnorm({ momentum = 2 }) end)
    assert.has_error(function() nn.residual({ nn.linear(2), nn.relu() }) end)
    assert.has_error(function() nn.sequential({ 4 }, { nn.residual({ nn.linear(3) }) }) end)
  end)

  it("gradients are reproducible and every value of the gradient is written", function()
    local m = nn.sequential({ 1, 6, 6 }, { nn.conv2d(2, { kernel = 3 }), nn.relu(), nn.maxpool({ kernel = 2 }),
                                           nn.flatten(), nn.linear(3) })
    local theta = m:init(T.new({ m.d }), R.new(2, 0))
    local x = R.new(2, 1):uniform(T.new({ 3, 1, 6, 6 }))
    local y = T.from_table({ 0, 2, 1 }, "i32")
    local g1, g2 = T.new({ m.d }), T.new({ m.d })
    g2:fill(0 / 0)
    local a = m:loss_grad(theta, x, y, 3, g1)
    local b = m:loss_grad(theta, x, y, 3, g2)
    assert.are.equal(a, b)
    assert.is_true(g1:allclose(g2, 0, 0))
    -- a gradient of the wrong size is refused
    assert.has_error(function() m:loss_grad(theta, x, y, 3, T.new({ m.d - 1 })) end)
  end)
end)
