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
