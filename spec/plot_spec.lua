-- Specs of agt.draw (cairo: PNG, SVG and PDF from one drawing) and agt.plot / agt plot: curves
-- where the data says (counted as the SVG's width-2 paths and their points), labels in mixed case
-- as the PDF shows them, image sizes as each format records them.
local H = require("helpers")
local read = H.read
local D = require("agt.draw")
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

-- The curves of a plot's SVG: the point count of each path stroked at width 2, in order.
local function curves(svg)
  local out = {}
  for style, d in svg:gmatch('<path style="([^"]*)" d="([^"]*)"') do
    if style:find("stroke-width:2;", 1, true) then
      local _, k = d:gsub("[ML] ", "")
      out[#out + 1] = k
    end
  end
  return out
end

local function svg_size(svg) return svg:match('<svg [^>]*width="(%d+)px" height="(%d+)px" viewBox="0 0 (%d+) (%d+)"') end

describe("agt.draw", function()
  it("draws antialiased lines and mixed-case text to PNG, SVG and PDF", function()
    local function paint(cv)
      cv:line(0, 0, 59, 29, { 0, 0, 0 }, 1)
      cv:text(5, 25, "Mixed Case (ok)", { size = 10 })
    end
    local cv = D.canvas("png", tmpdir .. "/d.png", 60, 30)
    paint(cv)
    -- antialiased: along the diagonal some pixels are neither black nor white
    local grey = 0
    for x = 0, 59 do
      local p = cv:pixel(x, math.floor(x * 29 / 59))
      if p[1] > 0 and p[1] < 255 then grey = grey + 1 end
    end
    assert.is_true(grey > 10, grey)
    assert.are.same({ 255, 255, 255 }, cv:pixel(59, 0))
    -- text keeps its case: lower-case letters are narrower than their capitals
    assert.is_true(cv:text_width("krum", 12) < cv:text_width("KRUM", 12) - 2)
    assert.are.equal(tmpdir .. "/d.png", cv:close())
    assert.are.same({ 60, 30, 2 }, { H.png_size(read(tmpdir .. "/d.png")) })   -- 8-bit RGB
    cv = D.canvas("svg", tmpdir .. "/d.svg", 60, 30)
    paint(cv)
    cv:close()
    assert.are.same({ "60", "30", "60", "30" }, { svg_size(read(tmpdir .. "/d.svg")) })
    cv = D.canvas("pdf", tmpdir .. "/d.pdf", 60, 30)
    paint(cv)
    cv:close()
    local pdf = read(tmpdir .. "/d.pdf")
    assert.are.equal("%PDF-", pdf:sub(1, 5))
    assert.truthy(pdf:find("/MediaBox [ 0 0 60 30 ]", 1, true))
    assert.are.equal("Mixed Case (ok)", H.pdf_text(pdf))
    -- a byte that is not UTF-8 (a Latin-1 file name) shows as '?', not a failed drawing
    cv = D.canvas("pdf", tmpdir .. "/latin1.pdf", 60, 30)
    cv:text(1, 20, "caf\233 \237\160\128 \195\169t\195")
    cv:close()
    assert.are.equal("caf? ??? \233t?", H.pdf_text(read(tmpdir .. "/latin1.pdf")))
  end)

  it("refuses an unknown format, an unwritable path and a missing cairo by name", function()
    assert.has_error(function() D.canvas("gif", tmpdir .. "/x.gif", 10, 10) end,
                     "unknown image format 'gif' (expected png, svg or pdf)")
    for _, f in ipairs({ "png", "svg", "pdf" }) do
      local ok, err = pcall(function()
        local cv = D.canvas(f, tmpdir .. "/no/such/dir/x." .. f, 10, 10)
        cv:close()
      end)
      assert.is_false(ok)
      assert.matches("cannot write " .. tmpdir:gsub("%p", "%%%0") .. "/no/such/dir/x%." .. f, err)
    end
    local ok, err = pcall(D.library, "libcairo-missing.so.0")
    assert.is_false(ok)
    assert.matches("install the Debian package libcairo2", err)
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

  it("picks round ticks and writes them with the decimals their step has", function()
    assert.are.same({ 0, 0.2, 0.4, 0.6, 0.8, 1 }, PL.ticks(0, 1, 5))
    assert.are.same({ "0.50", "0.75", "1.00", "1.25", "1.50" }, PL.tick_labels(0.45, 1.5, 5))
    assert.are.same({ "0.0", "2.5", "5.0", "7.5", "10.0", "12.5" }, PL.tick_labels(0, 12.5, 5))
    assert.are.same({ "0", "10k", "20k" }, PL.tick_labels(0, 20000, 2))
    assert.are.same({ 0, 1000, 2000, 3000 }, PL.ticks(0, 3000, 5))
    assert.are.same({ 0, 500, 1000, 1500, 2000 }, PL.ticks(0, 2000, 5))
  end)

  it("writes an SVG and a PNG (and a PDF if asked) with runs overlaid and labelled by rule and attack", function()
    write_eval(tmpdir .. "/a", 0.01, "aggregator=bulyan\nattack=lie\nn=11\nf=2\nr=2\n")
    write_eval(tmpdir .. "/b", 0.003)
    local svg, png = PL.plot({ tmpdir .. "/a", { path = tmpdir .. "/b", label = "Median of b" } },
                             { output = tmpdir .. "/out" })
    assert.are.same({ tmpdir .. "/out.svg", tmpdir .. "/out.png" }, { svg, png })
    local text = read(svg)
    assert.truthy(text:find("<svg ", 1, true))
    assert.are.same({ 11, 11, 11, 11 }, curves(text))    -- 2 runs x 2 panels, 11 evaluations each
    assert.are.same({ "1100", "470", "1100", "470" }, { svg_size(text) })
    assert.are.same({ 1100, 470, 2 }, { H.png_size(read(png)) })
    local paths = { PL.plot({ tmpdir .. "/a", { path = tmpdir .. "/b", label = "Median of b" } },
                            { output = tmpdir .. "/out", formats = "pdf,png" }) }
    assert.are.same({ tmpdir .. "/out.pdf", tmpdir .. "/out.png" }, paths)
    local shown = H.pdf_text(read(paths[1]))
    assert.truthy(shown:find("bulyan / lie (n=11 f=2 r=2)", 1, true), shown)
    assert.truthy(shown:find("Median of b", 1, true), shown)   -- in its own case
    assert.truthy(shown:find("wall time (s)", 1, true), shown)
    assert.truthy(shown:find("step", 1, true), shown)
    -- the output's extension names the one format; an unknown format is refused by name
    assert.are.same({ tmpdir .. "/one.pdf" }, { PL.plot({ tmpdir .. "/a" }, { output = tmpdir .. "/one.pdf" }) })
    assert.is_nil(fs.kind(tmpdir .. "/one.svg"))
    local ok, err = pcall(PL.plot, { tmpdir .. "/a" }, { output = tmpdir .. "/x", formats = "png,jpeg" })
    assert.is_false(ok)
    assert.matches("unknown image format 'jpeg' %(expected png, svg or pdf%)", err)
  end)

  it("labels a run by its experiment, rule and attack names, not their paths, and takes a run's folder", function()
    assert(require("agt.fs").mkdir_p(tmpdir .. "/run"))
    write_eval(tmpdir .. "/run/eval", 0.01, "experiment=/home/me/exp/My_Exp.lua\naggregator=/home/me/rules/my_rule.lua\n"
      .. "attack=lie\nn=11\nf=2\nr=2\nrule_name=lua-Trimmed-mean\nattack_name=lie\n")
    local pdf = PL.plot({ tmpdir .. "/run" }, { output = tmpdir .. "/named.pdf" })
    local shown = H.pdf_text(read(pdf))
    assert.truthy(shown:find("My_Exp: lua-Trimmed-mean / lie (n=11 f=2 r=2)", 1, true), shown)
    assert.is_nil(shown:find("/home/me", 1, true))
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
    local svg, pdf = PL.plot({ tmpdir .. "/tags" }, { output = tmpdir .. "/tagplot", formats = { "svg", "pdf" },
      metrics = { "top1-X-acc", "loss", "robust/byzantine_selected" } })
    -- 1 run x 3 panels: 11 evaluations; 5 finite summary rows each
    assert.are.same({ 11, 5, 5 }, curves(read(svg)))
    assert.truthy(H.pdf_text(read(pdf)):find("robust/byzantine_selected", 1, true))
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
    local svg, pdf = PL.plot(paths, { output = tmpdir .. "/bands", formats = "svg,pdf" })
    local text = read(svg)
    local _, bands = text:gsub('<path style="[^"]*fill%-opacity:0%.2;[^"]*"', "")
    assert.are.same({ 11, 11 }, curves(text))            -- one curve in each panel...
    assert.are.equal(2, bands)                           -- ... and its band
    assert.truthy(H.pdf_text(read(pdf)):find("fashion-mnist: krum / lie (n=11 f=2 r=2), 3 seeds", 1, true))
    local runs = { {}, {}, {} }
    for k = 1, 3 do runs[k] = { label = "x", series = { m = { { 0, 0, k }, { 10, 1, 2 * k } } } } end
    runs[3].series.m[3] = { 20, 2, 9 }                   -- a step the others did not reach: left out
    local g = PL.bands(runs, { "m" })
    assert.are.equal(1, #g)
    assert.are.same({ { 0, 0, 2 }, { 10, 1, 4 } }, g[1].series.m)
    assert.are.same({ { 0, 0, 1, 3 }, { 10, 1, 2, 6 } }, g[1].band.m)
    svg = PL.plot(paths, { output = tmpdir .. "/nobands", bands = false })
    assert.are.equal(6, #curves(read(svg)))
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
    assert.are.same({ 2, 2 }, curves(text))            -- the two finite points, in both panels
    assert.is_nil(text:find("nan", 1, true))
    assert.is_nil(text:find("inf", 1, true))
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
    assert.are.same({ 11, 11 }, curves(read(tmpdir .. "/plot.svg")))
    assert.are.same({ 1100, 470, 2 }, { H.png_size(read(tmpdir .. "/plot.png")) })
    assert.are.equal(0, cmd({ tmpdir .. "/c", "--metric", "cross-entropy", "--format", "pdf", "--title", "Loss (CE)" }))
    assert.truthy(H.pdf_text(read(tmpdir .. "/plot.pdf")):find("Loss (CE)", 1, true))
    assert.are.equal(1, cmd({ tmpdir .. "/c", "--format", "bmp" }))
    assert.are.equal(2, cmd({ "--bogus" }))
    assert.are.equal(2, cmd({}))
    assert.are.equal(1, cmd({ tmpdir .. "/none" }))
    assert.are.equal(1, cmd({ tmpdir .. "/c", "--metric", "nope" }))
  end)
end)
