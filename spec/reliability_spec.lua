-- Specs of agt under abuse: a damaged checkpoint folder, files that are not checkpoints, forged
-- checkpoints, two runs in one folder, a full disk, temporary files of an interrupted write.
-- Runs are real `agt run` processes on fashion-mnist (a small evaluation subset keeps them
-- quick), or sessions in this process where a field must be looked at.
local H = require("helpers")
local read, write = H.read, H.write
local K = require("agt.checkpoint")
local S = require("agt.session")
local FL = require("agt.cli.run.flags")

local tmp = H.tmpdir()
teardown(function() os.execute("rm -rf '" .. tmp .. "'") end)

local RUN = "run --experiment fashion-mnist --aggregator krum --nb-workers 5 --nb-decl-byz-workers 1 "
  .. "--experiment-args batch-size:16 eval-size:200 --evaluation-period -1 --checkpoint-period -1 "
  .. "--summary-period -1 --quiet --checkpoint-dir "

-- Runs `agt run` on dir with more flags; exit code, stdout, stderr.
local function run(dir, more)
  more = more or ""
  if not more:find("checkpoint%-delta") then more = more .. " --checkpoint-delta 10" end
  return H.agt_run(RUN .. H.shell_quote(dir) .. " " .. more)
end

local function steps(dir)
  local out = {}
  for _, c in ipairs(K.list(dir)) do out[#out + 1] = c.step end
  return out
end

local function exists(path) return os.execute("test -e '" .. path .. "' -o -L '" .. path .. "'") == 0 end

-- A session of RUN's settings in this process (to look at what it restored).
local function session(dir, err_path)
  local args = {}
  for w in (RUN .. dir .. " --checkpoint-delta 10"):gmatch("%S+") do args[#args + 1] = w end
  table.remove(args, 1)
  local opts = assert(FL.parse_args(args))
  opts.stderr_to, opts.stdout_to = err_path, err_path .. ".out"
  local real = io.stderr
  io.stderr = { write = function(self) return self end, flush = function() end }  -- the file has it
  local ok, s = pcall(S.new, opts)
  io.stderr = real
  assert(ok, s)
  return s
end

describe("checkpoints under abuse", function()
  it("counts only valid checkpoints toward --checkpoint-keep and moves invalid ones aside (14.1)", function()
    local dir = tmp .. "/keep"
    local rc = run(dir, "--max-step 50")
    assert.are.equal(0, rc)
    assert.are.same({ 50, 40, 30 }, steps(dir))
    for _, c in ipairs(K.list(dir)) do write(c.path, "") end          -- every checkpoint emptied
    local rc2, _, err = run(dir, "--max-step 30")
    assert.are.equal(0, rc2, err)
    assert.are.same({ 30, 20, 10 }, steps(dir))                       -- started over, kept its own
    assert.truthy(err:find("model%-50%.ckpt refused: truncated"), err)
    assert.truthy(err:find("moved to [^\n]*model%-50%.ckpt%.invalid"), err)
    assert.are.equal("", read(dir .. "/model-50.ckpt.invalid"))      -- named, not deleted
    -- the next run continues from 30
    local rc3, out = run(dir, "--max-step 10 --evaluation-delta 1000")
    assert.are.equal(0, rc3)
    assert.are.same({ 40, 30, 20 }, steps(dir))
    -- keep 1 and a bit-flipped newest: the new checkpoint survives its own write
    local p = K.list(dir)[1].path
    local s = read(p)
    write(p, s:sub(1, 100) .. string.char((s:byte(101) + 1) % 256) .. s:sub(102))
    local rc4 = run(dir, "--max-step 5 --checkpoint-keep 1")
    assert.are.equal(0, rc4)
    assert.are.same({ 35 }, steps(dir))
    assert.truthy(exists(dir .. "/model-40.ckpt.invalid"))
    assert.is_nil(out:find("Restored"))                               -- --quiet
  end)

  it("skips FIFOs, devices and directories named like checkpoints, without blocking (14.13)", function()
    local dir = tmp .. "/odd"
    assert.are.equal(0, (run(dir, "--max-step 40 --checkpoint-keep 10")))
    os.execute(table.concat({
      "cd '" .. dir .. "'", "rm model-40.ckpt model-30.ckpt", "mkfifo model-70.ckpt",
      "ln -s /dev/zero model-60.ckpt", "mkdir model-50.ckpt", "mkdir model-45.ckpt.invalid" }, " && "))
    local script = tmp .. "/restore.lua"
    write(script, "local K = require('agt.checkpoint')\n"
      .. "local map, path = K.restore(arg[1], { max_bytes = 1e7 })\nprint('RESTORED ' .. path)\n")
    local rc, out, err = H.run("timeout 20 " .. H.shell_quote(H.agt) .. " " .. script .. " " .. dir)
    assert.are.equal(0, rc, err)
    assert.truthy(out:find("RESTORED .*model%-20%.ckpt"), out)
    assert.truthy(err:find("model%-70%.ckpt refused: not a regular file %(a FIFO%)"), err)
    assert.truthy(err:find("model%-60%.ckpt refused: not a regular file %(a character device%)"), err)
    assert.truthy(err:find("model%-50%.ckpt refused: not a regular file %(a directory%)"), err)
    assert.truthy(exists(dir .. "/model-70.ckpt.invalid"))
    -- a regular file larger than any checkpoint of the run is not read
    write(dir .. "/model-90.ckpt", string.rep("x", 2e6))
    local map, path = K.restore(dir, { max_bytes = 1e6, warn = function() end })
    assert.truthy(path:find("model%-20%.ckpt$"))
    assert.truthy(map)
  end)

  it("validates every field of a checkpoint whose checksum is right, and falls back (14.14)", function()
    local dir = tmp .. "/forged"
    assert.are.equal(0, (run(dir, "--max-step 20")))
    local good = assert(K.load(dir .. "/model-20.ckpt"))
    local forgeries = {
      { "step", "-9223372036854775808", "step \"%-9223372036854775808\" is not a step number" },
      { "step", "21", "holds step 21 but is named for step 20" },
      { "d", "79510 ", "d \"79510 \" is not a parameter count" },
      { "d", "12", "holds 12 parameters, the experiment has" },
      { "theta", good.theta:sub(5), "theta has %d+ bytes" },
      { "rng.rule", "xx", "rng%.rule is 2 bytes" },
      { "worker.1", false, "has no state for worker 1" },
      { "worker.9", "x", "has a state for worker \"9\"" },
      { "worker.2", "99999999999999:" .. string.rep("z", 10), "worker state" },
      { "optimizer", "agt-optim 1 sgd 1 1 1000000000\n", "optimizer state" },
    }
    for i, fg in ipairs(forgeries) do
      local m = {}
      for k, v in pairs(good) do m[k] = v end
      if fg[2] == false then m[fg[1]] = nil else m[fg[1]] = fg[2] end
      m.step = (fg[1] == "step") and m.step or "20"
      os.execute("rm -f '" .. dir .. "'/model-20.ckpt*")
      assert(K.write_atomic(dir .. "/model-20.ckpt", K.encode(m)))
      local errf = tmp .. "/forged-" .. i .. ".err"
      local s = session(dir, errf)
      local start = s.start_step
      s:close()
      local err = read(errf)
      assert.are.equal(10, start, fg[1] .. ": " .. err)
      assert.truthy(err:find("model%-20%.ckpt refused: " .. fg[3]) or
                    (fg[3]:find("state") and err:find("model%-20%.ckpt refused: .*" .. fg[3])), fg[1] .. ": " .. err)
      assert.truthy(err:find("falling back to .*model%-10%.ckpt"), err)
    end
    -- settings that differ are still the user's error, not a damaged file
    local rc, _, err = H.agt_run((RUN .. dir):gsub("krum", "median") .. " --max-step 1 --checkpoint-delta 10")
    assert.are.equal(2, rc)
    assert.truthy(err:find("%-%-aggregator: the checkpoint was made with 'krum'"), err)
  end)

  it("refuses a second run in a checkpoint directory, naming the first one's pid (14.3)", function()
    local dir = tmp .. "/two"
    local pid = H.sh(string.format("%s %s%s --max-step 0 --checkpoint-delta 1 >/dev/null 2>&1 & echo $!",
                                   H.shell_quote(H.agt), RUN, dir)):match("%d+")
    for _ = 1, 1200 do
      if #K.list(dir) > 0 then break end
      os.execute("sleep 0.05")
    end
    local rc, _, err = run(dir, "--max-step 5")
    os.execute("kill -INT " .. pid)
    for _ = 1, 1200 do
      if os.execute("kill -0 " .. pid .. " 2>/dev/null") ~= 0 then break end
      os.execute("sleep 0.05")
    end
    assert.are.equal(2, rc)
    assert.truthy(err:find("in use by another run %(pid " .. pid .. "%)"), err)
    -- once it has ended, the directory is free again (kill -9 frees it too: the kernel drops the lock)
    local rc2 = run(dir, "--max-step 1")
    assert.are.equal(0, rc2)
  end)

  it("removes the temporary files of an interrupted checkpoint write at start (14.4)", function()
    local dir = tmp .. "/stale"
    assert.are.equal(0, (run(dir, "--max-step 10")))
    write(dir .. "/.model-20.ckpt.tmp.4242", "half a checkpoint")
    write(dir .. "/.model-x.ckpt.tmp.1", "not ours")
    local rc, _, err = run(dir, "--max-step 1")
    assert.are.equal(0, rc)
    assert.is_false(exists(dir .. "/.model-20.ckpt.tmp.4242"))
    assert.truthy(exists(dir .. "/.model-x.ckpt.tmp.1"))
    assert.truthy(err:find("removed .*%.model%-20%.ckpt%.tmp%.4242, left by an interrupted checkpoint write"), err)
  end)

  it("fails, naming the file, when the evaluation file or the summaries hit a full disk (14.2)", function()
    for _, name in ipairs({ "eval", "summary.csv" }) do
      local dir = tmp .. "/full-" .. name
      os.execute("mkdir -p '" .. dir .. "' && ln -s /dev/full '" .. dir .. "/" .. name .. "'")
      local rc, _, err = run(dir, "--max-step 10 --summary-delta 5")
      assert.are.equal(1, rc)
      assert.truthy(err:find("cannot write " .. dir:gsub("%p", "%%%0") .. "/" .. name:gsub("%p", "%%%0")
                             .. ": No space left on device"), err)
    end
  end)
end)

describe("signals", function()
  it("stops cleanly on SIGTERM as on Ctrl-C: last evaluation and checkpoint, status 130 (14.4)", function()
    local dir = tmp .. "/term"
    os.execute(string.format("sh -c '%s %s%s --max-step 0 --checkpoint-delta 1 >%s.out 2>&1 & "
      .. "echo $! >%s.pid; wait $!; echo $? >%s.rc' &", H.agt, RUN, dir, dir, dir, dir))
    for _ = 1, 1200 do
      if #K.list(dir) > 0 and K.list(dir)[1].step >= 5 then break end
      os.execute("sleep 0.05")
    end
    local pid = read(dir .. ".pid"):match("%d+")
    os.execute("kill -TERM " .. pid)
    for _ = 1, 1200 do  -- (the shell makes the file before it writes the status into it)
      if (read(dir .. ".rc") or ""):match("%d+") then break end
      os.execute("sleep 0.05")
    end
    assert.are.equal("130", (read(dir .. ".rc") or ""):match("%d+"), read(dir .. ".out"))
    local last
    for l in io.lines(dir .. "/eval") do last = tonumber(l:match("^[%d.]+\t(%d+)\t")) end
    assert.are.equal(K.list(dir)[1].step, last)
  end)
end)

describe("agt.checkpoint's directory lock", function()
  it("is exclusive between holders, names the holder, and is released", function()
    local dir = tmp .. "/lock"
    local a = assert(K.lock(dir))
    local b, err = K.lock(dir)
    assert.is_nil(b)
    assert.truthy(err:find("in use by another run %(pid " .. require("ffi").C.getpid() .. "%)"), err)
    a:release()
    local c = assert(K.lock(dir))
    c:release()
    local ro = tmp .. "/ro"
    os.execute("mkdir -p '" .. ro .. "' && chmod 555 '" .. ro .. "'")
    local d, err2 = K.lock(ro)
    if os.execute("test -w '" .. ro .. "'") ~= 0 then               -- (root may write anyway)
      assert.is_nil(d)
      assert.truthy(err2:find("cannot create .*/ro/%.lock"), err2)
    elseif d then d:release() end
  end)
end)

describe("agt.checkpoint's directory lock held by a run that is ending", function()
  -- The holder here is flock(1), the pid in the lock file is what M.lock judges it by.
  local clock = require("agt.clock")
  local function hold(dir, seconds, pid_text)
    write(dir .. "/.lock", pid_text)
    os.execute(string.format("flock '%s/.lock' sleep %g >/dev/null 2>&1 &", dir, seconds))
    for _ = 1, 200 do   -- until flock holds it
      if os.execute(string.format("flock -n '%s/.lock' true", dir)) ~= 0 then return end
      os.execute("sleep 0.02")
    end
    error("flock did not take " .. dir .. "/.lock")
  end

  it("is waited for when its pid is gone, and refused at once when it is alive", function()
    local dir = tmp .. "/lock-ending"
    os.execute("mkdir -p '" .. dir .. "'")
    local p = io.popen("sh -c 'echo $$'")
    local dead = p:read("*l")
    p:close()
    hold(dir, 1.5, dead .. "\n")
    local t0 = clock.mono()
    local a, err = K.lock(dir)
    local waited = clock.mono() - t0
    assert.truthy(a, err)
    assert.is_true(waited > 0.5 and waited < 10, "waited " .. waited .. " s")
    a:release()
    -- a live holder (this process's pid): the same refusal as before, without the wait
    local me = tostring(require("ffi").C.getpid())
    hold(dir, 3, me .. "\n")
    t0 = clock.mono()
    local b, err2 = K.lock(dir)
    assert.is_nil(b)
    assert.truthy(err2:find("in use by another run %(pid " .. me .. "%)"), err2)
    assert.is_true(clock.mono() - t0 < 1, "a live holder was waited for")
  end)
end)

describe("plugin tables (what make fuzz found at first; agt.contract checks them now)", function()
  it("refuses an attack table whose args are not argument specs, naming the problem", function()
    local AT = require("agt.attacks")
    local apply = function() end
    local cases = {
      { { name = "x", apply = apply, args = { 5 } }, "args[1]: expects a table" },
      { { name = "x", apply = apply, args = "k:1" }, "args: expects a table" },
      { { name = "x", apply = apply, args = { { name = "k", default = 1, choices = 3 } } }, "choices: expects a non-empty list" },
      { { name = "x", apply = apply, args = { { name = "k", type = "x" } } }, "type: expects 'string'" },
    }
    for _, c in ipairs(cases) do
      local ok, err = pcall(AT.load, c[1])
      assert.is_false(ok)
      assert.truthy(tostring(err):find(c[2], 1, true), tostring(err))
      assert.is_nil(tostring(err):find("attempt to", 1, true))
    end
  end)
end)

describe("the Lua API under misuse (a Lua error, never a crash)", function()
  local T = require("agt.tensor")

  it("refuses NaN and fractional indices (14.5)", function()
    for _, dt in ipairs({ "u8", "f32", "i32", "i64" }) do
      local t = T.new({ 4 }, dt)
      t:zero()
      assert.has_error(function() t[0 / 0] = 7 end)
      assert.has_error(function() return t[0 / 0] end)
      assert.has_error(function() t[1.5] = 7 end)
      local ok, err = pcall(function() t[0 / 0] = 7 end)
      assert.is_false(ok)
      assert.truthy(err:find("index %-?nan is not an integer"), err)
      assert.truthy(err:find("reliability_spec%.lua:%d+:"), err)   -- the caller's line
      assert.are.same({ 0, 0, 0, 0 }, t:totable())                   -- nothing written
      assert.has_error(function() t[5] = 1 end, nil)
      assert.has_error(function() t[1] = "seven" end)
    end
  end)

  it("refuses every use of a freed tensor (14.6)", function()
    local t = T.new({ 2, 3 })
    local u = T.new({ 2, 3 })
    t:free()
    local uses = {
      clone = function() return t:clone() end, copy = function() return u:copy(t) end,
      copy_into = function() return t:copy(u) end, reshape = function() return t:reshape({ 6 }) end,
      narrow = function() return t:narrow(1, 1) end, row = function() return t:row(1) end,
      ptr = function() return t.ptr end, data = function() return t.data end,
      add = function() return u:add(t) end, fill = function() return t:fill(1) end,
      to = function() return t:to("cpu") end, totable = function() return t:totable() end,
    }
    for name, fn in pairs(uses) do
      local ok, err = pcall(fn)
      assert.is_false(ok, name)
      assert.truthy(tostring(err):find("freed") or tostring(err):find("sizes differ")
                    or tostring(err):find("out of range"), name .. ": " .. tostring(err))
    end
  end)

  it("checks the sizes of rows_mean and rows_std's outputs (14.7)", function()
    local G = T.new({ 3, 4 })
    G:fill(1)
    assert.has_error(function() T.rows_mean(G, T.new({ 3 })) end,
                     "rows_mean: a tensor of 3 values for 4 columns of G")
    assert.has_error(function() T.rows_std(G, T.new({ 4 }), 0, T.new({ 2 })) end,
                     "rows_std: a tensor of 2 values for 4 columns of G")
    assert.has_error(function() T.rows_std(G, T.new({ 1 }), 0, T.new({ 4 })) end,
                     "rows_std: a tensor of 1 values for 4 columns of G")
    assert.has_error(function() T.rows_mean(G, T.new({ 4 }, "i32")) end, "rows_mean: needs f32 tensors")
    local m = T.rows_mean(G, T.new({ 4 }))
    assert.are.same({ 1, 1, 1, 1 }, m:totable())
  end)

  it("refuses shapes with holes, negative, fractional, NaN or infinite sizes (14.9)", function()
    for _, shape in ipairs({ { 2, nil, 3 }, { -1 }, { 1.5 }, { 0 / 0 }, { 1 / 0 }, { "3" } }) do
      local ok, err = pcall(T.new, shape)
      assert.is_false(ok)
      assert.truthy(err:find("dimension") or err:find("holes"), err)
    end
    local t = T.new({ 4, 2 })
    assert.has_error(function() t:narrow(0 / 0, 1) end)
    assert.has_error(function() t:row(1.5) end)
    assert.has_error(function() t:reshape({ 8, nil, 1 }) end)
  end)

  it("checks shapes with 0 dimensions and sizes past exact integers (14.9)", function()
    local e = T.new({ 0, 5 })
    assert.are.equal(0, e:numel())
    assert.are.equal(0, e:sum())
    assert.has_error(function() e:row(1) end, "row 1 out of range 1..0")
    assert.has_error(function() return e[1] end)
    assert.are.equal(0, e:narrow(1, 0):numel())
    assert.are.same({ 5, 0 }, e:reshape({ 5, 0 }).shape)
    assert.has_error(function() T.new({ 1e300 }) end, "dimension 1 is too large (1.0000000000000001e+300)")
    assert.has_error(function() T.new({ "3" }) end, "dimension 1 must be a non-negative integer, got string 3")
    assert.has_error(function() T.new({ 2 }):reshape({ -1, -2 }) end)
    local t = T.new({ 2, 3 })
    assert.has_error(function() t:size(0 / 0) end, "size(i): i must be an integer, got nan")
    assert.has_error(function() t:size("x") end, "size(i): i must be an integer, got x")
    assert.are.equal(3, t:size(2))
  end)

  it("refuses tensor arguments of another dtype and non-number parameters (14.9)", function()
    local x = T.new({ 6 }):fill(1)
    for _, dt in ipairs({ "u8", "i32", "i64" }) do
      local u = T.new({ 6 }, dt)
      for _, op in ipairs({ "dot", "add", "sub", "mul", "allclose" }) do
        assert.has_error(function() x[op](x, u) end, op .. " needs an f32 tensor argument, got " .. dt)
      end
      assert.has_error(function() x:axpy(1, u) end, "axpy needs an f32 tensor argument, got " .. dt)
      assert.has_error(function() x:copy(u) end, "copy: dtypes differ (f32 from " .. dt .. "); convert explicitly")
      assert.has_error(function() require("agt.rng").new(1, 1):normal(u) end,
                       "normal needs an f32 tensor, got " .. dt .. " tensor")
    end
    assert.are.same({ 1, 1, 1, 1, 1, 1 }, x:totable())
    local f = T.new({ 6 })
    f:free()
    assert.has_error(function() x:dot(f) end, "dot (its argument): the tensor was freed (t:free()); use a live tensor")
    assert.has_error(function() x:fill("x") end, "fill needs a number, got string")
    assert.has_error(function() x:scale(nil) end, "scale needs a number, got nil")
    assert.has_error(function() x:axpy("a", x) end, "axpy needs a number, got string")
    assert.has_error(function() T.from_table({ 1, "a" }) end, "value 2 of the table is a string, not a number")
    assert.has_error(function() T.gemm(false, false, nil, T.new({ 2, 2 }), T.new({ 2, 2 }), 0, T.new({ 2, 2 })) end,
                     "gemm: alpha and beta must be numbers, got nil and number")
    local R = require("agt.rng").new(1, 1)
    assert.has_error(function() R:below(0 / 0) end, "below(n) needs an integer n >= 1, got nan")
    assert.has_error(function() R:permutation(-1) end, "permutation(n) needs an integer n >= 0, got -1")
    assert.has_error(function() R:uniform(x, "a") end, "uniform: its parameters must be numbers, got string and number")
  end)

  it("checks agt.data's shard and gather arguments (14.9)", function()
    local D, R = require("agt.data"), require("agt.rng")
    local y = T.from_table({ 0, 1, 2, 1 }, "i32")
    for _, c in ipairs({ 0 / 0, 1e300, "x", 1.5, 0 }) do
      assert.has_error(function() D.shard(y, 2, { mode = "sorted", classes = c }) end,
                       "shard: opts.classes must be an integer >= 1, got " .. tostring(c))
    end
    assert.has_error(function() D.shard(y, 2, { mode = "iid", min_size = -1, rng = R.new(1, 1) }) end,
                     "shard: opts.min_size must be an integer >= 1, got -1")
    local split = { x = T.new({ 4, 3 }), y = y }
    local idx = T.from_table({ 0, 2 }, "i64")
    assert.has_error(function() D.gather(split, idx, T.new({ 2, 3 }, "u8")) end, "gather: x_out must be an f32 tensor")
    assert.has_error(function() D.gather(split, idx, T.new({ 2, 3 }), T.new({ 2 })) end, "gather: y_out must be an i32 tensor")
    assert.has_error(function() D.gather(split, idx, T.new({ 9, 3 }), nil, 5) end, "gather: k = 5 indices of 2")
    assert.has_error(function() D.gather(split, idx.raw, T.new({ 2, 3 })) end, "gather: a pointer of indices needs its count k")
    assert.has_error(function() D.gather({ x = T.new({ 4, 3 }, "i32") }, idx, T.new({ 2, 3 })) end,
                     "gather needs a split {x = f32 tensor, y = i32 tensor}")
    local x, yo = D.gather(split, idx, T.new({ 2, 3 }), T.new({ 2 }, "i32"))
    assert.are.same({ 0, 2 }, yo:totable())
  end)

  it("bounds-checks the attack helpers self:row and self:write (14.8)", function()
    local AT = require("agt.attacks")
    local a = AT.new({ name = "probe", apply = function() end }, {}, { n = 5, f = 1 })
    local c = { G = T.new({ 5, 4 }), d = 4, byz = { 5 }, honest = { 1, 2, 3, 4 } }
    c.G:zero()
    assert.has_error(function() a:row(c, 55) end, "attack probe: self:row(c, i): row 55 out of range 1..5")
    assert.has_error(function() a:row(c, 0 / 0) end)
    assert.has_error(function() a:write(c, T.new({ 3 })) end,
                     "attack probe: self:write(c, v): v must be an f32 tensor of d = 4 values, got f32 3")
    assert.has_error(function() a:write(c, { 1, 2, 3, 4 }) end)
    local v = T.from_table({ 1, 2, 3, 4 })
    a:write(c, v)
    assert.are.same({ 1, 2, 3, 4 }, c.G:row(5):totable())
    assert.are.same({ 0, 0, 0, 0 }, c.G:row(4):totable())
  end)
end)

describe("agt run refuses before any work", function()
  local BASE = "run --experiment fashion-mnist --nb-decl-byz-workers 1 --max-step 1 --quiet "
  local cases = {
    -- 14.10: memory from the flags against what the machine has
    { "--aggregator krum --nb-workers 2147483648", "%-%-nb%-workers: the run needs about [%d.]+ GiB %(G %(n × d floats%)" },
    { "--aggregator average --nb-workers 25000", "%-%-nb%-workers: the run needs about 9%.7 GiB %(G %(n × d floats%) 7%.4 GiB.* but 2%.8 GiB are available %(AGT_MEMORY_LIMIT%)",
      "AGT_MEMORY_LIMIT=3000000000" },
    -- 14.11: every value checked first
    { "--aggregator ,, --nb-workers 5", "%-%-aggregator: aggregator ',,': an empty element in the chain" },
    { "--aggregator krum --nb-workers 5 --experiment-args batch-size:1e9", "the workers' batches" },
    { "--aggregator krum --nb-workers 5 --experiment-args noniid-alpha:inf", "'noniid%-alpha' expects a finite number, got 'inf'" },
    { "--aggregator krum --nb-workers 5 --learning-rate-args initial-rate:inf", "'initial%-rate' expects a finite number, got 'inf'" },
    { "--aggregator krum --nb-workers 5 --l2-regularize inf", "%-%-l2%-regularize: expects a finite number, got 'inf'" },
    { "--aggregator krum --nb-workers 5 --checkpoint-dir /proc/agt-ro", "%-%-checkpoint%-dir: cannot create directory /proc/agt%-ro" },
    { "--aggregator krum --nb-workers 5 --evaluation-file /proc/agt-ro/eval", "%-%-evaluation%-file: cannot open for appending" },
    -- 14.15: duplicate keys, --attack-args without --attack
    { "--aggregator krum --nb-workers 5 --experiment-args eval-size:10 eval-size:20", "'eval%-size' given twice %('eval%-size:10' and 'eval%-size:20'%)" },
    { "--aggregator krum --nb-workers 5 --aggregator-args m:1 m:2", "given twice" },
    { "--aggregator krum --nb-workers 5 --attack-args a:1", "%-%-attack%-args: given without %-%-attack" },
    { "--aggregator multi-krum --nb-workers 5 --aggregator-args m:0", "multi%-krum: argument m=0 must be in 1%.%.n %(got m:0; n=5 f=1%)" },
    { "--aggregator centered-clipping --nb-workers 5 --aggregator-args tau:0", "centered%-clipping: argument tau must be > 0" },
    { "--aggregator clipping,average --nb-workers 5 --aggregator-args c:nan", "'c' expects a number, got 'nan'" },
  }
  for _, c in ipairs(cases) do
    it(c[1], function()
      local t0 = os.time()
      local rc, _, err = H.run((c[3] and (c[3] .. " ") or "") .. H.shell_quote(H.agt) .. " " .. BASE .. c[1])
      assert.are.equal(2, rc, err)
      assert.truthy(err:find(c[2]), err)
      assert.is_true(os.time() - t0 <= 5)   -- (it used to train, or grow ~1 GB / 8 s, first)
    end)
  end
end)

describe("the Lua API and the evaluation file (14.16)", function()
  it("writes each step once to the evaluation file across a resume", function()
    local dir = tmp .. "/evalonce"
    assert.are.equal(0, (run(dir, "--max-step 10 --checkpoint-delta 5 --evaluation-delta 5")))
    assert.are.equal(0, (run(dir, "--max-step 5 --checkpoint-delta 5 --evaluation-delta 5")))
    local steps = {}
    for l in io.lines(dir .. "/eval") do steps[#steps + 1] = tonumber(l:match("^[%d.]+\t(%d+)\t")) end
    assert.are.same({ 0, 5, 10, 15 }, steps)
  end)

  it("refuses s:run(-5), s:run(0/0) and s:run(1.5) instead of running forever", function()
    local s = session(tmp .. "/runarg", tmp .. "/runarg.err")
    for _, bad in ipairs({ -5, 0 / 0, 1.5, 1 / 0, "3" }) do
      local ok, err = pcall(s.run, s, bad)
      assert.is_false(ok)
      assert.truthy(tostring(err):find("s:run%(steps%): steps must be a whole number >= 0"), tostring(err))
    end
    s:close()
  end)

  it("refuses f >= n when a rule is built from Lua", function()
    local A = require("agt.aggregators")
    assert.has_error(function() A.new("average", 3, 5) end,
                     "aggregator 'average': needs n >= 1 and 0 <= f < n, got n=3 f=5")
    assert.has_error(function() A.new("median", 0, 0) end)
  end)

  it("says that a training set is empty instead of a nonsense size", function()
    local path = tmp .. "/empty_exp.lua"
    write(path, [[return { name = "empty", shape = { 2 }, classes = 2,
      data = function(args, D)
        local T = require("agt.tensor")
        return { train = { x = T.new({ 0, 2 }), y = T.new({ 0 }, "i32") },
                 test = { x = T.new({ 3, 2 }), y = T.new({ 3 }, "i32") } }
      end,
      model = function(nn) return nn.sequential({ 2 }, { nn.linear(2) }) end }]])
    local E = require("agt.experiments")
    local exp = E.load(path, {}, { seed = 1, n = 2 })
    local ok, err = pcall(exp.dataset, exp)
    assert.is_false(ok)
    assert.truthy(err:find("experiment empty: the train set is empty"), err)
  end)
end)

describe("agt plot with non-finite values (14.16)", function()
  it("draws the finite points and warns about the others, naming the line", function()
    local P = require("agt.plot")
    local path = tmp .. "/nan_eval"
    write(path, "1.0\t0\tacc:0.5\n2.0\t10\tacc:nan\n3.0\t20\tacc:inf\n4.0\t30\tacc:0.75\n")
    local warned = {}
    P.plot({ path }, { output = tmp .. "/nanplot", warn = function(m) warned[#warned + 1] = m end })
    assert.are.equal(1, #warned)
    assert.truthy(warned[1]:find("nan_eval: 2 value%(s%) of acc not finite %(from step 10%): not drawn"), warned[1])
    local ev = P.read_eval(path)
    assert.are.same({ 0.5, 0.75 }, { ev.rows[1].metrics.acc, ev.rows[4].metrics.acc })
    assert.is_nil(ev.rows[2].metrics.acc)
  end)
end)

describe("resuming with arguments equal to their defaults (14.15)", function()
  it("continues when an argument is given at its default value, and refuses another value", function()
    local dir = tmp .. "/defaults"
    local base = "run --experiment fashion-mnist --aggregator multi-krum --nb-workers 7 --nb-decl-byz-workers 1 "
      .. "--quiet --checkpoint-delta 5 --evaluation-period -1 --checkpoint-period -1 --summary-period -1 --checkpoint-dir "
      .. H.shell_quote(dir)
    local function go(more) return H.agt_run(base .. " --max-step 5 " .. more) end
    assert.are.equal(0, (go("--experiment-args eval-size:100")))
    local rc, _, err = go("--experiment-args eval-size:100 batch-size:32 --aggregator-args m:6")  -- defaults
    assert.are.equal(0, rc, err)
    assert.are.same({ 10, 5 }, steps(dir))
    rc, _, err = go("--experiment-args eval-size:100 batch-size:16")
    assert.are.equal(2, rc)
    assert.truthy(err:find("%-%-experiment%-args: the checkpoint was made with"), err)
    rc, _, err = go("--experiment-args eval-size:100 --aggregator-args m:5")
    assert.are.equal(2, rc)
    assert.truthy(err:find("%-%-aggregator%-args: the checkpoint was made with"), err)
  end)
end)
