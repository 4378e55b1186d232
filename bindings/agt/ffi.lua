-- agt.ffi — the one place where Lua meets the engine's C API.
--
-- Loads the generated declarations (agt.cdef) once and exposes the engine as `C` (its symbols
-- are exported by the agt binary itself). `check` turns a failing agt_status into a Lua error
-- carrying the engine's message; `try` turns it into `nil, message` for runtime failures.
-- `before_alloc` runs Lua's collector when the engine says its memory is short, since Lua
-- cannot see the bytes that engine objects hold.
local ffi = require("ffi")
ffi.cdef(require("agt.cdef"))
local C = ffi.C

local M = { C = C, ffi = ffi }

function M.errmsg()
  return ffi.string(C.agt_last_error())
end

-- Raises the engine's message when status is not AGT_OK. level as for error().
function M.check(status, level)
  if status ~= 0 then error(M.errmsg(), (level or 1) + 1) end
  return status
end

-- Returns true, or nil and the engine's message.
function M.try(status)
  if status ~= 0 then return nil, M.errmsg(), status end
  return true
end

function M.before_alloc()
  if C.agt_mem_gc_hint() ~= 0 then
    collectgarbage("collect")
    collectgarbage("collect")
    C.agt_mem_gc_done()
  end
end

-- Calls fn(...) which returns a status; on AGT_ENOMEM collects garbage and retries once.
function M.alloc_call(fn, ...)
  M.before_alloc()
  local s = fn(...)
  if s == C.AGT_ENOMEM then
    collectgarbage("collect")
    collectgarbage("collect")
    C.agt_mem_gc_done()
    s = fn(...)
  end
  return s
end

return M
