-- agt.util — small helpers shared by the CLI and the library: key:value argument words.
--
-- A spec is a list of { name = "batch-size", default = 32, doc = "...", type = optional }.
-- The type comes from the default (integer if the default is a whole number and no type is
-- given as "number"); values are cast to it; unknown keys are refused with the known ones.
local U = {}

local function kind_of(entry)
  if entry.type then return entry.type end
  local d = entry.default
  if type(d) == "boolean" then return "boolean" end
  if type(d) == "number" then return d == math.floor(d) and "integer" or "number" end
  return "string"
end

local function cast(entry, value, what)
  local k = kind_of(entry)
  if k == "string" then return value end
  if k == "boolean" then
    local v = value:lower()
    if v == "true" or v == "yes" or v == "1" or v == "on" then return true end
    if v == "false" or v == "no" or v == "0" or v == "off" then return false end
    error(string.format("%s: '%s' expects a boolean (true/false), got '%s'", what, entry.name, value), 0)
  end
  local n = tonumber(value)
  if n == nil then
    error(string.format("%s: '%s' expects a number, got '%s'", what, entry.name, value), 0)
  end
  if k == "integer" and n ~= math.floor(n) then
    error(string.format("%s: '%s' expects an integer, got '%s'", what, entry.name, value), 0)
  end
  return n
end

-- words: list of "key:value" strings, or a table key -> value (values cast the same way).
function U.parse_kv(words, spec, what)
  what = what or "arguments"
  local by_name, out = {}, {}
  for _, e in ipairs(spec) do
    by_name[e.name] = e
    out[e.name] = e.default
  end
  local function known()
    local names = {}
    for _, e in ipairs(spec) do names[#names + 1] = e.name end
    return #names > 0 and table.concat(names, ", ") or "none"
  end
  local function set(key, value)
    local e = by_name[key]
    if not e then
      error(string.format("%s: unknown key '%s' (known: %s)", what, key, known()), 0)
    end
    if type(value) == "string" then value = cast(e, value, what) end
    if e.check then
      local ok, msg = e.check(value)
      if not ok then error(string.format("%s: '%s' %s, got %s", what, key, msg, tostring(value)), 0) end
    end
    out[key] = value
  end
  words = words or {}
  if #words > 0 or next(words) == nil then
    for _, w in ipairs(words) do
      local k, v = tostring(w):match("^([^:]+):(.*)$")
      if not k then
        error(string.format("%s: expected key:value, got '%s'", what, tostring(w)), 0)
      end
      set(k, v)
    end
  else
    for k, v in pairs(words) do set(k, type(v) == "string" and v or v) end
  end
  return out
end

function U.format_kv_help(spec, indent)
  indent = indent or "  "
  local lines = {}
  for _, e in ipairs(spec) do
    lines[#lines + 1] = string.format("%s%s:%s  %s", indent, e.name, tostring(e.default), e.doc or "")
  end
  return table.concat(lines, "\n")
end

-- The names (without .lua) of the Lua files in a folder, sorted; {} when it cannot be read.
function U.lua_files(dir)
  local names = {}
  local p = io.popen("ls '" .. dir:gsub("'", "'\\''") .. "' 2>/dev/null")
  if p then
    for f in p:lines() do
      local name = f:match("^(.-)%.lua$")
      if name then names[#names + 1] = name end
    end
    p:close()
  end
  table.sort(names)
  return names
end

-- Reads a whole file; nil, message when it cannot.
function U.read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("*a")
  f:close()
  return s
end

-- Loads a Lua file that returns a table (a user's rule, attack or experiment).
function U.load_lua_file(path, what)
  local chunk, err = loadfile(path)
  if not chunk then error(string.format("cannot load %s '%s': %s", what or "file", path, err), 0) end
  local ok, mod = pcall(chunk)
  if not ok then error(string.format("error in %s '%s': %s", what or "file", path, tostring(mod)), 0) end
  if type(mod) ~= "table" then
    error(string.format("%s '%s' must return a table, got %s", what or "file", path, type(mod)), 0)
  end
  return mod
end

return U
