-- agt.util — small helpers shared by the CLI and the library: reading a file, loading a user's
-- Lua file. (key:value arguments: agt.kv; plugin files: agt.plugins; the file system: agt.fs.)
local U = {}

-- Reads a whole file; nil, message when it cannot.
function U.read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("*a")
  f:close()
  return s
end

local function run_chunk(chunk, name, what)
  local ok, mod = pcall(chunk)
  if not ok then error(string.format("error in %s '%s': %s", what or "file", name, tostring(mod)), 0) end
  if type(mod) ~= "table" then
    error(string.format("%s '%s' must return a table, got %s", what or "file", name, type(mod)), 0)
  end
  return mod
end

-- Loads a Lua file that returns a table (a user's rule, attack or experiment).
function U.load_lua_file(path, what)
  local chunk, err = loadfile(path)
  if not chunk then error(string.format("cannot load %s '%s': %s", what or "file", path, err), 0) end
  return run_chunk(chunk, path, what)
end

-- The same from the file's text (sent by a distributed run's PS); name: the file's path, for
-- the messages.
function U.load_lua_text(text, name, what)
  local chunk, err = loadstring(text, "@" .. name)
  if not chunk then error(string.format("cannot load %s '%s': %s", what or "file", name, err), 0) end
  return run_chunk(chunk, name, what)
end

-- The largest user file (experiment, attack) that a distributed run sends to its workers.
U.MAX_SOURCE = 2 ^ 20

-- The text of a user's file that a distributed run sends to its workers, at most max bytes.
function U.read_source(path, max, what)
  local text, err = U.read_file(path)
  if not text then error(string.format("cannot read %s '%s': %s", what or "file", path, tostring(err)), 0) end
  if #text > max then
    error(string.format("%s '%s' has %d bytes, more than the %d a distributed run sends to its workers "
      .. "(keep the file small: put data and helpers where every host has them)", what or "file", path, #text, max), 0)
  end
  return text
end

return U
