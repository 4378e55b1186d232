-- agt run — AggregaThor's runner.py on the agt engine, flag for flag, plus --seed.
--
--   agt run --experiment fashion-mnist --aggregator bulyan --nb-workers 11 \
--           --nb-decl-byz-workers 2 --nb-real-byz-workers 2 --attack lie --checkpoint-dir runs/x
--
-- The words are parsed against the flag table of agt.cli.run.flags (`--flag value`,
-- `--flag=value`, boolean flags alone, key:value lists up to the next `--flag`), every value and
-- combination is checked and every part of the session is built before any training; an error
-- names the flag and exits with status 2. A failure during training exits with 1, Ctrl-C with
-- 130 after the last evaluation and checkpoint.
local FL = require("agt.cli.run.flags")
local S = require("agt.session")
local host = require("agt.host")

local MPIRUN = require("agt.cli.run.mpi")

-- A Ctrl-C or SIGTERM before the training loop (while the flags are checked and the parts
-- built) raises "interrupted!" wherever the setup is: that is no bad flag (status 2) nor a
-- failure (1), but a stop before any step (130), said as such.
local function interrupted_setup()
  if not host.interrupted() then return nil end
  io.stderr:write("agt run: interrupted while setting up the run (no step was taken)\n")
  return 130
end

-- The run of parsed options opts (checked by S.new) -> exit code.
local function run(opts)
  local ok, s = pcall(S.new, opts)
  if not ok then
    local code = interrupted_setup()
    if code then return code end
    io.stderr:write("agt run: ", tostring(s), "\n")
    return 2
  end
  local rep
  ok, rep = pcall(s.run, s)
  local okc, cerr = pcall(s.close, s)
  if ok and not okc then ok, rep = false, cerr end
  if not ok then
    io.stderr:write("agt run: ", tostring(rep), "\n")
    return 1
  end
  if rep.stopped == "interrupted" then return 130 end
  return 0
end

return function(args)
  args = args or {}
  -- --MPI: this process is one rank of the run (agt.cli.run.mpi)
  if MPIRUN.wanted(args) then return MPIRUN.main(args, run) end
  local ok, opts, what = pcall(FL.parse_args, args)
  if ok and what == "help" then
    io.stdout:write(FL.help(), "\n")
    return 0
  end
  if not ok then
    local code = interrupted_setup()
    if code then return code end
    io.stderr:write("agt run: ", tostring(opts), "\n")
    return 2
  end
  return run(opts)
end
