-- agt.optim and agt.lr against plain-Lua references of TensorFlow 1's formulas, run for a
-- few steps in double precision; state save/restore; argument checking.
local O = require("agt.optim")
local L = require("agt.lr")
local T = require("agt.tensor")
local R = require("agt.rng")

local d = 5000   -- spans several chunks of the thread pool

-- Reference updates on plain Lua arrays (th, g and the slots s), step t (1-based).
local ref = {
  sgd = function(a, th, g, s, lr)
    for i = 1, #th do
      if a.momentum > 0 then
        s[1][i] = a.momentum * s[1][i] + g[i]
        if a.nesterov then th[i] = th[i] - lr * g[i] - lr * a.momentum * s[1][i]
        else th[i] = th[i] - lr * s[1][i] end
      else
        th[i] = th[i] - lr * g[i]
      end
    end
  end,
  adam = function(a, th, g, s, lr, t)
    local b1, b2, eps = a["adam-beta1"], a["adam-beta2"], a["opt-epsilon"]
    local alpha = lr * math.sqrt(1 - b2 ^ t) / (1 - b1 ^ t)
    for i = 1, #th do
      s[1][i] = b1 * s[1][i] + (1 - b1) * g[i]
      s[2][i] = b2 * s[2][i] + (1 - b2) * g[i] ^ 2
      th[i] = th[i] - alpha * s[1][i] / (math.sqrt(s[2][i]) + eps)
    end
  end,
  adagrad = function(a, th, g, s, lr)
    for i = 1, #th do
      s[1][i] = s[1][i] + g[i] ^ 2
      th[i] = th[i] - lr * g[i] / math.sqrt(s[1][i])
    end
  end,
  adadelta = function(a, th, g, s, lr)
    local rho, eps = a["adadelta-rho"], a["opt-epsilon"]
    for i = 1, #th do
      s[1][i] = rho * s[1][i] + (1 - rho) * g[i] ^ 2
      local u = math.sqrt(s[2][i] + eps) / math.sqrt(s[1][i] + eps) * g[i]
      th[i] = th[i] - lr * u
      s[2][i] = rho * s[2][i] + (1 - rho) * u ^ 2
    end
  end,
  rmsprop = function(a, th, g, s, lr)
    local rho, mu, eps = a["rmsprop-decay"], a["rmsprop-momentum"], a["opt-epsilon"]
    for i = 1, #th do
      s[1][i] = rho * s[1][i] + (1 - rho) * g[i] ^ 2
      local den = s[1][i]
      if a["rmsprop-centered"] then
        s[3][i] = rho * s[3][i] + (1 - rho) * g[i]
        den = den - s[3][i] ^ 2
      end
      s[2][i] = mu * s[2][i] + lr * g[i] / math.sqrt(den + eps)
      th[i] = th[i] - s[2][i]
    end
  end,
}

local function run_case(name, args, init_slots)
  local opt = O.new(name, args, d)
  local rng = R.new(9, 1)
  local theta = rng:uniform(T.new({ d }), -1, 1)
  local th = theta:totable()
  local s = {}
  for k = 1, #opt.slots do
    s[k] = {}
    for i = 1, d do s[k][i] = init_slots[k] or 0 end
  end
  local worst = 0
  for t = 1, 4 do
    local g = rng:uniform(T.new({ d }), -1, 1)
    local lr = 0.05 * t
    opt:step(theta, g, lr)
    ref[name](opt.args, th, g:totable(), s, lr, t)
    for i = 1, d do
      worst = math.max(worst, math.abs(theta[i] - th[i]) / math.max(1, math.abs(th[i])))
    end
  end
  return worst, opt, theta
end

describe("agt.optim", function()
  local cases = {
    { "sgd", {}, {} },
    { "sgd", { "momentum:0.9" }, { 0 } },
    { "sgd", { "momentum:0.9", "nesterov:true" }, { 0 } },
    { "adam", {}, { 0, 0 } },
    { "adam", { "adam-beta1:0.5", "adam-beta2:0.9", "opt-epsilon:1e-3" }, { 0, 0 } },
    { "adagrad", {}, { 0.1 } },
    { "adagrad", { "initial-accumulator-value:2.5" }, { 2.5 } },
    { "adadelta", {}, { 0, 0 } },
    { "rmsprop", {}, { 1, 0 } },
    { "rmsprop", { "rmsprop-momentum:0.9", "rmsprop-centered:true" }, { 1, 0, 0 } },
  }
  for _, c in ipairs(cases) do
    it(c[1] .. " " .. table.concat(c[2], " ") .. " follows the TF1 formula", function()
      local worst = run_case(c[1], c[2], c[3])
      assert.is_true(worst < 1e-5, string.format("%s: worst relative error %g", c[1], worst))
    end)
  end

  it("has the original system's defaults", function()
    assert.are.equal(0.9, O.new("adam", {}, 1).args["adam-beta1"])
    assert.are.equal(0.999, O.new("adam", {}, 1).args["adam-beta2"])
    assert.are.equal(0.1, O.new("adagrad", {}, 1).args["initial-accumulator-value"])
    assert.are.equal(0.95, O.new("adadelta", {}, 1).args["adadelta-rho"])
    assert.are.equal(1.0, O.new("adadelta", {}, 1).args["opt-epsilon"])
    assert.are.equal(0.9, O.new("rmsprop", {}, 1).args["rmsprop-decay"])
    assert.are.same({ "adadelta", "adagrad", "adam", "rmsprop", "sgd" }, O.list())
  end)

  it("saves and restores its state exactly", function()
    local _, opt, theta = run_case("adam", {}, { 0, 0 })
    local s = opt:state()
    local g = R.new(1, 1):uniform(T.new({ d }))
    local th2 = theta:clone()
    opt:step(theta, g, 0.1)
    local other = O.new("adam", {}, d)
    other:set_state(s)
    assert.are.equal(opt.t - 1, other.t)
    other:step(th2, g, 0.1)
    assert.is_true(theta:allclose(th2, 0, 0))
    assert.has_error(function() O.new("adagrad", {}, d):set_state(s) end)
    assert.has_error(function() O.new("adam", {}, d + 1):set_state(s) end)
    assert.has_error(function() other:set_state(s:sub(1, -2)) end)
    assert.has_error(function() other:set_state("garbage") end)
  end)

  it("refuses unknown optimizers and keys, naming the known ones", function()
    assert.has_error(function() O.new("lbfgs", {}, 10) end,
                     "--optimizer: unknown optimizer 'lbfgs' (known: adadelta, adagrad, adam, rmsprop, sgd)")
    local ok, err = pcall(O.new, "adam", { "beta1:0.9" }, 10)
    assert.is_false(ok)
    assert.is_truthy(err:find("unknown key 'beta1'", 1, true))
    assert.is_truthy(err:find("adam-beta1", 1, true))
    assert.has_error(function() O.new("adam", { "adam-beta1:1.5" }, 10) end)
    assert.has_error(function() O.new("sgd", { "nesterov:true" }, 10) end)
    -- the runner's table form
    assert.are.equal(0.5, O.new("sgd", { momentum = 0.5 }, 10).args.momentum)
  end)
end)

describe("agt.lr", function()
  it("fixed, polynomial and exponential follow TF1's formulas", function()
    local f = L.new("fixed", {})
    assert.are.equal(1e-3, f:rate(0))
    assert.are.equal(1e-3, f:rate(123456))
    local p = L.new("polynomial", { "initial-rate:0.1", "end-rate:0.01", "decay-step:100", "power:2" })
    for _, k in ipairs({ 0, 1, 50, 99, 100, 1000 }) do
      local s = math.min(k, 100)
      local want = (0.1 - 0.01) * (1 - s / 100) ^ 2 + 0.01
      assert.is_true(math.abs(p:rate(k) - want) < 1e-15)
    end
    local dp = L.new("polynomial", {})
    assert.are.equal(1e-3, dp:rate(0))
    assert.is_true(math.abs(dp:rate(5000) - 5.5e-4) < 1e-15)
    assert.are.equal(1e-4, dp:rate(20000))
    local e = L.new("exponential", { "initial-rate:0.05" })
    for _, k in ipairs({ 0, 1, 5000, 10000, 25000 }) do
      assert.is_true(math.abs(e:rate(k) - 0.05 * 0.96 ^ (k / 10000)) < 1e-15)
    end
    assert.are.equal(10000, e.args["decay-step"])
  end)

  it("refuses unknown schedules, keys and bad values", function()
    assert.has_error(function() L.new("cosine", {}) end,
                     "--learning-rate: unknown schedule 'cosine' (known: exponential, fixed, polynomial)")
    assert.has_error(function() L.new("fixed", { "rate:1" }) end)
    assert.has_error(function() L.new("exponential", { "decay-step:0" }) end)
    assert.has_error(function() L.new("fixed", {}):rate(-1) end)
    assert.are.same({ "exponential", "fixed", "polynomial" }, L.list())
  end)
end)
