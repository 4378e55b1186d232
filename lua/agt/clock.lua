-- agt.clock — the two clocks of a run: monotonic seconds for periods and step times, wall
-- seconds (Unix time) for what is written down (evaluation lines, summaries).
local ffi = require("ffi")

local M = {}

-- Declared under our own struct name: another module may have declared timespec already.
pcall(ffi.cdef, [[
  typedef struct agt_timespec_ { long tv_sec; long tv_nsec; } agt_timespec_;
  int clock_gettime(int clk, agt_timespec_ *ts);
]])
local ts = ffi.new("agt_timespec_")
local CLOCK_REALTIME, CLOCK_MONOTONIC = 0, 1

function M.mono()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

function M.wall()
  ffi.C.clock_gettime(CLOCK_REALTIME, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

return M
