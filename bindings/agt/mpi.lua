-- agt.mpi — the PS/worker transport over MPI (src/net_mpi.h), for Lua: objects with agt.net's
-- methods over libagt_mpi.so, which is loaded on first use (agt itself does not link MPI).
--
--   local MPI = require("agt.mpi")
--   MPI.available() -> true | false, why     (why says how to get it)
--   MPI.init() -> rank, size                 MPI_Init_thread, once; raises why when unavailable
--   MPI.transport(max_payload) -> t          (one receiving at a time per process: all share one
--                                            tag) t:send(peers, N.THETA, worker, step, aux, ptr, bytes)
--       (peers: ranks; nil on a worker: to rank 0), t:recv(timeout_ms), t:set_session(id),
--       t:rejected(), t:close() — as agt.net's (no denied/refused: MPI's launcher admits the
--       ranks, and there are no other connections); every message type of agt.net (STATE too)
--   MPI.channel(max_payload, ranks) -> t   the Byzantine worker ranks' channel (src/net_mpi.h):
--       speaks with the given ranks only (a Lua array; this rank may be among them), on a tag of
--       its own; the other handles of this process leave those ranks to it. msg.auth: the
--       sender's index in ranks, from 0. t:send(nil, ...) goes to ranks[1]
--   MPI.workers_error(n, size) -> nil | "--nb-workers: ..."   a run of n workers needs n+1 ranks
--   MPI.run(fn) -> code      init, code = fn(rank, size), finalize; a Lua error in fn is printed
--                            and gives 1. Nested calls just call fn (one init and finalize).
--   MPI.abort(code)          ends every rank (MPI_Abort)      MPI.version() -> "Open MPI v4.1.4, ..."
local F = require("agt.ffi")
local N = require("agt.net")
local host = require("agt.host")
local ffi, C = F.ffi, F.C

local M = {}

local HOW = "install OpenMPI (Debian: apt-get install openmpi-bin libopenmpi-dev) and rebuild agt "
  .. "with make, which then builds libagt_mpi.so (the GPU bundle has no MPI)"

local lib, lib_why
local function load()
  if lib or lib_why then return lib, lib_why end
  local path = host.root .. "/libagt_mpi.so"
  local fh = io.open(path, "rb")
  if not fh then
    lib_why = string.format("this agt has no MPI transport (%s not found): %s", path, HOW)
    return nil, lib_why
  end
  fh:close()
  -- RTLD_GLOBAL: OpenMPI's own components, loaded by libmpi, look up libmpi's symbols globally.
  local ok, l = pcall(ffi.load, path, true)
  if not ok then
    lib_why = string.format("cannot load %s: %s (%s)", path, tostring(l), HOW)
    return nil, lib_why
  end
  lib = l
  return lib
end

function M.available()
  local l, why = load()
  if l then return true end
  return false, why
end

local Transport

function M.init()
  local l, why = load()
  if not l then error(why, 0) end
  local r, s = ffi.new("int[1]"), ffi.new("int[1]")
  if l.agt_mpi_init(r, s) ~= 0 then error(N.strip(F.errmsg()), 0) end
  M.rank, M.size = r[0], s[0]
  if not Transport then
    Transport = N.class({ send = l.agt_mpi_send, recv = l.agt_mpi_recv, set_session = l.agt_mpi_set_session,
                          rejected = l.agt_mpi_rejected, close = l.agt_mpi_close })
  end
  return M.rank, M.size
end

function M.transport(max_payload)
  M.init()
  local h = ffi.new("agt_mpi *[1]")
  if lib.agt_mpi_new(max_payload, h) ~= 0 then error(N.strip(F.errmsg()), 2) end
  return N.wrap(Transport, h[0], lib.agt_mpi_close)
end

function M.channel(max_payload, ranks)
  M.init()
  local h = ffi.new("agt_mpi *[1]")
  local arr = ffi.new("int64_t[?]", math.max(#ranks, 1), ranks)
  if lib.agt_mpi_channel(max_payload, arr, #ranks, h) ~= 0 then error(N.strip(F.errmsg()), 2) end
  return N.wrap(Transport, h[0], lib.agt_mpi_close)
end

function M.workers_error(n, size)
  if size - 1 == n then return nil end
  if size == 1 then
    return string.format("--MPI: this process is alone (MPI size 1): start the run with mpirun -np %d "
      .. "(rank 0 the parameter server, ranks 1..%d the --nb-workers %d workers)", n + 1, n, n)
  end
  return string.format("--nb-workers: mpirun started %d processes, the parameter server (rank 0) and "
    .. "%d workers, but the run has --nb-workers %d: give mpirun -np %d (or --nb-workers %d)",
    size, size - 1, n, n + 1, size - 1)
end

local depth = 0
function M.run(fn)
  if depth > 0 then return fn(M.rank, M.size) end
  local rank, size = M.init()
  depth = 1
  local ok, code = pcall(fn, rank, size)
  depth = 0
  if not ok then
    io.stderr:write(string.format("agt (MPI rank %d): %s\n", rank, tostring(code)))
    code = 1
  end
  io.stdout:flush()
  io.stderr:flush()
  if lib.agt_mpi_finalize() ~= 0 then
    io.stderr:write(string.format("agt (MPI rank %d): %s\n", rank, N.strip(F.errmsg())))
  end
  return code
end

function M.abort(code)
  io.stdout:flush()
  io.stderr:flush()
  if lib then lib.agt_mpi_abort(code) end
end

function M.version()
  local l, why = load()
  if not l then return nil, why end
  return ffi.string(l.agt_mpi_version())
end

return M
