-- The interactive REPL, driven from a real terminal (tmux): multi-line input, expression
-- printing, errors that keep the REPL alive, Ctrl-C of a running loop, Ctrl-D to leave.
local H = require("helpers")

local function tmux(args) return H.run("tmux -L agt-spec " .. args) end

describe("agt REPL", function()
  if H.run("command -v tmux") ~= 0 then
    it("needs tmux (make setup installs it)", function() error("tmux is not installed: run make setup") end)
    return
  end
  local home
  setup(function() home = H.tmpdir() end)
  teardown(function()
    tmux("kill-server")
    os.execute("rm -rf " .. H.shell_quote(home))
  end)

  local function screen()
    local _, out = tmux("capture-pane -t repl -p -S -200")
    return out
  end
  -- Waits (up to 15 s, the machine may be busy) until the screen shows `text`.
  local function wait_for(text)
    for _ = 1, 150 do
      if screen():find(text, 1, true) then return true end
      H.run("sleep 0.1")
    end
    return false
  end
  local prompts = 1
  -- A fresh tmux server running the REPL, once its first prompt shows. A server just killed
  -- may still be going away: wait until it is gone, and start again if the new one shows no
  -- prompt (a new session made against the dying server shows nothing).
  local function start(cwd)
    prompts = 1
    for _ = 1, 3 do
      tmux("kill-server")
      for _ = 1, 50 do
        if tmux("has-session -t repl") ~= 0 then break end
        H.run("sleep 0.1")
      end
      local rc = tmux(string.format("new-session -d -s repl -x 150 -y 50 %s'HOME=%s %s; echo REPL-EXIT=$?; sleep 20'",
                                    cwd and ("-c " .. H.shell_quote(cwd) .. " ") or "", home, H.shell_quote(H.agt)))
      if rc == 0 and wait_for("agt>") then return true end
    end
    return false
  end
  local function count(text)
    local n, i = 0, 1
    local s = screen()
    while true do
      local a, b = s:find(text, i, true)
      if not a then return n end
      n, i = n + 1, b + 1
    end
  end
  -- Types a line, then waits until the REPL shows a fresh main prompt (or a continuation one).
  local function type_line(s, continues)
    tmux("send-keys -t repl -l " .. H.shell_quote(s))
    tmux("send-keys -t repl Enter")
    if continues then return end
    prompts = prompts + 1
    for _ = 1, 150 do
      if count("agt>") >= prompts then return end
      H.run("sleep 0.1")
    end
  end

  it("evaluates multi-line chunks, prints values and survives errors and Ctrl-C", function()
    assert.is_true(start(), "no REPL prompt within 15 s: " .. screen())
    assert.is_true(wait_for("agt>"), screen())
    type_line("function twice(x)", true)
    type_line("return 2 * x", true)
    type_line("end")
    type_line("twice(21)")
    type_line("{ a = 1, b = { c = 'x' } }")
    type_line("error('boom')")
    type_line("while true do end", true)
    H.run("sleep 0.7")
    tmux("send-keys -t repl C-c")
    prompts = prompts + 1
    assert.is_true(wait_for("interrupted!"), screen())
    type_line("print('still ' .. 'alive')")
    type_line("agt.tensor.new({2, 2}):numel()")
    local s = screen()
    assert.truthy(s:find("\n42\n", 1, true), s)
    assert.truthy(s:find('{ a = 1, b = { c = "x" } }', 1, true), s)
    assert.truthy(s:find("boom", 1, true), s)
    assert.truthy(s:find("interrupted!", 1, true), s)
    assert.truthy(s:find("still alive", 1, true), s)
    assert.truthy(s:find("\n4\n", 1, true), s)
    tmux("send-keys -t repl C-d")
    assert.is_true(wait_for("REPL-EXIT=0"), screen())
    local hist = io.open(home .. "/.agt_history")
    assert.truthy(hist, "history file written under HOME " .. home .. ": " .. select(2, H.run("ls -la " .. home)) .. screen())
    local text = hist:read("*a")
    hist:close()
    assert.truthy(text:find("twice", 1, true))
  end)

  it("has =expr, ?x and help(x), Tab completion, tensors as rows, a compiled s:run() and exit", function()
    assert.is_true(start(require("agt.host").root), "no REPL prompt within 15 s: " .. screen())
    type_line("=6 * 7")
    type_line("?krum")
    type_line("help('lie')")
    tmux("send-keys -t repl -l " .. H.shell_quote("G = agt.tensor.ne"))
    tmux("send-keys -t repl Tab")
    tmux("send-keys -t repl -l " .. H.shell_quote("({2, 3}):fill(1.5)"))
    type_line("")
    type_line("G")
    -- a plain Lua loop runs compiled inside s:run() (the REPL interprets it elsewhere)
    type_line("s = agt.session{ experiment = 'fashion-mnist', aggregator = 'average', "
      .. "nb_workers = 3, max_step = 3, evaluation_period = -1, quiet = true }")
    type_line("s")
    type_line("=s:run().steps .. ' steps, JIT ' .. tostring(jit.status())")
    type_line("exit", true)   -- no prompt follows
    assert.is_true(wait_for("REPL-EXIT=0"), screen())
    local sc = screen()
    assert.truthy(sc:find("\n42\n", 1, true), sc)
    assert.truthy(sc:find("krum (aggregation rule); needs n >= 2f+3", 1, true), sc)
    assert.truthy(sc:find("lie (attack)\na little is enough", 1, true), sc)
    assert.truthy(sc:find("G = agt.tensor.new({2, 3}):fill(1.5)", 1, true), sc)   -- completed
    assert.truthy(sc:find("agt.tensor f32 2x3 on cpu\n       1.5        1.5        1.5\n       1.5", 1, true), sc)
    assert.truthy(sc:find("agt.session: fashion-mnist, average, n=3 f=0 r=0, step 0, d=79510", 1, true), sc)
    assert.truthy(sc:find("3 steps, JIT false", 1, true), sc)   -- and the JIT back off after
  end)
end)

describe("agt.repl", function()
  local R = require("agt.repl")
  it("lets rule:aggregate(G) make its output (a new d-vector, then the info)", function()
    local A = require("agt.aggregators")
    local G = agt.tensor.new({ 5, 3 })
    for i = 1, 15 do G[i] = i end
    local out, info = A.new("krum", 5, 1):aggregate(G)
    assert.are.equal(3, #out)
    assert.are.same({ 2 }, info.selected)      -- rows 2 and 3 tie (equally spaced rows): the lower
    assert.are.same({ 4, 5, 6 }, { out[1], out[2], out[3] })
    out = A.new("median", 5, 1):aggregate(G)
    assert.are.same({ 7, 8, 9 }, { out[1], out[2], out[3] })
  end)

  it("rewrites =expr, ?x and exit before compiling", function()
    assert.are.equal("return 1 + 1", R.rewrite("=1 + 1"))
    assert.are.equal("return require('agt.repl').help(agt.tensor)", R.rewrite("?agt.tensor"))
    assert.are.equal('return require(\'agt.repl\').help("krum")', R.rewrite("? krum"))
    assert.are.same({ nil, "exit" }, { R.rewrite(" quit() ") })
    assert.are.equal("x = 1", R.rewrite("x = 1"))
  end)

  it("has tensor operators, element-wise against a plain loop, NaN and ±inf included", function()
    local T = agt.tensor
    local a, b = T.new({ 2, 3 }), T.new({ 2, 3 })
    local av = { 1.5, -2, 0 / 0, math.huge, -math.huge, 3 }
    local bv = { 0.5, 4, 1, math.huge, 2, -3 }
    for i = 1, 6 do a[i], b[i] = av[i], bv[i] end
    local function same(t, f)
      assert.are.same({ 2, 3 }, t.shape)
      for i = 1, 6 do
        local want = f(av[i], bv[i])
        local got = t[i]
        if want ~= want then assert.is_true(got ~= got, i) else assert.are.equal(want, got, i) end
      end
    end
    same(a + b, function(x, y) return x + y end)
    same(a - b, function(x, y) return x - y end)
    same(a * b, function(x, y) return x * y end)
    same(a + 2, function(x) return x + 2 end)
    same(2 + a, function(x) return 2 + x end)
    same(a - 2, function(x) return x - 2 end)
    same(2 - a, function(x) return 2 - x end)
    same(a * 3, function(x) return x * 3 end)
    same(3 * a, function(x) return 3 * x end)
    same(a / 4, function(x) return x / 4 end)
    same(-a, function(x) return -x end)
    assert.are.equal(1.5, a[1])                      -- the operands are left as they were
    local ok, err = pcall(function() return a + T.new({ 4 }) end)
    assert.is_false(ok)
    assert.matches("add", err)
  end)

  it("completes globals, fields and methods", function()
    assert.are.same({ "agt.tensor" }, R.complete("agt.tens"))
    rawset(_G, "COMPLETE_T", agt.tensor.new({ 2 }))
    local m = R.complete("COMPLETE_T:no")
    assert.are.same({ "COMPLETE_T:norm" }, m)
    assert.truthy(#R.complete("COMPLETE_T:") > 10)
    rawset(_G, "COMPLETE_T", nil)
    local kw = R.complete("whi")
    assert.are.same({ "while" }, kw)
    assert.are.same({}, R.complete("no_such_global.x"))
  end)

  it("prints a matrix as rows with its shape, and help for a function from its comment", function()
    local G = agt.tensor.new({ 8, 10 }):fill(2)
    local text = R.format(G)
    assert.matches("^agt.tensor f32 8x10 on cpu\n", text)
    assert.matches("%.%.%. %(8 rows%)$", text)
    local _, n = text:gsub("\n", "")
    assert.are.equal(R.max_rows + 1, n)
    local out = {}
    local real = io.write
    io.write = function(...) for _, x in ipairs({ ... }) do out[#out + 1] = x end end
    R.help(R.complete)
    io.write = real
    assert.matches("Completions of the word before the cursor", table.concat(out))
  end)
end)
