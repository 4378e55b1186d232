-- Doc tests: every command and code block of README.md and docs/*.md runs as it is written, in
-- a fresh folder where `./agt` is the built binary and examples/, bindings/, lua/ and libagt.so the
-- tree's (what a fresh clone has after `make`).
--
--   ```sh blocks, and plain ``` blocks whose lines are commands (./agt ..., make ...): each
--     command (lines joined at a trailing '\', a trailing '# comment' dropped) exits 0. A
--     command written `agt ...` is refused: a fresh clone has no `agt` on its PATH.
--   ```lua blocks: a chunk run by ./agt that exits 0; an `agt> ` transcript runs line by line
--     as the REPL runs it (an expression is shown, a statement executed).
--   ```python blocks: run by Debian's python3 with bindings/python on the path; exit 0.
--   `make` alone is the build, done before the specs run.
--   Other plain ``` blocks are output (an evaluation line, an error message, a table).
-- The nearest non-blank line above a block may say how to take it:
--   <!-- doc-test: skip: REASON -->       not run (pending, with the reason)
--   <!-- doc-test: output -->             output, not a command
--   <!-- doc-test: gpu -->                pending where there is no CUDA device
--   <!-- doc-test: rule | attack | experiment -->   a plugin template: the table it returns
--                                          must meet its contract (agt.contract)
--   <!-- doc-test: max-step N -->         commands run with --max-step N (a long run, shortened)
--   <!-- doc-test: fails -->              every command exits non-zero (an example of a refusal)
local H = require("helpers")
local host = require("agt.host")

local root = host.root

-- The fenced blocks of a markdown file: { file, line, lang, lines = {...}, note }.
local function blocks(path, name)
  local out, cur, prev = {}, nil, nil
  local ln = 0
  for line in io.lines(path) do
    ln = ln + 1
    if cur then
      if line:match("^```%s*$") then
        out[#out + 1] = cur
        cur, prev = nil, line
      else
        cur.lines[#cur.lines + 1] = line
      end
    else
      local lang = line:match("^```(%w*)%s*$")
      if lang then
        cur = { file = name, line = ln, lang = lang, lines = {},
                note = prev and prev:match("^<!%-%- doc%-test: (.-) %-%->$") }
      elseif line:match("%S") then
        prev = line
      end
    end
  end
  return out
end

-- Commands of a block: lines joined at '\', comments and blanks dropped.
local function commands(lines)
  local out, acc = {}, nil
  for _, l in ipairs(lines) do
    local cont = l:match("^(.-)\\%s*$")
    local text = cont or l
    acc = acc and (acc .. " " .. text:match("^%s*(.-)$")) or text
    if not cont then
      local c = acc:gsub("%s+#%s.*$", ""):match("^%s*(.-)%s*$")
      if c ~= "" then out[#out + 1] = c end
      acc = nil
    end
  end
  return out
end

local SUBCOMMANDS = { run = true, sweep = true, check = true, plot = true, bench = true, help = true }
local function is_command(c)
  local word = c:match("^agt%s+(%S+)")
  return c:match("^%./agt") or c:match("^make%s") or c == "make" or (word and (SUBCOMMANDS[word] or word:match("^%-")))
end

local function kind(b)
  local note = b.note or ""
  if note:match("^skip") then return "skip" end
  if note == "output" then return "output" end
  if note == "gpu" then return "gpu" end
  if note == "rule" or note == "attack" or note == "experiment" then return "contract" end
  if b.lang == "lua" then
    return (b.lines[1] or ""):match("^agt> ") and "repl" or "lua"
  end
  if b.lang == "python" then return "python" end
  local cmds = commands(b.lines)
  if b.lang == "sh" then return "sh" end
  if #cmds > 0 and is_command(cmds[1]) and not cmds[1]:match("^%.?/?agt [%w-]+: ") then return "sh" end
  return "output"
end

local sandbox
local function run_in_sandbox(cmd)
  return H.run("cd " .. H.shell_quote(sandbox) .. " && " .. cmd .. " </dev/null")
end

local function lua_file(text)
  local p = os.tmpname()
  H.write(p, text)
  return p
end

local files = { "README.md" }
for name in H.sh("ls " .. H.shell_quote(root .. "/docs")):gmatch("[^\n]+") do
  if name:match("%.md$") then files[#files + 1] = "docs/" .. name end
end

describe("the docs run as written", function()
  setup(function()
    sandbox = H.tmpdir()
    for _, name in ipairs({ "agt", "examples", "bindings", "libagt.so", "lua" }) do
      os.execute(string.format("ln -s %s %s/%s", H.shell_quote(root .. "/" .. name), H.shell_quote(sandbox), name))
    end
  end)
  teardown(function() os.execute("rm -rf " .. H.shell_quote(sandbox)) end)

  for _, name in ipairs(files) do
    for _, b in ipairs(blocks(root .. "/" .. name, name)) do
      local k = kind(b)
      local title = string.format("%s:%d (%s)", b.file, b.line, k)
      local text = table.concat(b.lines, "\n")
      if k == "skip" then
        pending(title .. ": " .. b.note:gsub("^skip:%s*", ""))
      elseif k == "gpu" then
        local okr, ok = pcall(function() return require("agt.gpu").available() end)
        local has_gpu = okr and ok == true
        if has_gpu then
          it(title, function()
            local rc, out, err = H.agt_run(H.shell_quote(lua_file(text)))
            assert.are.equal(0, rc, out .. err)
          end)
        else
          pending(title .. ": needs a CUDA device")
        end
      elseif k == "sh" then
        it(title, function()
          local short = b.note and b.note:match("^max%-step (%d+)$")
          local fails = b.note == "fails"
          for _, c in ipairs(commands(b.lines)) do
            assert.is_nil(c:match("^agt%s"), title .. ": write ./agt (a fresh clone has no agt on its PATH): " .. c)
            assert.is_nil(c:match("^make%s"), title .. ": a make target does not run in a spec; mark the block doc-test: skip: " .. c)
            -- plain `make` builds the tree: done before any spec runs
            if c == "make" then goto next end
            if short then c = c:gsub("%-%-max%-step %d+", "--max-step " .. short) end
            local rc, out, err = run_in_sandbox(c)
            if fails then
              assert.are_not.equal(0, rc, title .. ": expected a refusal from " .. c)
            else
              assert.are.equal(0, rc, title .. ": " .. c .. "\n" .. out .. err)
            end
            ::next::
          end
        end)
      elseif k == "lua" then
        it(title, function()
          local p = lua_file(text)
          local rc, out, err = run_in_sandbox("./agt " .. H.shell_quote(p))
          os.remove(p)
          assert.are.equal(0, rc, title .. "\n" .. out .. err)
        end)
      elseif k == "python" then
        it(title, function()
          local p = lua_file(text)
          local rc, out, err = run_in_sandbox("PYTHONPATH=" .. H.shell_quote(root .. "/bindings/python")
            .. " /usr/bin/python3 " .. H.shell_quote(p))
          os.remove(p)
          assert.are.equal(0, rc, title .. "\n" .. out .. err)
        end)
      elseif k == "repl" then
        it(title, function()
          local lines = {}
          for _, l in ipairs(b.lines) do lines[#lines + 1] = (l:gsub("^agt> ", "")) end
          -- each line as the REPL takes it: rewritten, then an expression if it reads as one
          local script = "local R = require('agt.repl')\nlocal src = " .. string.format("%q", table.concat(lines, "\n")) .. "\n"
            .. "for line in src:gmatch('[^\\n]+') do\n"
            .. "  local l = assert(R.rewrite(line))\n"
            .. "  local f = loadstring('return ' .. l) or assert(loadstring(l))\n"
            .. "  R.print(f())\n"
            .. "end\n"
          local p = lua_file(script)
          local rc, out, err = run_in_sandbox("./agt " .. H.shell_quote(p))
          os.remove(p)
          assert.are.equal(0, rc, title .. "\n" .. out .. err)
        end)
      elseif k == "contract" then
        it(title, function()
          local p = lua_file(text)
          local rc, out, err = run_in_sandbox(string.format("./agt -e %s",
            H.shell_quote(string.format("require('agt.contract').%s(dofile(%q), %q)", b.note, p, title))))
          os.remove(p)
          assert.are.equal(0, rc, title .. "\n" .. out .. err)
        end)
      end
    end
  end
end)
