-- agt — the Lua library's entry point.
--
-- `agt.X` loads the module agt.X on first use (lua/agt/X.lua or bindings/agt/X.lua), so the
-- REPL and scripts reach every engine module without a require. Errors inside a module are
-- raised, not hidden; a name that is no module gives nil.
local F = require("agt.ffi")

local agt = {}

local function exists(name)
  return package.searchpath(name, package.path) ~= nil
end

setmetatable(agt, {
  __index = function(t, k)
    if type(k) ~= "string" then return nil end
    local name = "agt." .. k
    if not exists(name) then return nil end
    local mod = require(name)
    rawset(t, k, mod)
    return mod
  end,
})

function agt.version() return F.ffi.string(F.C.agt_version()) end

function agt.features() return F.ffi.string(F.C.agt_build_features()) end

return agt
