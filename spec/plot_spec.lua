-- Specs of agt.png and agt.plot / agt plot: a valid PNG (checked chunk by chunk, CRCs, and the
-- decompressed pixels), curves where the data says, SVG with one polyline per run and labels.
local H = require("helpers")
local read = H.read
local PNG = require("agt.png")
local PL = require("agt.plot")
local fs = require("agt.fs")

local tmpdir = os.tmpname()
os.remove(tmpdir)
setup(function() assert(fs.mkdir_p(tmpdir)) end)
teardown(function() os.execute("rm -rf '" .. tmpdir .. "'") end)


local function write_eval(path, rate, info)
  local f = assert(io.open(path, "w"))
  local t = 1.7e9
  for s = 0, 1000, 100 do
    t = t + 2
    f:write(string.format("%.6f\t%d\ttop1-X-acc:%.4f\tcross-entropy:%.4f\n", t, s,
                          0.1 + 0.8 * (1 - math.exp(-rate * s)), 2 * math.exp(-rate * s)))
  end
  f:close()
  if info then
    f = assert(io.open(path .. ".info", "w"))
    f:write(info)
    f:close()
  end
end

describe("agt.png", function()
  it("encodes a PNG whose chunks, CRCs and pixels check out", function()
    local cv = PNG.canvas(7, 5, { 10, 20, 30 })
    cv:rect(2, 1, 3, 2, { 255, 0, 0 })
    local s = cv:encode()
    local info = assert(PNG.inspect(s))
    assert.are.same({ "IHDR", "IDAT", "IEND" }, info.chunks)
    assert.is_true(info.crc_ok)
    assert.are.same({ 7, 5, 8, 2 }, { info.width, info.height, info.depth, info.color })
    local raw = assert(PNG.inflate(info.data, (7 * 3 + 1) * 5))
    assert.are.equal((7 * 3 + 1) * 5, #raw)
    local function px(x, y)
      local i = y * (7 * 3 + 1) + 1 + x * 3 + 1
      return { raw:byte(i, i + 2) }
    end
    assert.are.equal(0, raw:byte(1))   -- filter type of row 0
    assert.are.same({ 10, 20, 30 }, px(0, 0))
    assert.are.same({ 255, 0, 0 }, px(2, 1))
    assert.are.same({ 255, 0, 0 }, px(3, 2))
    assert.are.same({ 10, 20, 30 }, px(4, 2))
    -- a single changed byte is caught by the chunk CRC
    local bad = s:sub(1, 40) .. string.char((s:byte(41) + 1) % 256) .. s:sub(42)
    assert.is_false(PNG.inspect(bad).crc_ok)
  end)

  it("draws anti-aliased lines and text", function()
    local cv = PNG.canvas(40, 20)
    cv:line(0, 10, 39, 10, { 0, 0, 0 }, 2)
    assert.are.same({ 0, 0, 0 }, { cv:get(20, 10) })
    assert.are.same({ 255, 255, 255 }, { cv:get(20, 2) })
    cv:text(1, 1, "A1", { 0, 0, 255 }, 1)
    assert.are.same({ 0, 0, 255 }, { cv:get(2, 1) })   -- the apex of the A
    assert.are.same({ 255, 255, 255 }, { cv:get(1, 1) })
  end)
end)

describe("agt.plot", function()
  it("reads evaluation files and refuses malformed lines", function()
    local p = tmpdir .. "/e1"
    write_eval(p, 0.01)
    local ev = assert(PL.read_eval(p))
    assert.are.equal(11, #ev.rows)
    assert.are.same({ "top1-X-acc", "cross-entropy" }, ev.names)
    local pts = PL.series(ev, "top1-X-acc")
    assert.are.same({ 0, 0, 0.1 }, pts[1])
    assert.are.equal(1000, pts[11][1])
    assert.is_true(math.abs(pts[11][2] - 20) < 1e-6)
    local f = io.open(tmpdir .. "/bad", "w"); f:write("1.0\t2\tx:1\nnot a line\n"); f:close()
    local r, err = PL.read_eval(tmpdir .. "/bad")
    assert.is_nil(r)
    assert.truthy(err:find("bad:2:"))
  end)

  it("leaves the time stopped between a checkpoint and its resume out of the time axis", function()
    local p = tmpdir .. "/resumed"
    local f = io.open(p, "w")
    f:write("100\t0\tacc:0.1\n110\t50\tacc:0.5\n", "5000\t50\tacc:0.5\n5010\t100\tacc:0.7\n")
    f:close()
    local pts = PL.series(assert(PL.read_eval(p)), "acc")
    assert.are.same({ 0, 10, 10, 20 }, { pts[1][2], pts[2][2], pts[3][2], pts[4][2] })
  end)

  it("picks round ticks", function()
    assert.are.same({ 0, 0.2, 0.4, 0.6, 0.8, 1 }, PL.ticks(0, 1, 5))
    assert.are.same({ 0, 1000, 2000, 3000 }, PL.ticks(0, 3000, 5))
    assert.are.same({ 0, 500, 1000, 1500, 2000 }, PL.ticks(0, 2000, 5))
  end)

  it("writes an SVG and a PNG with runs overlaid and labelled by rule and attack", function()
    write_eval(tmpdir .. "/a", 0.01, "aggregator=bulyan\nattack=lie\nn=11\nf=2\nr=2\n")
    write_eval(tmpdir .. "/b", 0.003)
    local svg, png = PL.plot({ tmpdir .. "/a", { path = tmpdir .. "/b", label = "median" } },
                             { output = tmpdir .. "/out" })
    assert.are.equal(tmpdir .. "/out.svg", svg)
    local text = read(svg)
    assert.truthy(text:find("^<svg "))
    local _, polylines = text:gsub("<polyline", "")
    assert.are.equal(4, polylines)   -- 2 runs x 2 panels
    assert.truthy(text:find("bulyan / lie %(n=11 f=2 r=2%)"))
    assert.truthy(text:find(">median<"))
    assert.truthy(text:find(">step<"))
    assert.truthy(text:find(">wall time %(s%)<"))
    local info = assert(PNG.inspect(read(png)))
    assert.is_true(info.crc_ok)
    assert.are.equal(1100, info.width)
  end)

  it("labels a run by its experiment, rule and attack names, not their paths, and takes a run's folder", function()
    assert(require("agt.fs").mkdir_p(tmpdir .. "/run"))
    write_eval(tmpdir .. "/run/eval", 0.01, "experiment=/home/me/exp/my_exp.lua\naggregator=/home/me/rules/my_rule.lua\n"
      .. "attack=lie\nn=11\nf=2\nr=2\nrule_name=lua-trimmed-mean\nattack_name=lie\n")
    local svg = PL.plot({ tmpdir .. "/run" }, { output = tmpdir .. "/named" })
    local text = read(svg)
    assert.truthy(text:find(">my_exp: lua%-trimmed%-mean / lie %(n=11 f=2 r=2%)<"), text:match("<text[^\n]*lua[^\n]*"))
    assert.is_nil(text:find("/home/me", 1, true))
  end)

  it("draws several metrics and summary tags, each in its panel against the step", function()
    assert(require("agt.fs").mkdir_p(tmpdir .. "/tags"))
    write_eval(tmpdir .. "/tags/eval", 0.01)
    local f = assert(io.open(tmpdir .. "/tags/summary.csv", "w"))
    f:write("wall_time,step,tag,value\n")
    for s = 10, 50, 10 do
      f:write(string.format("%d,%d,loss,%g\n", 100 + s, s, 2 / s))
      f:write(string.format("%d,%d,robust/byzantine_selected,%d\n", 100 + s, s, s % 20 == 0 and 1 or 0))
    end
    f:write("160,60,loss,nan\n")
    f:close()
    local svg = PL.plot({ tmpdir .. "/tags" }, { output = tmpdir .. "/tagplot",
      metrics = { "top1-X-acc", "loss", "robust/byzantine_selected" } })
    local text = read(svg)
    local _, polylines = text:gsub("<polyline", "")
    assert.are.equal(3, polylines)                   -- 1 run x 3 panels
    assert.truthy(text:find(">robust/byzantine_selected<", 1, true))
    local counts = {}
    for pts in text:gmatch('points="([^"]*)"') do local _, k = pts:gsub(",", ""); counts[#counts + 1] = k end
    assert.are.same({ 11, 5, 5 }, counts)            -- 11 evaluations; 5 finite summary rows each
    local ok, err = pcall(PL.plot, { tmpdir .. "/tags" }, { output = tmpdir .. "/x", metrics = { "losss" } })
    assert.is_false(ok)
    assert.matches("no run has the metric or summary tag 'losss'", err)
  end)

  it("draws the seeds of one setting as their mean with a band from the lowest to the highest", function()
    local info = "experiment=fashion-mnist\naggregator=krum\nattack=lie\nn=11\nf=2\nr=2\n"
    local paths = {}
    for k, rate in ipairs({ 0.01, 0.02, 0.03 }) do
      local dir = tmpdir .. "/seed=" .. k            -- a sweep's folder name has '='
      assert(require("agt.fs").mkdir_p(dir))
      write_eval(dir .. "/eval", rate, info .. "seed=" .. k .. "\n")
      paths[k] = dir
    end
    local svg = PL.plot(paths, { output = tmpdir .. "/bands" })
    local text = read(svg)
    local _, polylines = text:gsub("<polyline", "")
    local _, polygons = text:gsub("<polygon", "")
    assert.are.same({ 2, 2 }, { polylines, polygons })   -- one curve and its band, in both panels
    assert.truthy(text:find("krum / lie (n=11 f=2 r=2), 3 seeds", 1, true))
    local runs = { {}, {}, {} }
    for k = 1, 3 do runs[k] = { label = "x", series = { m = { { 0, 0, k }, { 10, 1, 2 * k } } } } end
    runs[3].series.m[3] = { 20, 2, 9 }                   -- a step the others did not reach: left out
    local g = PL.bands(runs, { "m" })
    assert.are.equal(1, #g)
    assert.are.same({ { 0, 0, 2 }, { 10, 1, 4 } }, g[1].series.m)
    assert.are.same({ { 0, 0, 1, 3 }, { 10, 1, 2, 6 } }, g[1].band.m)
    svg = PL.plot(paths, { output = tmpdir .. "/nobands", bands = false })
    _, polylines = read(svg):gsub("<polyline", "")
    assert.are.equal(6, polylines)
    -- agt plot takes the folders by their names, '=' and all
    local sink = { write = function(self) return self end, flush = function() end }
    local out = io.stdout
    io.stdout = sink
    local ok, code = pcall(require("agt.cli.plot"), { paths[1], paths[2], "--output", tmpdir .. "/cli" })
    io.stdout = out
    assert(ok, code)
    assert.are.equal(0, code)
  end)

  it("leaves out values that are not finite, with a warning naming the file, the metric and the step", function()
    local f = assert(io.open(tmpdir .. "/nan", "w"))
    f:write("1.0\t0\ttop1-X-acc:0.1\n2.0\t10\ttop1-X-acc:0.5\n3.0\t20\ttop1-X-acc:nan\n4.0\t30\ttop1-X-acc:inf\n")
    f:close()
    local warnings = {}
    local svg = PL.plot({ tmpdir .. "/nan" }, { output = tmpdir .. "/nanplot", warn = function(m) warnings[#warnings + 1] = m end })
    assert.are.equal(1, #warnings)
    assert.matches("nan: 2 value%(s%) of top1%-X%-acc not finite %(from step 20%): not drawn", warnings[1])
    local text = read(svg)
    for pts in text:gmatch('points="([^"]*)"') do
      assert.is_nil(pts:find("[ni][an][nf]"), pts)     -- no nan, no inf among the coordinates
      local _, k = pts:gsub(",", "")
      assert.are.equal(2, k)                            -- the two finite points
    end
  end)

  it("runs as agt plot", function()
    write_eval(tmpdir .. "/c", 0.01)
    local cli = require("agt.cli.plot")
    -- what it prints is its business here: kept off the progress dots
    local sink = { write = function(self) return self end, flush = function() end }
    local function cmd(args)
      local out, err = io.stdout, io.stderr
      io.stdout, io.stderr = sink, sink
      local ok, code = pcall(cli, args)
      io.stdout, io.stderr = out, err
      assert(ok, code)
      return code
    end
    assert.are.equal(0, cmd({ tmpdir .. "/c", "--metric", "cross-entropy" }))
    assert.truthy(read(tmpdir .. "/plot.svg"):find("cross%-entropy"))
    assert.truthy(read(tmpdir .. "/plot.png"):sub(2, 4) == "PNG")
    assert.are.equal(2, cmd({ "--bogus" }))
    assert.are.equal(2, cmd({}))
    assert.are.equal(1, cmd({ tmpdir .. "/none" }))
    assert.are.equal(1, cmd({ tmpdir .. "/c", "--metric", "nope" }))
  end)
end)
