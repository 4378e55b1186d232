-- agt.host — what the agt binary itself provides to Lua: where its tree is, and how Ctrl-C
-- is delivered (raised as a Lua error, the default, or only flagged for a loop that polls).
local ffi = require("ffi")
ffi.cdef("void agt_host_sigint_raises(int on);")
local C = require("agt.ffi").C
local config = package.loaded["agt.host.config"] or { root = ".", exe = "agt" }

local H = { root = config.root, exe = config.exe }

-- on = false: Ctrl-C only sets the flag read by H.interrupted(); the caller stops itself.
function H.sigint_raises(on) C.agt_host_sigint_raises(on and 1 or 0) end
function H.interrupted() return C.agt_interrupt_pending() ~= 0 end
-- on = true: kernels do not see Ctrl-C (they run to the end) until hold_interrupts(false);
-- H.interrupted() still does. For work that must not stop half done.
function H.hold_interrupts(on) C.agt_interrupt_hold(on and 1 or 0) end
function H.clear_interrupt() C.agt_interrupt_set(0) end

return H
