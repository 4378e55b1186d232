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
  setup(function()
    home = H.tmpdir()
    tmux("kill-server")
    tmux(string.format("new-session -d -s repl -x 150 -y 50 'HOME=%s %s; echo REPL-EXIT=$?; sleep 20'",
                       home, H.shell_quote(H.agt)))
  end)
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
end)
