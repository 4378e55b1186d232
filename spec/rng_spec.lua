-- The counter-based generator: reproducible, independent streams, exact save/restore,
-- and distributions with the right moments.
local T = require("agt.tensor")
local R = require("agt.rng")

describe("agt.rng", function()
  it("reproduces a stream from its seed and stream id", function()
    local a, b = R.new(7, 3), R.new(7, 3)
    for _ = 1, 100 do assert.are.equal(a:u32(), b:u32()) end
    local ta = a:uniform(T.new({ 1000 }), -1, 1)
    local tb = b:uniform(T.new({ 1000 }), -1, 1)
    assert.are.same(ta:totable(), tb:totable())
  end)

  it("gives different sequences for different seeds and streams", function()
    local x = { R.new(7, 3):u32(), R.new(8, 3):u32(), R.new(7, 4):u32(), R.new(7, "data"):u32() }
    for i = 1, #x do for j = i + 1, #x do assert.are_not.equal(x[i], x[j]) end end
  end)

  it("matches the published Philox4x32-10 known-answer vector", function()
    -- Random123 kat_vectors: philox4x32_10, counter 0, key 0 -> 6627e8d5 e169c58d bc57ac4c 9b00dbd8
    local r = R.new(0, 0)
    local want = { 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8 }
    for i = 1, 4 do assert.are.equal(want[i], r:u32()) end
  end)

  it("saves and restores its state exactly, mid-block and with a cached normal", function()
    local r = R.new(123, 9)
    r:u32(); r:normal1() -- leaves a cached deviate and a partly used block
    local s = r:state()
    local after = { r:normal1(), r:double(), r:below(1000), r:u32() }
    r:u32(); r:u32()
    r:set_state(s)
    assert.are.same(after, { r:normal1(), r:double(), r:below(1000), r:u32() })
    local c = R.new(1, 1):set_state(s)
    local d = c:clone()
    assert.are.equal(c:u32(), d:u32())
    assert.has_error(function() r:set_state("short") end)
  end)

  it("draws uniforms in range with mean 1/2 and variance 1/12", function()
    local t = R.new(5, 1):uniform(T.new({ 200000 }), 0, 1)
    local m = t:mean()
    assert.is_true(t:min() >= 0 and t:max() < 1)
    local v = 0
    for i = 1, #t do v = v + (t[i] - m) ^ 2 end
    v = v / #t
    assert.is_true(math.abs(m - 0.5) < 0.005)
    assert.is_true(math.abs(v - 1 / 12) < 0.002)
  end)

  it("draws normals with the given mean and stddev, truncated ones within 2 stddev", function()
    local t = R.new(5, 2):normal(T.new({ 200000 }), 3, 2)
    local m = t:mean()
    local v = 0
    for i = 1, #t do v = v + (t[i] - m) ^ 2 end
    assert.is_true(math.abs(m - 3) < 0.03)
    assert.is_true(math.abs(math.sqrt(v / #t) - 2) < 0.03)
    local tn = R.new(5, 3):truncnormal(T.new({ 50000 }), 0, 0.5)
    assert.is_true(tn:max() <= 1.0 and tn:min() >= -1.0)
  end)

  it("draws permutations of 0..n-1, uniformly", function()
    local r = R.new(11, 0)
    local p = r:permutation(1000)
    local seen = {}
    for i = 1, 1000 do seen[p[i]] = true end
    for v = 0, 999 do assert.is_true(seen[v]) end
    -- each of the 6 orders of 3 items about 1/6 of the time
    local counts = {}
    for _ = 1, 6000 do
      local q = r:permutation(3)
      local key = q[1] .. q[2] .. q[3]
      counts[key] = (counts[key] or 0) + 1
    end
    local k = 0
    for _, c in pairs(counts) do k = k + 1; assert.is_true(math.abs(c - 1000) < 150) end
    assert.are.equal(6, k)
  end)

  it("draws below(n) without bias and gamma with the right mean", function()
    local r = R.new(3, 3)
    local counts = { 0, 0, 0 }
    for _ = 1, 30000 do local x = r:below(3); counts[x + 1] = counts[x + 1] + 1 end
    for i = 1, 3 do assert.is_true(math.abs(counts[i] - 10000) < 400) end
    for _, shape in ipairs({ 0.3, 1, 4.5 }) do
      local s = 0
      for _ = 1, 20000 do s = s + r:gamma(shape) end
      assert.is_true(math.abs(s / 20000 - shape) < 0.05 * shape + 0.02)
    end
    assert.has_error(function() r:below(0) end)
  end)
end)
