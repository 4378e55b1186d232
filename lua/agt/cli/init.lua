-- agt.cli — dispatches `agt SUBCOMMAND args…` to lua/agt/cli/SUBCOMMAND.lua, a module that
-- returns function(args) -> exit code. Subcommands are found by listing that folder.
local host = require("agt.host")
local M = {}

function M.dir() return host.root .. "/lua/agt/cli" end

function M.list()
  local names = {}
  for _, name in ipairs(require("agt.util").lua_files(M.dir())) do
    if name ~= "init" then names[#names + 1] = name end
  end
  return names
end

function M.main(args)
  local name = args[1]
  local path = M.dir() .. "/" .. name .. ".lua"
  local f = io.open(path, "r")
  if not f then
    io.stderr:write(string.format("agt: '%s' is neither a file nor a subcommand (agt help lists the subcommands)\n", name))
    return 1
  end
  f:close()
  local cmd = require("agt.cli." .. name)
  local rest = { unpack(args, 2) }
  local ok, code = xpcall(function() return cmd(rest) end, function(e)
    if type(e) == "string" and e:match("^usage: ") then return e end
    return debug.traceback(e, 2)
  end)
  if not ok then
    io.stderr:write("agt " .. name .. ": " .. tostring(code) .. "\n")
    return 1
  end
  return tonumber(code) or 0
end

return M
