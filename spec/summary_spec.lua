-- Specs of the TensorBoard event files (agt.tfevents) and summaries (agt.summary), checked with
-- a reader written from the format: TFRecord framing (length, masked CRC-32C of the length,
-- data, masked CRC-32C of the data) around Event protobufs. Also agt.progress.
local H = require("helpers")
local read = H.read
local TF = require("agt.tfevents")
local SUM = require("agt.summary")
local P = require("agt.progress")
local fs = require("agt.fs")

local tmpdir = os.tmpname()
os.remove(tmpdir)
setup(function() assert(fs.mkdir_p(tmpdir)) end)
teardown(function() os.execute("rm -rf '" .. tmpdir .. "'") end)


describe("agt.tfevents", function()
  it("computes CRC-32C and its TFRecord mask", function()
    assert.are.equal(0xE3069283, TF.crc32c("123456789"))
    assert.are.equal(0, TF.crc32c(""))
    assert.are.equal(0x8A9136AA, TF.crc32c(string.rep("\0", 32)))  -- RFC 3720 B.4
    local c = TF.crc32c("abc")
    local rot = (math.floor(c / 32768) + (c % 32768) * 131072) % 4294967296
    assert.are.equal((rot + 0xa282ead8) % 4294967296, TF.masked_crc32c("abc"))
  end)

  it("encodes Event protobufs byte for byte as protobuf does", function()
    -- wall_time = 1.0 (field 1, fixed64), step = 300 (field 2, varint 0xac 0x02),
    -- summary { value { tag: "a" simple_value: 1.0 } }
    local got = TF.encode_event({ wall_time = 1.0, step = 300, scalars = { { "a", 1.0 } } })
    local want = "\9" .. "\0\0\0\0\0\0\240\63" .. "\16\172\2" ..
                 "\42\10" .. "\10\8" .. "\10\1a" .. "\21\0\0\128\63"
    assert.are.equal(want, got)
    assert.are.equal("\9\0\0\0\0\0\0\0\0\26\13brain.Event:2",
                     TF.encode_event({ wall_time = 0, file_version = "brain.Event:2" }))
  end)

  it("writes files that the reader accepts, and the reader refuses damaged ones", function()
    local w = assert(TF.writer(tmpdir .. "/ev", { host = "spec", wall_time = 1000 }))
    w:session_log(0, 1000.5, TF.START)
    w:scalars(7, 1001.25, { { "loss", 0.5 }, { "eval-top1-X-acc", 0.875 } })
    w:scalars(2 ^ 33, 1002, { { "big", -3 } })
    w:close()
    local pid = tostring(require("ffi").C.getpid())
    assert.truthy(w.path:match("/events%.out%.tfevents%.1000%.spec%." .. pid .. "%.%d+$"), w.path)
    local ev = assert(TF.read(w.path))
    assert.are.equal(4, #ev)
    assert.are.equal("brain.Event:2", ev[1].file_version)
    assert.are.equal(TF.START, ev[2].session_status)
    assert.are.equal(7, ev[3].step)
    assert.are.equal(1001.25, ev[3].wall_time)
    assert.are.same({ { "loss", 0.5 }, { "eval-top1-X-acc", 0.875 } }, ev[3].scalars)
    assert.are.equal(2 ^ 33, ev[4].step)
    local s = read(w.path)
    local f = io.open(tmpdir .. "/bad", "wb")
    f:write(s:sub(1, #s - 2)); f:close()
    local r, err = TF.read(tmpdir .. "/bad")
    assert.is_nil(r)
    assert.truthy(err:find("record 4: truncated"))
    f = io.open(tmpdir .. "/bad2", "wb")
    f:write(s:sub(1, 40) .. string.char((s:byte(41) + 1) % 256) .. s:sub(42)); f:close()
    r, err = TF.read(tmpdir .. "/bad2")
    assert.is_nil(r)
    assert.truthy(err:find("CRC mismatch"))
  end)
end)

describe("agt.tfevents and agt.summary under abuse", function()
  it("names event files uniquely: same second, same host, same process", function()
    local d = tmpdir .. "/uniq"
    local a = assert(TF.writer(d, { host = "h", wall_time = 7 }))
    local b = assert(TF.writer(d, { host = "h", wall_time = 7 }))
    assert.are_not.equal(a.path, b.path)
    a:scalars(1, 7, { { "a", 1 } }); b:scalars(1, 7, { { "b", 2 } })
    a:close(); b:close()
    assert.are.same({ { "a", 1 } }, assert(TF.read(a.path))[2].scalars)
    assert.are.same({ { "b", 2 } }, assert(TF.read(b.path))[2].scalars)
    -- a name already taken (another process, pid reused) is never appended to
    local c = assert(TF.writer(d, { host = "h", wall_time = 7 }))
    c:close()
    local taken = c.path:gsub("%d+$", function(k) return tostring(tonumber(k) + 1) end)
    H.write(taken, "someone else's")
    local e = assert(TF.writer(d, { host = "h", wall_time = 7 }))
    e:close()
    assert.are_not.equal(taken, e.path)
    assert.are.equal("someone else's", read(taken))
  end)

  it("raises, naming the file, when the disk is full (summary.csv and the event file)", function()
    local d = tmpdir .. "/full"
    fs.mkdir_p(d)
    assert(os.execute("ln -s /dev/full '" .. d .. "/summary.csv'") == 0)
    local s = SUM.open(d, { wall_time = 1, host = "h" })
    local ok, err
    if s then
      ok, err = pcall(function()
        s:scalars(1, 2, { { "loss", 1 } })
        s:flush()
      end)
      assert.is_false(ok)
    else
      err = select(2, SUM.open(d, { wall_time = 1, host = "h" }))
    end
    assert.truthy(tostring(err):find("summary%.csv: No space left on device"), tostring(err))
    -- the event file: its stream replaced by /dev/full after opening
    local w = assert(TF.writer(d .. "/ev", { host = "h" }))
    w.f:close()
    w.f = assert(io.open("/dev/full", "wb"))
    ok, err = pcall(function() w:scalars(1, 2, { { "loss", 1 } }); w:flush() end)
    assert.is_false(ok)
    assert.truthy(err:find("cannot write .*events%.out%.tfevents.*No space left on device"), err)
    pcall(w.close, w)
  end)
end)

describe("agt.summary", function()
  it("writes the same scalars to the event file and to summary.csv, START and STOP around them", function()
    local d = tmpdir .. "/sum"
    local s = assert(SUM.open(d, { wall_time = 50, host = "h" }))
    s:scalars(1, 51, { { "loss", 2.5 }, { "robust/selected", 7 }, { "skipped", "not a number" } })
    s:scalars(2, 52, { { "loss", 1.25 } })
    s:flush()
    s:close(2, 53)
    local ev = assert(TF.read(s.path))
    assert.are.equal(TF.START, ev[2].session_status)
    assert.are.same({ { "loss", 2.5 }, { "robust/selected", 7 } }, ev[3].scalars)
    assert.are.equal(TF.STOP, ev[#ev].session_status)
    local rows = SUM.read_csv(d .. "/summary.csv")
    assert.are.same({ { 51, 1, "loss", 2.5 }, { 51, 1, "robust/selected", 7 }, { 52, 2, "loss", 1.25 } }, rows)
    assert.are.equal("wall_time,step,tag,value", read(d .. "/summary.csv"):match("^[^\n]*"))
    -- a second run appends to the CSV without a second header
    local s2 = assert(SUM.open(d, { wall_time = 60, host = "h" }))
    s2:scalars(3, 61, { { "loss", 1 } })
    s2:close(3, 62)
    assert.are.equal(4, #SUM.read_csv(d .. "/summary.csv"))
    local _, headers = read(d .. "/summary.csv"):gsub("wall_time,step", "")
    assert.are.equal(1, headers)
  end)
end)

describe("agt.progress", function()
  local function sink()
    local buf = {}
    return { write = function(_, ...) for _, x in ipairs({ ... }) do buf[#buf + 1] = x end end,
             flush = function() end, text = function() return table.concat(buf) end }
  end

  it("redraws one live line on a terminal, with step, steps/s, loss, accuracy and ETA", function()
    local out = sink()
    local p = P.new({ out = out, tty = true, total = 100, redraw = 0.5 })
    p:update(0, 0, 2.0, nil)
    p:update(1, 10, 1.5, { "top1-X-acc", 0.5 })
    p:update(1.1, 11, 1.4, { "top1-X-acc", 0.5 })   -- too soon: not redrawn
    p:update(2, 20, 1.0, { "top1-X-acc", 0.75 })
    local t = out.text()
    assert.is_nil(t:find("\n"))
    assert.truthy(t:find("\r\27%[Kstep 20/100  10%.00 steps/s  loss 1%.0000  top1%-X%-acc 0%.7500  ETA 8s$"))
    assert.is_nil(t:find("step 11/"))
    p:clear()
    assert.truthy(out.text():find("\r\27%[K$"))
  end)

  it("prints plain periodic lines when not on a terminal", function()
    local out = sink()
    local p = P.new({ out = out, tty = false, every = 10 })
    for step = 1, 30 do p:update(step, step, 1 / step, nil) end
    local _, nl = out.text():gsub("\n", "")
    assert.are.equal(2, nl)   -- at t = 11 and t = 21
    assert.is_nil(out.text():find("\r"))
    assert.truthy(out.text():find("^step 11  1%.00 steps/s  loss 0%.0909\n"))
  end)

  it("formats the ETA", function()
    assert.are.equal("45s", P.fmt_eta(45))
    assert.are.equal("2m05s", P.fmt_eta(125))
    assert.are.equal("1h01m", P.fmt_eta(3660))
    assert.are.equal("?", P.fmt_eta(math.huge))
  end)
end)
