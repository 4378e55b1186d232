-- agt.mem — engine memory accounting (src/mem.h), in bytes.
local C = require("agt.ffi").C
local M = {}
function M.in_use() return tonumber(C.agt_mem_in_use()) end
function M.peak() return tonumber(C.agt_mem_peak()) end
return M
