-- Specs of what a user finds after `make install` and `make bench`: the installed agt finds
-- everything its help points to (benchmarks, examples, docs) and has a man page; a benchmark
-- without PyTorch runs agt's part and skips the peer with one line.
local H = require("helpers")
local host = require("agt.host")

describe("make install", function()
  local dest
  setup(function() dest = H.tmpdir() end)
  teardown(function() os.execute("rm -rf " .. H.shell_quote(dest)) end)

  it("installs the binary, the Lua tree, bench/, examples/, docs/ and a man page", function()
    local rc, out, err = H.run(string.format("make -s -C %s install DESTDIR=%s PREFIX=/usr",
      H.shell_quote(host.root), H.shell_quote(dest)))
    assert.are.equal(0, rc, out .. err)
    for _, p in ipairs({ "/usr/bin/agt", "/usr/share/agt/lua/agt/init.lua", "/usr/share/agt/bench/step.lua",
                         "/usr/share/agt/examples/custom_rule.lua", "/usr/share/agt/docs/runner.md",
                         "/usr/share/man/man1/agt.1" }) do
      assert.truthy(H.read(dest .. p), p .. " is not installed")
    end
    local agt = H.shell_quote(dest .. "/usr/bin/agt")
    -- the MPI transport, where this build has it, beside the Lua tree where --MPI looks for it
    if H.read(host.root .. "/libagt_mpi.so") then
      assert.truthy(H.read(dest .. "/usr/share/agt/libagt_mpi.so"), "libagt_mpi.so is not installed")
      rc, out = H.run("cd / && " .. agt .. " -v")
      assert.matches("\nMPI: yes", out)
    end
    rc, out = H.run("cd / && " .. agt .. " bench --help")
    assert.are.equal(0, rc)
    -- the installed agt lists every benchmark of the tree (bench/*.lua), found from /
    local names = {}
    for _, f in ipairs(require("agt.fs").list(host.root .. "/bench")) do
      local b = f:match("^([%w_]+)%.lua$")
      if b then names[#names + 1] = b end
    end
    table.sort(names)
    assert.is_true(#names >= 5)
    assert.truthy(out:find("benchmarks: " .. table.concat(names, ", "), 1, true), out)
    rc, out = H.run("cd / && " .. agt .. " check " .. H.shell_quote(dest .. "/usr/share/agt/examples/custom_rule.lua"))
    assert.are.equal(0, rc, out)
    assert.matches("%.TH AGT 1", H.read(dest .. "/usr/share/man/man1/agt.1"))
  end)
end)

describe("agt bench without PyTorch", function()
  it("runs agt's part and skips the peer with one line", function()
    local rc, out, err = H.run("AGT_PYTHON=/nonexistent/python3 " .. H.shell_quote(H.agt) .. " bench step 0.02 1")
    assert.are.equal(0, rc, out .. err)
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.matches('"skipped":"python3%-torch is not importable by \\/nonexistent\\/python3"', lines[1])
    assert.matches('"engine":"agt"', out)
    assert.is_nil(out:find('"engine":"torch"', 1, true))
    assert.is_nil((out .. err):find("Traceback", 1, true))
    rc, out, err = H.run("AGT_PYTHON=/nonexistent/python3 " .. H.shell_quote(H.agt) .. " bench gar --n 5 --f 1 --d 1000 --reps 1 --rules median")
    assert.are.equal(0, rc, out .. err)
    assert.matches('"skipped":"python3%-torch is not importable', out)
  end)
end)

describe("agt help", function()
  local agt = H.shell_quote(H.agt)
  it("lists every topic, explains itself and takes synonyms and names", function()
    local rc, out = H.run(agt .. " help")
    assert.are.equal(0, rc)
    for _, t in ipairs({ "aggregators", "attacks", "experiments", "optim", "lr", "data", "gpu", "sweep", "check" }) do
      assert.truthy(out:find("\n  " .. t .. " ", 1, true), t .. " missing from agt help")
    end
    rc, out = H.run(agt .. " help help")
    assert.are.equal(0, rc)
    assert.matches("agt help TOPIC", out)
    local _, rules = H.run(agt .. " help aggregators")
    for _, syn in ipairs({ "rules", "rule", "gars" }) do
      local rc2, same = H.run(agt .. " help " .. syn)
      assert.are.equal(0, rc2)
      assert.are.equal(rules, same)
    end
    local _, optim = H.run(agt .. " help optim")
    assert.are.equal(optim, select(2, H.run(agt .. " help optimizers")))
    assert.matches("^krum %(aggregation rule%); needs n >= 2f%+3", select(2, H.run(agt .. " help krum")))
    rc, _, err = H.run(agt .. " help nope")
    assert.are.equal(1, rc)
    assert.matches("no help topic 'nope'", err)
  end)
end)

describe("make test's output", function()
  local okr, ok = pcall(function() return require("agt.gpu").available() end)
  if okr and ok == true then
    pending("lists the GPU specs pending for want of a device as one line (this machine has one: they run)")
    return
  end
  it("lists the GPU specs pending for want of a device as one line", function()
    local _, out = H.run(H.shell_quote(H.agt) .. " spec/run.lua " .. H.shell_quote(host.root .. "/spec/gpu_spec.lua"))
    local _, n = out:gsub("Pending %->", "")
    assert.are.equal(1, n, out)
    assert.matches("%d+ GPU spec%(s%): no GPU: ", out)
  end)
end)
