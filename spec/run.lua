-- Runs the busted specs inside the agt binary, so they use the real engine.
--   ./agt spec/run.lua                 every spec/*_spec.lua
--   ./agt spec/run.lua spec/x_spec.lua one file (other busted flags pass through)
-- Prints busted's own report, then "N passed, N failed".
local host = require("agt.host")
local root = host.root
local args = { "--output=" .. root .. "/spec/summary_handler.lua" }
local has_path = false
for i = 1, #arg do
  args[#args + 1] = arg[i]
  if not arg[i]:match("^%-") then has_path = true end
end
if not has_path then args[#args + 1] = root .. "/spec" end
arg = args
arg[0] = "busted"
package.path = root .. "/spec/?.lua;" .. package.path
require("busted.runner")({ standalone = false, output = "plainTerminal" })
