-- agt.cli.run.mpi — `mpirun -np N+1 agt run --MPI <run flags>`: rank 0 is the parameter server
-- (the run `agt run` makes, its gradient source being the other ranks: agt.session.remote over
-- agt.mpi), ranks 1..N are its N workers (what `agt worker` does, over MPI). Every rank checks
-- the flags and the number of ranks itself, so bad flags or a wrong -np end every rank at once
-- (rank 0 says why, exit 2) before anything waits. A run that fails on the PS ends the workers
-- with it (MPI_Abort, its exit status); a worker that cannot take part tells the PS and waits
-- for the run's end (faulty meanwhile), as over ZeroMQ.
local FL = require("agt.cli.run.flags")
local MPI = require("agt.mpi")

-- The rank mpirun gave this process, before MPI is initialised (OpenMPI's environment).
local function env_rank() return tonumber(os.getenv("OMPI_COMM_WORLD_RANK") or os.getenv("PMIX_RANK") or "") end

local M = {}

-- Is --MPI among the words (a boolean flag, alone or =true)?
function M.wanted(args)
  for _, a in ipairs(args) do
    if a == "--MPI" or a == "--mpi" or a == "--MPI=true" or a == "--mpi=true" then return true end
  end
  return false
end

-- run(opts) -> exit code: agt run's own session runner, for rank 0.
function M.main(args, run)
  local rank0 = (env_rank() or 0) == 0
  local function refuse(msg)
    if rank0 then io.stderr:write("agt run: ", msg, "\n") end
    return 2
  end
  local ok, opts, what = pcall(FL.parse_args, args)
  if ok and what == "help" then
    if rank0 then io.stdout:write(FL.help(), "\n") end
    return 0
  end
  local o
  if ok then ok, o = pcall(FL.check, opts) end
  if not ok then return refuse(tostring(o or opts)) end
  local avail, why = MPI.available()
  if not avail then return refuse("--MPI: " .. why) end
  if not env_rank() then
    return refuse(string.format("--MPI: this process was not started by mpirun: run 'mpirun -np %d agt run --MPI ...' "
      .. "(rank 0 the parameter server, ranks 1..%d the workers; docs/distributed.md)", o.nb_workers + 1, o.nb_workers))
  end
  return MPI.run(function(rank, size)
    local err = MPI.workers_error(o.nb_workers, size)
    if err then
      if rank == 0 then io.stderr:write("agt run: ", err, "\n") end
      return 2
    end
    if rank > 0 then
      return require("agt.cli.worker")({ "--MPI", "--connect-timeout", tostring(o.connect_timeout),
                                         "--wk-job-name", o.wk_job_name })
    end
    local code = run(opts)
    if code ~= 0 and code ~= 130 then MPI.abort(code) end
    return code
  end)
end

return M
