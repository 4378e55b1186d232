-- Specs of --MPI: `mpirun -np N+1 agt run --MPI ...` (rank 0 the PS, ranks 1..N the workers)
-- on this machine, OpenMPI from Debian (make setup installs it). As root mpirun needs
-- --allow-run-as-root; --oversubscribe lets it start more ranks than there are cores; shared
-- memory without the cross-process single copy (CMA), which some containers forbid.
local H = require("helpers")
local ffi = require("ffi")
local S = require("agt.session")
local K = require("agt.checkpoint")
local MPI = require("agt.mpi")
local host = require("agt.host")

local MPIRUN = "mpirun --allow-run-as-root --oversubscribe --mca btl_vader_single_copy_mechanism none"
local AGT = H.shell_quote(H.agt)
local have_mpirun = H.sh("command -v mpirun") ~= ""

local function need_mpi()
  assert(have_mpirun, "mpirun not found: 'make setup' installs OpenMPI (openmpi-bin, libopenmpi-dev)")
  local ok, why = MPI.available()
  assert(ok, why)
end

local RUN = "--experiment fashion-mnist --experiment-args eval-size:500 --aggregator median --nb-workers 4 "
  .. "--nb-decl-byz-workers 1 --seed 5 --step-timeout 30 --checkpoint-period -1 --evaluation-period -1 --quiet"

describe("agt run --MPI", function()
  it("mpirun -np 5 gives the local run's θ bit for bit (4 workers, f = 1, no faulty row), and again resumed from its checkpoint", function()
    need_mpi()
    local dir = H.tmpdir()
    local function mpirun(steps)
      return H.run(string.format("timeout 300 %s -np 5 %s run --MPI %s --max-step %d --checkpoint-dir '%s/ck'",
                                 MPIRUN, AGT, RUN, steps, dir))
    end
    local rc, _, err = mpirun(8)
    local map = K.restore(dir .. "/ck")
    -- A second job on the same checkpoint directory: 4 more steps, the workers' streams from it.
    local rc2, _, err2 = mpirun(4)
    local map2 = K.restore(dir .. "/ck")
    os.execute("rm -rf '" .. dir .. "'")
    assert.equal(0, rc, err)
    assert.falsy(err:find("faulty", 1, true), err)
    for i = 0, 3 do assert.truthy(err:find(string.format("[workers:%d] the PS ended the run after 8 steps", i), 1, true), err) end
    local loc = S.new({ experiment = "fashion-mnist", experiment_args = { "eval-size:500" }, seed = 5, quiet = true,
                        evaluation_file = "-", summary_dir = "-", checkpoint_period = -1, evaluation_period = -1,
                        aggregator = "median", nb_workers = 4, nb_decl_byz_workers = 1 })
    for _ = 1, 8 do loc:step() end
    assert.equal("8", map.step)
    assert.equal(ffi.string(loc.theta.ptr, loc.d * 4), map.theta)
    -- The PS's checkpoint holds each worker rank's streams (its STATE messages): the local workers'.
    local st = loc:state()
    for i = 1, 4 do assert.equal(st["worker." .. i], map["worker." .. i]) end
    -- resumed: step 12 is the local run's 12th
    assert.equal(0, rc2, err2)
    assert.falsy(err2:find("faulty", 1, true), err2)
    for i = 0, 3 do
      assert.truthy(err2:find(string.format("%%[workers:%d%%] ready: fashion%%-mnist, d = %%d+, session %%x+, from step 8", i)), err2)
    end
    for _ = 1, 4 do loc:step() end
    assert.equal("12", map2.step)
    assert.equal(ffi.string(loc.theta.ptr, loc.d * 4), map2.theta)
    loc:close()
  end)

  it("a Byzantine worker rank attacks over MPI (reverse of:own) with the local run's θ", function()
    need_mpi()
    local dir = H.tmpdir()
    local attack = "--aggregator average --nb-workers 4 --nb-decl-byz-workers 1 --nb-real-byz-workers 1 "
      .. "--attack reverse --attack-args of:own factor:3 --seed 5 --checkpoint-period -1 --evaluation-period -1 --quiet"
    local rc, _, err = H.run(string.format("timeout 300 %s -np 5 %s run --MPI --experiment fashion-mnist "
      .. "--experiment-args eval-size:500 %s --max-step 3 --checkpoint-dir '%s/ck'", MPIRUN, AGT, attack, dir))
    local map = K.restore(dir .. "/ck")
    os.execute("rm -rf '" .. dir .. "'")
    assert.equal(0, rc, err)
    assert.truthy(err:find("%[workers:3%] ready: fashion%-mnist, d = 79510, session %x+, from step 0; may attack %(reverse%)"), err)
    local loc = S.new({ experiment = "fashion-mnist", experiment_args = { "eval-size:500" }, seed = 5, quiet = true,
                        evaluation_file = "-", summary_dir = "-", checkpoint_period = -1, evaluation_period = -1,
                        aggregator = "average", nb_workers = 4, nb_decl_byz_workers = 1, nb_real_byz_workers = 1,
                        attack = "reverse", attack_args = { "of:own", "factor:3" } })
    for _ = 1, 3 do loc:step() end
    assert.equal("3", map.step)
    assert.equal(ffi.string(loc.theta.ptr, loc.d * 4), map.theta)
    loc:close()
  end)

  -- lie from the last 2 ranks; empire from 2 drawn each step (every rank may attack: the
  -- coordinator, workers:0, serves the others when it is honest)
  for k, attack in ipairs({ "lie", "empire --attack-args selection:random" }) do
  it(string.format("Byzantine ranks collude over MPI (%s, 2 of 4, on a channel of their own): the θ of the same "
                   .. "run over ZeroMQ", k == 1 and "lie" or "empire with selection:random"), function()
    need_mpi()
    local dir = H.tmpdir()
    local flags = "--experiment fashion-mnist --experiment-args eval-size:500 --aggregator average --nb-workers 4 "
      .. "--nb-decl-byz-workers 2 --nb-real-byz-workers 2 --attack " .. attack .. " --seed 5 --step-timeout 30 "
      .. "--checkpoint-period -1 --evaluation-period -1 --quiet --max-step 4"
    local rc, _, err = H.run(string.format("timeout 300 %s -np 5 %s run --MPI %s --checkpoint-dir '%s/mpi'",
                                           MPIRUN, AGT, flags, dir))
    local mpi = K.restore(dir .. "/mpi")
    -- The same run over ZeroMQ: 4 worker processes and the PS on 127.0.0.1.
    local path = H.cluster(dir, H.free_port(5 + k), 4)
    local pids = {}
    for i = 0, 3 do
      pids[#pids + 1] = H.spawn(string.format("exec %s worker --server '%s' --id workers:%d --auth none --idle-timeout 60",
                                              AGT, path, i), string.format("%s/w%d.log", dir, i))
    end
    local rc2, _, err2 = H.run(string.format("timeout 300 %s run --server '%s' --auth none --connect-timeout 60 %s "
      .. "--checkpoint-dir '%s/zmq'", AGT, path, flags, dir))
    H.stop(pids)
    local logs = {}
    for i = 0, 3 do logs[#logs + 1] = H.read(string.format("%s/w%d.log", dir, i)) or "" end
    local zmq = K.restore(dir .. "/zmq")
    os.execute("rm -rf '" .. dir .. "'")
    assert.equal(0, rc, err)
    assert.equal(0, rc2, err2 .. table.concat(logs, "\n"))
    assert.truthy(err:find(k == 1 and "[workers:2] coordinating the Byzantine partners (1) over MPI"
                             or "[workers:0] coordinating the Byzantine partners (3) over MPI", 1, true), err)
    assert.truthy(err:find("%[workers:3%] ready: .*may attack %(" .. attack:match("^%a+") .. ", colluding%)"), err)
    assert.falsy(err:find("said once", 1, true), err) -- no partner left out, none alone
    assert.falsy(err:find("faulty", 1, true), err)
    assert.equal("4", mpi.step)
    assert.equal("4", zmq.step)
    assert.equal(zmq.theta, mpi.theta)
    -- ... which is not the omniscient attacker's (--attack-at-ps, as the local run): lie did act
    -- on the two Byzantine ranks' own gradients.
    local loc = S.new({ experiment = "fashion-mnist", experiment_args = { "eval-size:500" }, seed = 5, quiet = true,
                        evaluation_file = "-", summary_dir = "-", checkpoint_period = -1, evaluation_period = -1,
                        aggregator = "average", nb_workers = 4, nb_decl_byz_workers = 2, nb_real_byz_workers = 2,
                        attack = attack:match("^%a+"), attack_args = k == 2 and { "selection:random" } or nil })
    for _ = 1, 4 do loc:step() end
    assert.are_not.equal(ffi.string(loc.theta.ptr, loc.d * 4), mpi.theta)
    loc:close()
  end)
  end

  -- mimic variant:principal keeps its direction at the coordinator (workers:0 with
  -- selection:random: it serves the others when it is honest, and sends its state after that):
  -- the PS keeps it in its last checkpoint, and the next job gives it back.
  it("a stateful attack over MPI (mimic variant:principal, selection:random): a job resumed from its checkpoint gives the θ of one job", function()
    need_mpi()
    local dir = H.tmpdir()
    local function mpirun(ck, steps)
      return H.run(string.format("timeout 300 %s -np 5 %s run --MPI --experiment fashion-mnist --experiment-args "
        .. "eval-size:500 --aggregator average --nb-workers 4 --nb-decl-byz-workers 2 --nb-real-byz-workers 2 "
        .. "--attack mimic --attack-args variant:principal selection:random --seed 5 --step-timeout 120 "
        .. "--checkpoint-period -1 --evaluation-period -1 --quiet --max-step %d --checkpoint-dir '%s/%s'",
        MPIRUN, AGT, steps, dir, ck))
    end
    local rc1, _, err1 = mpirun("two", 8)
    local rc2, _, err2 = mpirun("two", 8)
    local rc3, _, err3 = mpirun("one", 16)
    local two, one = K.restore(dir .. "/two"), K.restore(dir .. "/one")
    os.execute("rm -rf '" .. dir .. "'")
    assert.equal(0, rc1, err1)
    assert.equal(0, rc2, err2)
    assert.equal(0, rc3, err3)
    assert.truthy(err2:find("[workers:0] attack mimic goes on from its state as the PS kept it", 1, true), err2)
    assert.falsy(err2:find("has no state of the attack", 1, true), err2)
    -- (a row faulty at the last step leaves its state out of that checkpoint: the step timeout
    -- is long, a loaded machine once made the coordinator's state miss it, cause not captured)
    assert.falsy(err2:find("faulty", 1, true), err2)
    assert.falsy(err3:find("faulty", 1, true), err3)
    assert.equal("16", two.step)
    assert.equal("16", one.step)
    assert.equal(one["attack.wire.1"], two["attack.wire.1"], "the coordinator's state at step 16:\n" .. err2)
    assert.equal(K.hex(K.sha256(one.theta)), K.hex(K.sha256(two.theta))) -- (they differ without the state)
  end)

  it("refuses a -np that is not --nb-workers + 1 on every rank at once, saying which -np to give", function()
    need_mpi()
    local rc, _, err = H.run(string.format("timeout 120 %s -np 3 %s run --MPI %s --max-step 2", MPIRUN, AGT, RUN))
    assert.is_not.equal(0, rc)
    local msg = "agt run: --nb-workers: mpirun started 3 processes, the parameter server (rank 0) and 2 workers, "
      .. "but the run has --nb-workers 4: give mpirun -np 5 (or --nb-workers 2)"
    local _, count = err:gsub(msg:gsub("%p", "%%%0"), "")
    assert.equal(1, count, err) -- said once (by rank 0), not by every rank
  end)

  it("refuses --MPI outside mpirun, with --server, and bad flags (once, on rank 0)", function()
    need_mpi()
    local rc, _, err = H.agt_run("run --MPI " .. RUN)
    assert.equal(2, rc)
    assert.truthy(err:find("--MPI: this process was not started by mpirun: run 'mpirun -np 5 agt run --MPI ...'", 1, true), err)
    rc, _, err = H.agt_run("run --MPI --server x --auth none " .. RUN)
    assert.equal(2, rc)
    assert.truthy(err:find("--MPI: and --server are two ways of running distributed: give one", 1, true), err)
    -- --wait-for is the PS's (Remote:fill), taken with --MPI as with --server
    local FL = require("agt.cli.run.flags")
    local o = FL.check(FL.parse_args({ "--MPI", "--experiment", "fashion-mnist", "--aggregator", "median",
                                       "--nb-workers", "4", "--nb-decl-byz-workers", "1", "--wait-for", "3" }))
    assert.equal(3, o.wait_for)
    rc, _, err = H.run(string.format("timeout 120 %s -np 2 %s run --MPI --frobnicate", MPIRUN, AGT))
    assert.is_not.equal(0, rc)
    local _, count = err:gsub("unknown flag %-%-frobnicate", "")
    assert.equal(1, count, err)
  end)

  -- A script of spec/mpi/ on np ranks: it exits 0, prints no FAIL and `oks` lines "ok: ".
  local function mpi_script(np, name, oks)
    need_mpi()
    local rc, out, err = H.run(string.format("timeout 120 %s -np %d %s %s", MPIRUN, np, AGT,
                                           H.shell_quote(host.root .. "/spec/mpi/" .. name)))
    assert.equal(0, rc, out .. err)
    assert.falsy(out:find("FAIL", 1, true), out)
    local _, n = out:gsub("ok: ", "")
    assert.equal(oks, n, out)
  end

  it("the transport: deadlines, size, tag and source checked before receiving, full peers (spec/mpi/transport.lua)", function()
    mpi_script(3, "transport.lua", 21)
  end)

  it("the Byzantine ranks' channel: its ranks only, its own tag, size checked before receiving (spec/mpi/channel.lua)", function()
    mpi_script(4, "channel.lua", 17)
  end)

  it("a rogue worker rank's wrong-size rows, garbage and rows for another worker are counted; the run completes", function()
    need_mpi()
    local rc, _, err = H.run(string.format("timeout 300 %s -np 4 %s run --MPI %s --max-step 6 : -np 1 %s %s",
                                           MPIRUN, AGT, RUN, AGT, H.shell_quote(host.root .. "/spec/mpi/rogue.lua")))
    assert.equal(0, rc, err)
    assert.truthy(err:find("faults by worker: workers:3: wrong-size 2, malformed 2, stranger 2", 1, true), err)
    for i = 0, 2 do assert.truthy(err:find(string.format("[workers:%d] the PS ended the run after 6 steps", i), 1, true), err) end
  end)

  it("a rank that stalls past --step-timeout is faulty (missing, then late rows) and back after; the run completes", function()
    need_mpi()
    local rc, _, err = H.run(string.format("timeout 300 %s -np 4 %s run --MPI %s --max-step 8 --step-timeout 2 : -np 1 %s %s stall",
                                           MPIRUN, AGT, RUN:gsub("%-%-step%-timeout 30 ", ""), AGT,
                                           H.shell_quote(host.root .. "/spec/mpi/rogue.lua")))
    assert.equal(0, rc, err)
    assert.truthy(err:find("worker workers:3 faulty at step 2: no row within --step-timeout 2 s", 1, true), err)
    assert.truthy(err:find("worker workers:3 back at step %d+ %(faulty since step 2%)"), err)
    assert.truthy(err:find("faults by worker: workers:3: missing %d+, late %d+"), err)
    for i = 0, 2 do assert.truthy(err:find(string.format("[workers:%d] the PS ended the run after 8 steps", i), 1, true), err) end
  end)
end)
