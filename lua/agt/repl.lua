-- agt.repl — the REPL's Lua side: how it shows values (tables pretty-printed with a depth and
-- size limit, cycles marked, keys sorted; a tensor as rows with its shape and device; sessions
-- and rules in one line), what it makes of a line before compiling it (`=expr`, `?x`, `exit`,
-- `quit`), help(x) from the `agt help` texts, and Tab completion of globals, fields and
-- methods. src/main.c calls R.rewrite, R.complete and R.print; R.install sets the globals
-- help, exit and quit.
local T = require("agt.tensor")
local R = { max_depth = 3, max_items = 40, max_rows = 6, max_cols = 8 }

-- A tensor as text: its header, then up to max_rows rows of up to max_cols values.
function R.tensor(t)
  if t.handle == nil then return "agt.tensor(freed)" end
  local shape = t.shape
  local head = string.format("agt.tensor %s %s on %s", t.dtype,
    #shape == 0 and "scalar" or table.concat(shape, "x"), tostring(t.device or "cpu"))
  if t.device and t.device ~= "cpu" then return head end
  local rows = #shape >= 2 and shape[1] or 1
  local cols = rows > 0 and math.floor(t.n / math.max(rows, 1)) or 0
  local p = t.raw
  local lines = { head }
  local function row_text(i)
    local parts = {}
    for j = 0, math.min(cols, R.max_cols) - 1 do parts[#parts + 1] = string.format("%10.4g", tonumber(p[i * cols + j])) end
    if cols > R.max_cols then parts[#parts + 1] = " ..." end
    return table.concat(parts, " ")
  end
  for i = 0, math.min(rows, R.max_rows) - 1 do lines[#lines + 1] = row_text(i) end
  if rows > R.max_rows then lines[#lines + 1] = string.format("  ... (%d rows)", rows) end
  return table.concat(lines, "\n")
end

-- One line for the objects a user meets most: a session, a rule.
local function short(v)
  if type(v) ~= "table" then return nil end
  if v.opts and v.global_step and v.exp then
    return string.format("agt.session: %s, %s, n=%d f=%d r=%d, step %d, d=%d", tostring(v.exp.name),
      tostring(v.opts.aggregator), v.n or 0, v.f or 0, v.r or 0, v.global_step, v.d or 0)
  end
  if v.elements and v.shapes and type(v.aggregate) == "function" then
    return string.format("agt rule: %s (n=%d f=%d)", tostring(v.name), v.n or 0, v.f or 0)
  end
end

local function key_repr(k)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") then return k end
  return "[" .. (type(k) == "string" and string.format("%q", k) or tostring(k)) .. "]"
end

local function repr(v, depth, seen, indent)
  local t = type(v)
  if t == "string" then return string.format("%q", v) end
  if t == "cdata" and T.is_tensor(v) then return R.tensor(v) end
  local one = short(v)
  if one then return one end
  if t ~= "table" then return tostring(v) end
  local mt = getmetatable(v)
  if mt and mt.__tostring then return tostring(v) end
  if seen[v] then return "<cycle>" end
  if depth >= R.max_depth then return "{...}" end
  seen[v] = true
  local keys, n = {}, #v
  for k in pairs(v) do
    if not (type(k) == "number" and k >= 1 and k <= n and k == math.floor(k)) then keys[#keys + 1] = k end
  end
  table.sort(keys, function(a, b)
    local ta, tb = type(a), type(b)
    if ta ~= tb then return ta < tb end
    if ta == "number" or ta == "string" then return a < b end
    return tostring(a) < tostring(b)
  end)
  local parts, count = {}, 0
  local inner = indent .. "  "
  for i = 1, n do
    count = count + 1
    if count > R.max_items then parts[#parts + 1] = "..."; break end
    parts[#parts + 1] = repr(v[i], depth + 1, seen, inner)
  end
  for _, k in ipairs(keys) do
    count = count + 1
    if count > R.max_items then parts[#parts + 1] = "..."; break end
    parts[#parts + 1] = key_repr(k) .. " = " .. repr(v[k], depth + 1, seen, inner)
  end
  seen[v] = nil
  if #parts == 0 then return "{}" end
  local one = "{ " .. table.concat(parts, ", ") .. " }"
  if #one <= 78 and not one:find("\n") then return one end
  return "{\n" .. inner .. table.concat(parts, ",\n" .. inner) .. "\n" .. indent .. "}"
end

function R.format(v) return repr(v, 0, {}, "") end

-- The line as the REPL compiles it, or nil and "exit" to leave. `=expr` shows expr, `?x` and
-- `?topic` print help, `exit` and `quit` (with or without parentheses) leave.
function R.rewrite(line)
  local trimmed = line:match("^%s*(.-)%s*$")
  if trimmed == "exit" or trimmed == "quit" or trimmed == "exit()" or trimmed == "quit()" then
    return nil, "exit"
  end
  local expr = trimmed:match("^=(.*)$")
  if expr then return "return " .. expr end
  local what = trimmed:match("^%?%s*(.*)$")
  if what then
    if what == "" then return "return require('agt.repl').help()" end
    if R.lookup(what) ~= nil then return "return require('agt.repl').help(" .. what .. ")" end
    return string.format("return require('agt.repl').help(%q)", what)
  end
  return line
end

-- The value of a dotted name (a.b.c) among the globals, without calling anything; nil if none.
function R.lookup(path)
  if not path:match("^[%a_][%w_]*$") and not path:match("^[%a_][%w_]*[%.%w_]*[%w_]$") then return nil end
  local v = _G
  for part in path:gmatch("[^%.]+") do
    if type(v) ~= "table" and not (type(v) == "cdata" and T.is_tensor(v)) then return nil end
    local ok, x = pcall(function() return v[part] end)
    if not ok then return nil end
    v = x
  end
  return v
end

-- The names a value offers after '.' (fields) or ':' (methods only).
local function members(v, methods)
  local out, seen = {}, {}
  local function add(k, x)
    if type(k) == "string" and k:match("^[%a_][%w_]*$") and not seen[k]
       and (not methods or type(x) == "function") then
      seen[k] = true
      out[#out + 1] = k
    end
  end
  if type(v) == "cdata" and T.is_tensor(v) then
    for k, x in pairs(T.Tensor) do if not k:match("^__") then add(k, x) end end
    if not methods then for _, k in ipairs({ "ptr", "dtype", "shape", "n", "device" }) do add(k, true) end end
    return out
  end
  local depth = 0
  while type(v) == "table" and depth < 4 do
    for k, x in pairs(v) do add(k, x) end
    local mt = getmetatable(v)
    v = mt and type(mt.__index) == "table" and mt.__index or nil
    depth = depth + 1
  end
  return out
end

local KEYWORDS = { "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "if",
  "in", "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while" }

-- Completions of the word before the cursor: a global or keyword, a.b.<field>, a:<method>.
function R.complete(word)
  local head, sep, last = word:match("^(.*)([%.:])([%w_]*)$")
  local names, prefix = {}, ""
  if head then
    local v = R.lookup(head)
    if v == nil then return {} end
    names, prefix = members(v, sep == ":"), head .. sep
  else
    last = word
    names = members(_G)
    for _, k in ipairs(KEYWORDS) do names[#names + 1] = k end
  end
  local out = {}
  for _, k in ipairs(names) do
    if k:sub(1, #last) == last then out[#out + 1] = prefix .. k end
  end
  table.sort(out)
  return out
end

local USAGE = [[
agt REPL: Lua with the engine loaded as `agt` (agt.tensor, agt.rng, agt.session, ...).
  expr            prints its value (tensors as rows; sessions and rules in one line)
  =expr           the same, for an expression that could also read as a statement
  ?x  help(x)     help on a value (a module, a rule, a tensor, a function) or a topic:
                  ?krum  ?lie  ?fashion-mnist  ?aggregators  ?attacks  ?run
  Tab             completes globals, fields (agt.ten<Tab>) and methods (G:no<Tab>)
  Ctrl-C          interrupts the running code; s:run() runs compiled and stops cleanly
  exit, quit, Ctrl-D   leave]]

-- The comment block just above a function's definition, if its source file can be read.
local function doc_comment(fn)
  local info = debug.getinfo(fn, "S")
  if not info or info.what ~= "Lua" or not info.source:match("^@") then return nil end
  local f = io.open(info.source:sub(2), "r")
  if not f then return nil end
  local lines = {}
  for l in f:lines() do lines[#lines + 1] = l end
  f:close()
  local out = {}
  for i = info.linedefined - 1, 1, -1 do
    local c = lines[i] and lines[i]:match("^%s*%-%-%s?(.*)$")
    if not c then break end
    table.insert(out, 1, c)
  end
  local def = lines[info.linedefined] or ""
  return def:match("^%s*(.-)%s*$") .. (#out > 0 and ("\n" .. table.concat(out, "\n")) or "")
end

-- Prints help on x: a topic or a rule/attack/experiment name (a string), a module with a help
-- function, a rule, a tensor, a session, a function (the comment above its definition).
function R.help(x)
  local text
  if x == nil then
    text = USAGE
  elseif type(x) == "string" then
    local ok, topic = pcall(require("agt.cli.help").text, x)
    text = ok and topic or ("no help on '" .. x .. "' (agt help lists the topics)")
  elseif type(x) == "cdata" and T.is_tensor(x) then
    text = R.tensor(x) .. "\nmethods: " .. table.concat(R.complete_list(x, true), ", ")
  elseif type(x) == "function" then
    text = doc_comment(x) or "a function (no comment found above its definition)"
  elseif type(x) == "table" and type(x.help) == "function" then
    text = x.help()
  elseif type(x) == "table" and x.elements then
    local parts = {}
    for _, el in ipairs(x.elements) do
      parts[#parts + 1] = string.format("%s — %s\n%s", tostring(el.name), tostring(el.def.summary or ""), tostring(el.def.doc or ""))
    end
    text = short(x) .. "\n" .. table.concat(parts, "\n")
  elseif type(x) == "table" then
    text = (short(x) or "a table") .. "\nfields and methods: " .. table.concat(R.complete_list(x, false), ", ")
  else
    text = type(x) .. ": " .. tostring(x)
  end
  io.write(text, "\n")
end

function R.complete_list(v, methods)
  local out = members(v, methods)
  table.sort(out)
  return out
end

-- The REPL's globals: help, exit, quit.
function R.install()
  rawset(_G, "help", R.help)
  rawset(_G, "exit", function(code) os.exit(code or 0) end)
  rawset(_G, "quit", function(code) os.exit(code or 0) end)
end

function R.print(...)
  local n = select("#", ...)
  local out = {}
  for i = 1, n do out[i] = R.format((select(i, ...))) end
  io.write(table.concat(out, "\t"), "\n")
end

return R
