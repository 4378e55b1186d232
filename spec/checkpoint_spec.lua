-- Specs of agt.checkpoint: the file format, its checksum, atomic writes, keep-last-k, and
-- restoring the newest valid checkpoint past corrupt or truncated ones.
local H = require("helpers")
local read, write = H.read, H.write
local K = require("agt.checkpoint")
local fs = require("agt.fs")

local tmpdir = os.tmpname()
os.remove(tmpdir)


setup(function() assert(fs.mkdir_p(tmpdir)) end)
teardown(function() os.execute("rm -rf '" .. tmpdir .. "'") end)

describe("agt.checkpoint", function()
  it("computes SHA-256 through libsodium", function()
    assert.are.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
                     K.hex(K.sha256("abc")))
    assert.are.equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                     K.hex(K.sha256("")))
  end)

  it("round-trips binary values exactly, independent of insertion order", function()
    local bin = {}
    for i = 0, 2999 do bin[#bin + 1] = string.char(i % 256) end
    local m = { theta = table.concat(bin), step = "42", empty = "", ["worker.1"] = "\0\0\1" }
    local s = K.encode(m)
    local back = assert(K.decode(s))
    assert.are.same(m, back)
    local m2 = {}
    for _, k in ipairs({ "worker.1", "empty", "step", "theta" }) do m2[k] = m[k] end
    assert.are.equal(s, K.encode(m2))
  end)

  it("refuses a truncated, corrupt or foreign file with a reason", function()
    local s = K.encode({ theta = string.rep("x", 100), step = "1" })
    for _, cut in ipairs({ 1, 10, 32, #s - 1 }) do
      local m, err = K.decode(s:sub(1, #s - cut))
      assert.is_nil(m)
      assert.truthy(err:find("truncated") or err:find("checksum"), err)
    end
    local flipped = s:sub(1, 40) .. string.char((s:byte(41) + 1) % 256) .. s:sub(42)
    local m, err = K.decode(flipped)
    assert.is_nil(m)
    assert.truthy(err:find("checksum mismatch"))
    m, err = K.decode("PK\3\4" .. string.rep("z", 100))
    assert.is_nil(m)
    assert.truthy(err:find("not an agt checkpoint"))
    -- a well-checksummed body whose lengths lie is still refused
    local body = "AGTCKPT\1" .. "\1\0\0\0" .. "\5\0\0\0" .. "theta" .. "\255\0\0\0\0\0\0\0" .. "ab"
    m, err = K.decode(body .. K.sha256(body))
    assert.is_nil(m)
    assert.truthy(err:find("past the end"))
  end)

  it("writes atomically (no temporary left behind) and keeps the newest k", function()
    local dir = tmpdir .. "/a/b"
    for step = 10, 60, 10 do assert(K.save(dir, step, { step = tostring(step) }, 3)) end
    local names = fs.list(dir)
    table.sort(names)
    assert.are.same({ "model-40.ckpt", "model-50.ckpt", "model-60.ckpt" }, names)
    local l = K.list(dir)
    assert.are.same({ 60, 50, 40 }, { l[1].step, l[2].step, l[3].step })
  end)

  it("restores the newest valid checkpoint and falls back past corrupt ones", function()
    local dir = tmpdir .. "/r"
    for step = 1, 4 do assert(K.save(dir, step, { step = tostring(step) }, 10)) end
    local p4, p3 = dir .. "/model-4.ckpt", dir .. "/model-3.ckpt"
    local s4 = read(p4)
    write(p4, s4:sub(1, #s4 - 3))                                   -- truncated
    local s3 = read(p3)
    write(p3, s3:sub(1, 20) .. "X" .. s3:sub(22))                   -- one byte changed
    local warnings = {}
    local map, path = K.restore(dir, function(m) warnings[#warnings + 1] = m end)
    assert.are.equal("2", map.step)
    assert.are.equal(dir .. "/model-2.ckpt", path)
    assert.are.equal(2, #warnings)
    assert.truthy(warnings[1]:find("model%-4%.ckpt refused: checksum mismatch"))
    assert.truthy(warnings[1]:find("falling back to .*model%-3%.ckpt"))
    assert.truthy(warnings[2]:find("model%-3%.ckpt refused"))
    assert.is_nil(K.restore(tmpdir .. "/nothing-here"))
  end)

  it("reports an unwritable directory instead of raising", function()
    local ok, err = K.save("/proc/agt-no-such-dir", 1, { step = "1" })
    assert.is_nil(ok)
    assert.truthy(err:find("cannot create directory"))
  end)
end)
