-- agt bench NAME [args…] — runs bench/NAME.lua (a module returning function(args)), printing
-- JSON lines; 'agt bench all' runs every benchmark; 'agt bench' lists them.
local P = require("agt.plugins")

local function list() return P.list("bench") end

local function run(name, args)
  local path = P.find("bench", name)
  local chunk, err
  if path then chunk, err = loadfile(path) else err = "see 'agt bench' for the list" end
  if not chunk then
    io.stderr:write("agt bench: no benchmark '" .. name .. "' (" .. tostring(err) .. ")\n")
    return 1
  end
  local fn = chunk()
  if type(fn) == "function" then return tonumber(fn(args)) or 0 end
  return 0
end

return function(args)
  local name = args[1]
  if not name or name == "--help" or name == "-h" then
    io.write("usage: agt bench NAME [args...] | agt bench all\nbenchmarks: ",
             table.concat(list(), ", "), "\n")
    return name and 0 or 1
  end
  local rest = { unpack(args, 2) }
  if name == "all" then
    local code = 0
    for _, n in ipairs(list()) do
      io.stderr:write("== bench " .. n .. "\n")
      if run(n, rest) ~= 0 then code = 1 end
    end
    return code
  end
  return run(name, rest)
end
