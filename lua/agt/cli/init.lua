-- agt.cli — dispatches `agt SUBCOMMAND args…` to lua/agt/cli/SUBCOMMAND.lua, a module that
-- returns function(args) -> exit code. Subcommands are found by listing that folder
-- (agt.plugins' kind "commands").
local P = require("agt.plugins")
local M = {}

function M.list() return P.list("commands") end

function M.main(args)
  local name = args[1]
  local path, module = P.find("commands", name)
  if not path then
    io.stderr:write(string.format("agt: '%s' is neither a file nor a subcommand (agt help lists the subcommands)\n", name))
    return 1
  end
  local cmd = require(module)
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
