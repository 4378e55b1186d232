-- agt.pool — the engine's thread pool size (src/pool.h). AGT_NUM_THREADS sets the default.
local F = require("agt.ffi")
local C = F.C
local P = {}
function P.threads() return C.agt_pool_threads() end
function P.default_threads() return C.agt_pool_default_threads() end
function P.set_threads(n) F.check(C.agt_pool_set_threads(n or 0), 2) end
return P
