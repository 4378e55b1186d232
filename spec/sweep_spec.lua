-- Specs of agt.sweep / agt sweep: the grid a command line or a table describes (axes, the
-- attack-free cell, per-value arguments), refusals naming the flag, mean and std against the
-- textbook formulas, a real sweep of child runs that resumes without re-running finished cells,
-- records a refused run as failed and a diverged run as diverged, and writes its tables and
-- heat map.
local H = require("helpers")
local S = require("agt.sweep")

local function has_seq(list, seq)
  for i = 1, #list - #seq + 1 do
    local ok = true
    for k = 1, #seq do if list[i + k - 1] ~= seq[k] then ok = false; break end end
    if ok then return true end
  end
  return false
end

local function count(list, x)
  local n = 0
  for _, v in ipairs(list) do if v == x then n = n + 1 end end
  return n
end

describe("agt.sweep grid", function()
  local words = { "--out", "/tmp/x", "--experiment", "fashion-mnist", "--nb-workers", "11",
    "--nb-real-byz-workers", "2", "--aggregator", "average", "--aggregator", "nnm,krum",
    "--attack", "none", "--attack", "lie", "--seed", "1", "--seed", "2", "--use-gpu" }

  it("makes an axis of each flag given several times: 2 x 2 x 2 runs", function()
    local spec = S.parse(words)
    assert.are.equal(3, #spec.axes)
    assert.are.same({ "aggregator", "attack", "seed" }, { spec.axes[1][1], spec.axes[2][1], spec.axes[3][1] })
    local cells = S.cells(spec)
    assert.are.equal(8, #cells)
    local names = {}
    for _, c in ipairs(cells) do
      assert.is_nil(names[c.name], "two runs share the folder " .. c.name)
      names[c.name] = true
      assert.is_true(has_seq(c.args, { "--use-gpu" }))
      assert.are.equal(1, count(c.args, "--aggregator"))
      assert.are.equal(1, count(c.args, "--seed"))
    end
    assert.is_true(names["aggregator=nnm,krum_attack=lie_seed=2"] ~= nil)
  end)

  it("runs --attack none without an attack and with r = 0, the others with the given r", function()
    for _, c in ipairs(S.cells(S.parse(words))) do
      if c.values.attack == "none" then
        assert.are.equal(0, count(c.args, "--attack"))
        assert.is_true(has_seq(c.args, { "--nb-real-byz-workers", "0" }))
        assert.are.equal(1, count(c.args, "--nb-real-byz-workers"))
      else
        assert.is_true(has_seq(c.args, { "--attack", "lie" }))
        assert.is_true(has_seq(c.args, { "--nb-real-byz-workers", "2" }))
      end
    end
  end)

  it("gives key:value words after an attack's name to that run's --attack-args", function()
    local cells = S.cells(S.parse({ "--out", "o", "--attack", "reverse", "factor:100", "--attack", "reverse" }))
    assert.are.equal(2, #cells)
    assert.is_true(has_seq(cells[1].args, { "--attack", "reverse", "--attack-args", "factor:100" }))
    assert.are.equal(0, count(cells[2].args, "--attack-args"))
    assert.are.equal("reverse factor:100", cells[1].values.attack)
    assert.are_not.equal(cells[1].name, cells[2].name)
  end)

  it("builds the same runs from a Lua table", function()
    local a = S.cells(S.parse(words))
    local b = S.cells(S.from_table{ out = "/tmp/x",
      flags = { experiment = "fashion-mnist", nb_workers = 11, ["nb-real-byz-workers"] = 2, use_gpu = true },
      axes = { seed = { 1, 2 }, attack = { "none", "lie" }, aggregator = { "average", "nnm,krum" } } })
    assert.are.equal(#a, #b)
    for i = 1, #a do
      assert.are.equal(a[i].name, b[i].name)
      local sa, sb = { unpack(a[i].args) }, { unpack(b[i].args) }
      table.sort(sa); table.sort(sb)
      assert.are.same(sa, sb)
    end
  end)

  it("refuses, naming the flag: no --out, the flags it owns, words after a plain value, a bad --jobs", function()
    local function err(w)
      local ok, e = pcall(S.parse, w)
      assert.is_false(ok)
      return e
    end
    assert.matches("%-%-out", err({ "--aggregator", "krum" }))
    assert.matches("%-%-checkpoint%-dir: set by the sweep", err({ "--out", "o", "--checkpoint-dir", "x" }))
    assert.matches("%-%-seed: one value each time", err({ "--out", "o", "--seed", "1", "2", "--seed", "3" }))
    assert.matches("%-%-jobs", err({ "--out", "o", "--jobs", "0" }))
    assert.matches("unexpected argument 'krum'", err({ "krum" }))
    local ok, e = pcall(S.from_table, { out = "o", axes = { seed = {} } })
    assert.is_false(ok)
    assert.matches("axes.seed", e)
  end)

  it("computes mean and sample std as the textbook does", function()
    local m, s = S.mean_std({ 0.5, 0.7, 0.9 })
    assert.is_true(math.abs(m - 0.7) < 1e-12)
    assert.is_true(math.abs(s - 0.2) < 1e-12)
    m, s = S.mean_std({ 0.25 })
    assert.are.same({ 0.25, 0 }, { m, s })
    assert.is_nil(S.mean_std({}))
  end)

  it("reads a diverged run as a result with no final value, a refused one as failed", function()
    local d = H.tmpdir()
    H.write(d .. "/log", "Step 0: top1-X-acc = 0.1\nagt run: model diverged with loss = nan at step 3\n")
    H.write(d .. "/eval", "1.0\t0\ttop1-X-acc:0.1\n")
    local r = S.read_run(d, 1)
    assert.are.equal("diverged", r.status)
    assert.is_nil(r.final)
    assert.are.equal(0.1, r.best)
    H.write(d .. "/log", "agt run: --aggregator: bulyan needs n >= 4f+3, got n=5 f=1\n")
    os.remove(d .. "/eval")
    r = S.read_run(d, 2)
    assert.are.equal("failed", r.status)
    assert.matches("bulyan needs", r.message)
    os.execute("rm -rf " .. H.shell_quote(d))
  end)
end)

describe("agt sweep", function()
  local d
  setup(function() d = H.tmpdir() end)
  teardown(function() os.execute("rm -rf " .. H.shell_quote(d)) end)
  local cmd = function()
    return "sweep --out " .. H.shell_quote(d .. "/s") .. " --jobs 2 --experiment fashion-mnist "
      .. "--nb-workers 5 --nb-decl-byz-workers 1 --nb-real-byz-workers 1 --max-step 3 "
      .. "--evaluation-period -1 --aggregator average --aggregator bulyan --attack none --attack lie"
  end

  it("runs every cell as a child agt run, tabulates it and resumes without re-running", function()
    local rc, out, err = H.agt_run(cmd())
    -- bulyan cannot take n = 5, f = 1: its two runs fail, the sweep says so and exits 1
    assert.are.equal(1, rc, err)
    assert.matches("4 run%(s%)", out)
    local csv = assert(H.read(d .. "/s/results.csv"))
    local lines = {}
    for l in csv:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.are.equal(5, #lines)
    assert.are.equal("aggregator,attack,status,metric,final,best,step,steps_per_s,dir", lines[1])
    assert.matches("^average,none,done,top1%-X%-acc,[%d.]+,[%d.]+,3,[%d.]+,aggregator=average_attack=none$", lines[2])
    assert.matches("^average,lie,done,", lines[3])
    assert.matches("^bulyan,none,failed,", lines[4])
    assert.matches("n >= 4f%+3", H.read(d .. "/s/aggregator=bulyan_attack=none/log"))
    -- the run's own evaluation file and its command
    assert.matches("\t3\ttop1%-X%-acc:", H.read(d .. "/s/aggregator=average_attack=lie/eval"))
    assert.matches("'%-%-attack' 'lie'", H.read(d .. "/s/aggregator=average_attack=lie/command"))
    assert.is_nil(H.read(d .. "/s/aggregator=average_attack=none/command"):find("'--attack'", 1, true))
    -- tables and heat map
    assert.matches("attack \\ rule", H.read(d .. "/s/table.txt"), 1, true)
    assert.matches("^aggregator,attack,runs,final_mean", H.read(d .. "/s/summary.csv"))
    local w, h = H.read(d .. "/s/heatmap.svg"):match('<svg [^>]*width="(%d+)px" height="(%d+)px"')
    assert.truthy(w)
    assert.are.same({ tonumber(w), tonumber(h), 2 }, { H.png_size(H.read(d .. "/s/heatmap.png")) })
    -- again: the finished runs stay (same eval file), the failed ones run again
    local before = H.read(d .. "/s/aggregator=average_attack=lie/eval")
    rc, out = H.agt_run(cmd())
    assert.are.equal(1, rc)
    assert.matches("2 finished before, 2 to run", out)
    assert.are.equal(before, H.read(d .. "/s/aggregator=average_attack=lie/eval"))
  end)

  it("prints its usage with --help and refuses a bad command with status 2", function()
    local rc, out = H.agt_run("sweep --help")
    assert.are.equal(0, rc)
    assert.matches("Usage: agt sweep %-%-out DIR", out)
    local err
    rc, out, err = H.agt_run("sweep --aggregator krum")
    assert.are.equal(2, rc)
    assert.matches("agt sweep: %-%-out", err)
  end)
end)
