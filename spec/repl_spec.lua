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
    H.run("sleep 0.8")
  end)
  teardown(function()
    tmux("kill-server")
    os.execute("rm -rf " .. H.shell_quote(home))
  end)

  local function type_line(s)
    tmux("send-keys -t repl -l " .. H.shell_quote(s))
    tmux("send-keys -t repl Enter")
    H.run("sleep 0.3")
  end
  local function screen()
    local _, out = tmux("capture-pane -t repl -p -S -100")
    return out
  end

  it("evaluates multi-line chunks, prints values and survives errors and Ctrl-C", function()
    type_line("function twice(x)")
    type_line("return 2 * x")
    type_line("end")
    type_line("twice(21)")
    type_line("{ a = 1, b = { c = 'x' } }")
    type_line("error('boom')")
    type_line("while true do end")
    H.run("sleep 0.7")
    tmux("send-keys -t repl C-c")
    H.run("sleep 0.5")
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
    H.run("sleep 0.5")
    assert.truthy(screen():find("REPL-EXIT=0", 1, true))
    local hist = io.open(home .. "/.agt_history")
    assert.truthy(hist, "history file written under HOME")
    local text = hist:read("*a")
    hist:close()
    assert.truthy(text:find("twice", 1, true))
  end)
end)
