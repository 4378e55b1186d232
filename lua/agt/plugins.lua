-- agt.plugins — the one finder of plugin files: rules, attacks, experiments (and the CLI's
-- subcommands and benchmarks, which are found the same way in the tree).
--
--   local P = require("agt.plugins")
--   P.list("aggregators")           -> sorted file names without ".lua" (every folder, once)
--   P.find("attacks", "label_flip") -> path, module (module: the require name of a built-in
--                                      file; nil for a user's) | nil
--   P.load("experiments", "mnist")  -> the table the file returns (raises naming the file)
--   P.dirs("attacks")               -> the folders searched, in order
--
-- Kinds and their built-in folders (relative to the agt tree): aggregators (lua/aggregators),
-- attacks (lua/attacks), experiments (lua/experiments), commands (lua/agt/cli, "init" left
-- out), bench (bench). For aggregators, attacks and experiments the user's folders follow:
-- each entry of AGT_PATH (folders separated by ':') holding folders of the same names, e.g.
-- AGT_PATH=~/agt-plugins with ~/agt-plugins/aggregators/my_rule.lua. A built-in name wins over
-- a user's file of the same name, so a plugin cannot silently replace a shipped rule.
local host = require("agt.host")
local fs = require("agt.fs")
local U = require("agt.util")

local P = {}

local KINDS = {
  aggregators = { dir = "lua/aggregators", module = "aggregators", user = true },
  attacks = { dir = "lua/attacks", module = "attacks", user = true },
  experiments = { dir = "lua/experiments", module = "experiments", user = true },
  commands = { dir = "lua/agt/cli", module = "agt.cli", skip = { init = true } },
  bench = { dir = "bench" },
}

local function kind_of(kind)
  local k = KINDS[kind]
  if not k then
    local names = {}
    for name in pairs(KINDS) do names[#names + 1] = name end
    table.sort(names)
    error(string.format("plugins: unknown kind '%s' (known: %s)", tostring(kind),
                        table.concat(names, ", ")), 3)
  end
  return k
end

-- The folders searched for a kind: the built-in one first, then the user's.
function P.dirs(kind)
  local k = kind_of(kind)
  local dirs = { host.root .. "/" .. k.dir }
  if k.user then
    for entry in (os.getenv("AGT_PATH") or ""):gmatch("[^:]+") do
      dirs[#dirs + 1] = entry .. "/" .. kind
    end
  end
  return dirs
end

function P.list(kind)
  local k = kind_of(kind)
  local seen, names = {}, {}
  for _, dir in ipairs(P.dirs(kind)) do
    for _, name in ipairs(fs.lua_files(dir)) do
      if not seen[name] and not (k.skip and k.skip[name]) then
        seen[name] = true
        names[#names + 1] = name
      end
    end
  end
  table.sort(names)
  return names
end

function P.find(kind, name)
  local k = kind_of(kind)
  if type(name) ~= "string" or name == "" or name:find("/", 1, true) or (k.skip and k.skip[name]) then
    return nil
  end
  for i, dir in ipairs(P.dirs(kind)) do
    local path = dir .. "/" .. name .. ".lua"
    if fs.kind(path) == "file" then
      return path, (i == 1 and k.module) and (k.module .. "." .. name) or nil
    end
  end
  return nil
end

-- A user's files are loaded once per process, as require does for the built-in ones.
local loaded = {}

function P.load(kind, name, what)
  local path, module = P.find(kind, name)
  if not path then
    error(string.format("%s: no file '%s.lua' in %s", what or kind, tostring(name),
                        table.concat(P.dirs(kind), ", ")), 2)
  end
  if module then return require(module), path end
  if not loaded[path] then loaded[path] = U.load_lua_file(path, what or kind) end
  return loaded[path], path
end

return P
