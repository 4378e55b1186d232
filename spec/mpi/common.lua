-- What the scripts of spec/mpi/ run under mpirun share (loaded with dofile beside them):
--   C.raw_send(bytes, dest, tag)   raw MPI_Send on MPI_COMM_WORLD, for what agt's transport never
--                                 sends (OpenMPI's handles are its globals)
--   C.TAG                         the transport's tag
--   C.check(cond, what, why)      prints "ok: what" or "FAIL: what: why" and counts the failures
--   C.status()                    the exit status: 0 if no check failed, else 1
--   C.pattern(d, x)               float[d] holding x, x + 1, ...
local ffi = require("ffi")

ffi.cdef [[
extern char ompi_mpi_comm_world[];
extern char ompi_mpi_byte[];
int MPI_Send(const void *buf, int count, void *datatype, int dest, int tag, void *comm);
]]

local C = { TAG = 0x4147 }

function C.raw_send(bytes, dest, tag)
  return ffi.C.MPI_Send(bytes, #bytes, ffi.C.ompi_mpi_byte, dest, tag, ffi.C.ompi_mpi_comm_world)
end

local failed = 0
function C.check(cond, what, why)
  if cond then print("ok: " .. what) else failed = failed + 1; print("FAIL: " .. what .. ": " .. tostring(why)) end
end

function C.status() return failed == 0 and 0 or 1 end

function C.pattern(d, x)
  local p = ffi.new("float[?]", d)
  for i = 0, d - 1 do p[i] = x + i end
  return p
end

return C
