-- Specs of Byzantine worker processes attacking over the wire (agt.session.collusion) on
-- 127.0.0.1: each test starts its `agt worker` processes and stops them (by pid). The PS is a
-- session in this process or an `agt run --server` child. Data: fashion-mnist (offline), or a
-- user's experiment made up in the test.
local H = require("helpers")
local ffi = require("ffi")
local S = require("agt.session")
local T = require("agt.tensor")
local K = require("agt.attacks")
local Workers = require("agt.session.workers")
local Checkpoint = require("agt.checkpoint")
local R = require("agt.rng")
local Collusion = require("agt.session.collusion")
local host = require("agt.host")

local AGT = host.root .. "/agt"

local free_port, cluster, spawn, stop, gone = H.free_port, H.cluster, H.spawn, H.stop, H.gone

-- n workers started in cwd (default: this process's), each with flags.
local function start_workers(dir, path, n, flags, cwd)
  local pids = {}
  for i = 0, n - 1 do
    pids[i + 1] = spawn(string.format("%sexec '%s' worker --server '%s' --id workers:%d --idle-timeout 30 %s",
                                      cwd and ("cd '" .. cwd .. "' && ") or "", AGT, path, i, flags or "--auth none"),
                        string.format("%s/w%d.log", dir, i))
  end
  return pids
end

local function logs(dir, n)
  local t = {}
  for i = 0, n - 1 do t[#t + 1] = string.format("--- w%d:\n%s", i, H.read(string.format("%s/w%d.log", dir, i)) or "") end
  return table.concat(t, "\n")
end

local function row_bytes(G, i) return ffi.string(G:row(i).ptr, G:size(2) * 4) end

local BASE = {
  experiment = "fashion-mnist", experiment_args = { "eval-size:500" }, seed = 5, quiet = true,
  evaluation_file = "-", summary_dir = "-", checkpoint_period = -1, evaluation_period = -1,
  auth = "none", step_timeout = 30, connect_timeout = 60,
}
local function opts(extra)
  local o = {}
  for k, v in pairs(BASE) do o[k] = v end
  for k, v in pairs(extra) do o[k] = v end
  return o
end

describe("what Byzantine worker processes compute", function()
  local n, d = 6, 37
  local function random_G(seed)
    local G = T.new({ n, d })
    R.new(seed, 1):normal(G, 0, 1)
    G.ptr[3] = 0 / 0      -- non-finite values in an attacker's gradient too
    G.ptr[5 * d + 2] = 1 / 0
    G.ptr[4 * d + 1] = -1 / 0
    return G
  end

  it("an attack that reads no honest row gives, alone on its row, what it gives at the PS", function()
    local alone = 0
    for _, name in ipairs(K.list()) do
      local args = name == "reverse" and { "of:own", "factor:2" } or {}
      local a = K.new(name, args, { n = n, f = 2, r = 2, seed = 9, warn = function() end })
      if a.kind == "gradient" and not a:needs_honest() then
        alone = alone + 1
        local G = random_G(4)
        local own = G:row(6):clone()
        a:apply({ G = G, honest = { 1, 2, 3, 4 }, byz = { 6 }, step = 3, rng = R.new(9, 77) })
        a:apply_own(own, 3, R.new(9, 77))
        assert.equal(row_bytes(G, 6), ffi.string(own.ptr, d * 4), name)
      elseif a.kind == "gradient" then
        local ok, err = pcall(a.apply_own, a, T.new({ d }), 0)
        assert.is_false(ok)
        assert.truthy(tostring(err):find("reads the honest rows", 1, true), name)
      end
    end
    assert.is_true(alone >= 7) -- drop, gaussian, inf, nan, random, reverse of:own, zero
    assert.is_true(K.new("reverse", {}, { n = n, f = 2 }):needs_honest())
    -- a user's attack colludes unless it says otherwise; the field is checked
    local mine = { name = "mine", apply = function() end }
    assert.is_true(K.new(mine, {}, { n = n, f = 2 }):needs_honest())
    local ok, err = pcall(K.new, { name = "bad", apply = function() end, needs_honest = "no" }, {}, { n = n, f = 2 })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("needs_honest", 1, true), tostring(err))
  end)

  it("every gradient attack runs on what 2 Byzantine workers know, and on what one knows alone", function()
    for _, name in ipairs(K.list()) do
      local a = K.new(name, {}, { n = n, f = 2, r = 2, seed = 9, rule = require("agt.aggregators").new("median", n, 2),
                                  warn = function() end })
      if a.kind == "gradient" then
        for _, known in ipairs({ { 5, 6 }, { 6 } }) do
          local G = random_G(5)
          local g = {}
          for _, i in ipairs(known) do g[i] = row_bytes(G, i) end
          local ok, err = pcall(Collusion.run_attack, a, G, known, 2, a.rule)
          -- the honest set is the known rows: the first honest indices hold their copies
          for k, i in ipairs(known) do assert.equal(g[i], row_bytes(G, k), name) end
          assert.is_true(ok, name .. ": " .. tostring(err))
        end
      end
    end
  end)
end)

describe("an attack's state at the workers, on its way to the PS's checkpoint", function()
  local Byzantine = require("agt.session.byzantine")
  local function byz(attack, args)
    return Byzantine.new({ attack = attack, attack_args = args, seed = 3, server = "unused", aggregator = "average" },
                         { n = 5, f = 2, r = 2, warn = function() end })
  end
  -- the state of mimic variant:principal after a step on random rows
  local function mimic_state(d)
    local a = K.new("mimic", { "variant:principal" }, { n = 5, f = 2, r = 2, seed = 3 })
    local G = T.new({ 5, d })
    R.new(8, 1):normal(G, 0, 1)
    a:apply({ G = G, honest = { 1, 2, 3 }, byz = { 4, 5 }, step = 0, rng = R.new(3, 1) })
    return a:state()
  end

  it("travels in parts of one row's bytes and is put together again, whatever the size", function()
    for _, d in ipairs({ 1, 1000, 16384, 16385, 40000 }) do
      for _, s in ipairs({ "", "x", mimic_state(d), string.rep("y", Collusion.max_state(d)) }) do
        local parts = Collusion.state_parts(s, d)
        local asm = Collusion.assembler(d)
        local got
        for k, p in ipairs(parts) do
          assert.truthy(#p.s <= Collusion.part_bytes(d))
          got = asm:add(p.aux, p.s, #p.s)
          if k < #parts then assert.is_nil(got) end
        end
        assert.equal(s, got, d .. " parameters, " .. #s .. " bytes")
      end
    end
    assert.equal("", Collusion.state_parts(nil, 10)[1].s)
  end)

  it("a state out of form is refused, saying why, before anything is kept", function()
    local d = 40000
    local P = Collusion.part_bytes(d)
    -- too big to send: the worker says so and sends none
    local parts, why = Collusion.state_parts(string.rep("z", Collusion.max_state(d) + 1), d)
    assert.is_nil(parts)
    assert.truthy(why:find("more than the " .. Collusion.max_state(d), 1, true), why)
    local function refused(aux, len, pattern, asm)
      asm = asm or Collusion.assembler(d)
      local ok, err = asm:add(aux, string.rep("a", len), len)
      assert.is_false(ok)
      assert.truthy(tostring(err):find(pattern, 1, true), tostring(err))
    end
    refused(2 ^ 40, 10, "is not one of a state of at most 3 parts")       -- claims a huge state
    refused(9 * 65536 + 1, 10, "is not one of a state of at most 3 parts") -- more parts than fit
    refused(0 / 0, 10, "is not one of a state of at most 3 parts")
    refused(1.5 + 65536, 10, "is not one of a state")
    refused(2 * 65536 + 3, 10, "part 3 of 2")
    refused(2 * 65536 + 1, 10, "part 1 of 2 has 10 bytes")                 -- a part short of a row
    refused(3 * 65536 + 3, P, "part 3 of 3 has " .. P .. " bytes")       -- over 8 d + 64 KiB in all
    local asm = Collusion.assembler(d)
    assert.is_nil(asm:add(2 * 65536 + 1, string.rep("a", P), P))
    refused(3 * 65536 + 2, 10, "a part of 3 after parts of 2", asm)
    -- the parts before are dropped: a new state starts clean
    assert.equal("b", asm:add(1 * 65536 + 1, "b", 1))
  end)

  it("the PS takes only a state of its attack, and keeps it in its checkpoint for the next step", function()
    local d = 1000
    local b = byz("mimic", { "variant:principal" })
    assert.is_true(b:wire().stateful)
    assert.is_false(byz("lie", {}):wire().stateful)
    local good = mimic_state(d)
    assert.is_true(b:check_wire_state(good, d))
    assert.is_true(b:check_wire_state("", d))
    local ok, why = b:check_wire_state("hello", d)
    assert.is_nil(ok)
    assert.truthy(why:find("not a state of attack mimic: attack mimic: not a mimic state", 1, true), why)
    ok, why = b:check_wire_state(good:sub(1, -2), d)
    assert.is_nil(ok)
    assert.truthy(why:find("wrong size", 1, true), why)
    ok, why = b:check_wire_state(string.rep("q", Collusion.max_state(d) + 1), d)
    assert.is_nil(ok)
    assert.truthy(why:find("more than the " .. Collusion.max_state(d) .. " allowed", 1, true), why)
    -- the PS's own attack is left as it was
    assert.equal("agt-mimic/1 0 0 0\n", b.attack:state())
    -- kept for the step after the one it was taken at, and through a checkpoint
    b:took_wire_states(7, { [4] = good, [5] = "" })
    assert.equal(good, b:wire_state(4, 8))
    assert.equal("", b:wire_state(5, 8))
    assert.is_nil(b:wire_state(4, 9))
    local map = b:state()
    assert.equal("7", map["attack.wire"])
    local b2 = byz("mimic", { "variant:principal" })
    b2:set_state(map)
    assert.equal(good, b2:wire_state(4, 8))
    -- a step at which the PS did not ask: none, and the checkpoint holds none
    b:took_wire_states(8, nil)
    assert.is_nil(b:wire_state(4, 9))
    assert.is_nil(b:state()["attack.wire"])
    -- a checkpoint of an agt before these entries: none either, and it loads
    map["attack.wire"], map["attack.wire.4"], map["attack.wire.5"] = nil, nil, nil
    b2:set_state(map)
    assert.is_nil(b2:wire_state(4, 8))
  end)

  it("over the wire: a state out of form is refused and counted, one missing is none, and a resume says so", function()
    local dir = H.tmpdir()
    local port = free_port(25)
    local path = cluster(dir, port, 3)
    -- workers:2 (Byzantine: the last row) is made up here: at each step it sends a row of zeros
    -- and, when asked, the attack's state below (nothing at step 3); after the PS's BYE it says
    -- HELLO again and reports whether the new CONFIG carries a state.
    H.write(dir .. "/fake.lua", string.format([[
local ffi = require("ffi")
local N = require("agt.net")
local cjson = require("cjson")
local P = require("agt.session.collusion").PROTOCOL
local hello = N.client("tcp://127.0.0.1:%d", 2^24)
local good = "agt-mimic/1 0 0 0\n"
local plan = { [0] = { good, 65537 }, [1] = { "x", 9 * 65536 + 1 }, [2] = { "hello", 65537 }, [4] = { good, 65537 } }
for session = 1, 2 do
  local m
  for _ = 1, 60 do -- (HELLO again each second until a PS answers, as agt worker does)
    hello:send(nil, N.HELLO, 2, -1, P)
    m = hello:recv(1000)
    if m and m.type == N.CONFIG then break end
  end
  local cfg = cjson.decode(m:text())
  io.stderr:write("config ", session, ": state ", tostring(cfg.attack and cfg.attack.state), "\n")
  local d = cfg.d
  local net = N.client("tcp://127.0.0.1:%d", math.max(d * 4, 65536))
  net:set_session(tonumber(cfg.session, 16))
  net:send(nil, N.READY, 2, -1, d)
  local row = ffi.new("float[?]", d)
  while true do
    m = net:recv(30000)
    if not m or m.type == N.BYE then break end
    if m.type == N.THETA then
      local step, aux = m.step, m.aux
      net:send(nil, N.GRAD, 2, step, 0, row, d * 4)
      if aux >= 2 and plan[step] then net:send(nil, N.STATE, 2, step, plan[step][2], plan[step][1]) end
      io.stderr:write("step ", step, " aux ", aux, "\n")
    end
  end
  net:close()
end
]], port, port))
    local function honest() return start_workers(dir, path, 2) end
    local fake = spawn(string.format("exec '%s' '%s/fake.lua'", AGT, dir), dir .. "/fake.log")
    local pids = honest()
    local o = opts({ aggregator = "average", nb_workers = 3, nb_decl_byz_workers = 1, nb_real_byz_workers = 1,
                     attack = "mimic", attack_args = { "variant:principal" }, server = path, step_timeout = 3,
                     connect_timeout = 20, checkpoint_dir = dir .. "/ck", checkpoint_delta = 1, stderr_to = dir .. "/ps.err" })
    local states, text = {}, ""
    local ok, err = pcall(function()
      local s = S.new(o)
      for k = 0, 3 do
        s:step()
        local map = s:state()
        assert.equal(tostring(k), map["attack.wire"])
        states[k] = map["attack.wire.3"] or false
      end
      s:checkpoint()
      s:close()
      stop(pids)
      pids = honest()
      s = S.new(o) -- resumed at step 4: the checkpoint holds no state of workers:2
      s:step()
      states[4] = s:state()["attack.wire.3"] or false
      s:close()
    end)
    -- (the fake's last line, written after its row and state of step 4)
    local fake_log = H.wait_logs({ dir .. "/fake.log" }, "step 4 aux")[1]
    stop(pids)
    stop({ fake })
    text = (H.read(dir .. "/ps.err") or "") .. "\n--- fake:\n" .. fake_log .. logs(dir, 2)
    os.execute("rm -rf '" .. dir .. "'")
    if not ok then error(tostring(err) .. "\n" .. text, 0) end
    assert.same({ [0] = "agt-mimic/1 0 0 0\n", false, false, false, "agt-mimic/1 0 0 0\n" }, states)
    for _, said in ipairs({
      "worker workers:2 at step 1: its attack's state was refused: part number 589825 is not one of a state of at most 3 parts",
      "worker workers:2 at step 2: its attack's state was refused: not a state of attack mimic: attack mimic: not a mimic state",
      "the PS has no state of the attack at worker workers:2 for step 4 (none taken after step 3:",
      "config 1: state nil", "config 2: state nil", "step 3 aux 3", "step 4 aux 3" }) do
      assert.truthy(text:find(said, 1, true), said .. "\n" .. text)
    end
    local _, k = text:gsub("has no state of the attack", "")
    assert.equal(1, k, text)
    -- (its rows were taken: a refused state is said as such, not as the worker faulty then back)
    assert.falsy(text:find("worker workers:2 faulty", 1, true), text)
    assert.falsy(text:find("worker workers:2 back", 1, true), text)
    -- (and counted, by worker, at close)
    assert.truthy(text:find("workers:2: [^;\n]*malformed 2"), text)
  end)

  it("with --checkpoint-period, every checkpoint holds the state after its step's attack", function()
    local dir = H.tmpdir()
    local path = cluster(dir, free_port(26), 3)
    local pids = start_workers(dir, path, 3)
    local ok, err = pcall(function()
      -- (workers:2 attacks alone: one Byzantine worker; a period of 0.05 s runs out during steps)
      local s = S.new(opts({ aggregator = "average", nb_workers = 3, nb_decl_byz_workers = 1, nb_real_byz_workers = 1,
                             attack = "mimic", attack_args = { "variant:principal", "warmup:1000" }, server = path,
                             checkpoint_dir = dir .. "/ck", checkpoint_period = 0.05, checkpoint_keep = 1000 }))
      s:run(150)
      s:close()
      local seen = 0
      for _, f in ipairs(require("agt.fs").list(dir .. "/ck")) do
        local step = tonumber(f:match("^model%-(%d+)%.ckpt$"))
        if step then
          local map = assert(Checkpoint.load(dir .. "/ck/" .. f))
          assert.equal(tostring(step - 1), map["attack.wire"], f)
          assert.truthy(map["attack.wire.3"]:find("^agt%-mimic/1 " .. step .. " 0 79510\n"), f)
          seen = seen + 1
        end
      end
      assert.truthy(seen >= 4, seen .. " checkpoints")
    end)
    local text = logs(dir, 3)
    stop(pids)
    os.execute("rm -rf '" .. dir .. "'")
    if not ok then error(tostring(err) .. "\n" .. text, 0) end
  end)

  it("a worker takes the state the PS sends, and refuses one that is not its attack's, saying why", function()
    local d = 1000
    local good = mimic_state(d)
    local said = {}
    local function cfg(state)
      return { protocol = Collusion.PROTOCOL, name = "mimic", args = { "variant:principal" }, n = 5, f = 2, r = 2,
               seed = 3, colludes = true, partners = { 4 }, coordinator = 4, step_timeout = 1, state = state }
    end
    local ctx = { w = 4, d = d, cluster = { wk_job = "workers", workers = {} }, say = function(t) said[#said + 1] = t end }
    local col = Collusion.new(cfg(Checkpoint.hex(good)), ctx)
    assert.equal(good, col.attack:state())
    assert.truthy(said[1]:find("attack mimic goes on from its state as the PS kept it", 1, true), said[1])
    local cases = {
      { "zz", "not hexadecimal text" },
      { Checkpoint.hex("hello"), "not a mimic state" },
      { 42, "not hexadecimal text of at most" },
      { string.rep("00", Collusion.max_state(d) + 1), "not hexadecimal text of at most" },
    }
    for _, c in ipairs(cases) do
      local ok, err = pcall(Collusion.new, cfg(c[1]), ctx)
      assert.is_false(ok)
      assert.truthy(tostring(err):find(c[2], 1, true), tostring(err))
    end
    col:close()
  end)
end)

describe("the Byzantine workers' channel", function()
  local N = require("agt.net")
  local clock = require("agt.clock")

  it("with CURVE admits only the partners' keys; the coordinator answers each partner its row", function()
    local n, d, step, session = 4, 29, 4, 12345
    local port = free_port(11)
    local c = { wk_job = "workers", workers = { "127.0.0.1:1", "127.0.0.1:2", string.format("127.0.0.1:%d", port), "127.0.0.1:4" } }
    local pub, sec = {}, {}
    for w = 1, 2 do pub[w], sec[w] = N.keypair() end -- workers 2 (the coordinator) and 3
    local spub, ssec = N.keypair()                    -- a stranger's
    local cfg = { protocol = Collusion.PROTOCOL, name = "lie", args = {}, n = n, f = 2, r = 2, seed = 5,
                  colludes = true, coordinator = 2, partners = { 2, 3 }, keys = { pub[1], pub[2] }, step_timeout = 20 }
    local said = {}
    local col = Collusion.new(cfg, { w = 2, d = d, cluster = c, curve = { public = pub[1], secret = sec[1] },
                                     session = session, say = function(t) said[#said + 1] = t end })
    local ep = string.format("tcp://127.0.0.1:%d", port)
    local partner = N.client(ep, 65536, { server = pub[1], public = pub[2], secret = sec[2] })
    local stranger = N.client(ep, 65536, { server = pub[1], public = spub, secret = ssec })
    partner:set_session(session)
    stranger:set_session(session)
    local G = T.new({ n, d })
    R.new(3, 3):normal(G, 0, 1)
    local own, theirs = G:row(3):clone(), G:row(4)
    stranger:send(nil, N.GRAD, 3, step, 0, string.rep("\0", d * 4)) -- claims worker 3's row
    partner:send(nil, N.GRAD, 3, step, 0, theirs.ptr, d * 4)
    -- (the coordinator gathers for half the step timeout, 10 s: the partner's row on its new
    -- CURVE connection comes in well before on a loaded machine; it does not wait once it has)
    col:row(step, own, clock.mono())
    local reply
    local t_end = clock.mono() + 15
    while not reply and clock.mono() < t_end do
      local m = partner:recv(200)
      if m and m.type == N.GRAD and m.step == step then reply = ffi.string(m.data, m.len) end
    end
    t_end = clock.mono() + 10
    while col.server:denied() < 1 and clock.mono() < t_end do col.server:recv(100) end
    local denied = col.server:denied()
    partner:close(); stranger:close(); col:close()
    -- lie over the two Byzantine workers' own gradients (rows 3 and 4), from the mean and std
    local a, b, v = G:row(3).ptr, G:row(4).ptr, ffi.cast("const float *", ffi.string(own.ptr, d * 4))
    local z = K.lie_z(n, 2)
    for j = 0, d - 1 do
      local want = (a[j] + b[j]) / 2 + z * math.abs(a[j] - b[j]) / 2
      assert.is_true(math.abs(v[j] - want) <= 1e-5 * (1 + math.abs(want)), string.format("%d: %g, want %g", j, v[j], want))
    end
    assert.equal(ffi.string(own.ptr, d * 4), reply)
    assert.is_true(denied >= 1)
    assert.truthy(said[1]:find("coordinating the Byzantine partners (1)", 1, true), said[1])
    assert.equal(1, #said, table.concat(said, "\n"))
  end)
end)

-- A rule of the user's (not built in): the row of smallest norm (NaN or inf as the largest).
local LOWEST = [[
local C = require("agt.ffi").C
return {
  name = "lowest-norm", doc = "the row of smallest L2 norm",
  aggregate = function(self, G, out, ctx)
    local best, bi = math.huge, 1
    for i = 1, self.n do
      local v = C.agt_vec_norm2(G.ptr + (i - 1) * self.d, self.d)
      if v == v and v < best then best, bi = v, i end
    end
    C.agt_vec_copy(out.ptr, G.ptr + (bi - 1) * self.d, self.d)
    return { selected = { bi } }
  end,
}
]]

describe("a user's rule file at the Byzantine coordinator", function()
  local N = require("agt.net")
  local A = require("agt.aggregators")
  local U = require("agt.util")
  local Byzantine = require("agt.session.byzantine")
  local cjson = require("cjson")
  local clock = require("agt.clock")
  -- The CONFIG's attack table that the PS makes for worker w (agt.session.remote), through JSON.
  local function config_of(o, n, f, w, partners, warn)
    local byz = Byzantine.new(o, { n = n, f = f, r = #partners, rule = A.new(o.aggregator, n, f),
                                warn = warn or function() end })
    local a = cjson.decode(cjson.encode(byz:wire().config))
    a.partners, a.coordinator, a.step_timeout, a.protocol = partners, partners[1], 4, Collusion.PROTOCOL
    return a, w
  end

  it("travels in CONFIG: optimal-lie searches against it at the coordinator, not against a plain average", function()
    local dir = H.tmpdir()
    local path = dir .. "/lowest.lua"
    H.write(path, LOWEST)
    local n, f, d, step, session = 4, 2, 23, 3, 777
    local port = free_port(12)
    local c = { wk_job = "workers", workers = { "127.0.0.1:1", "127.0.0.1:2", string.format("127.0.0.1:%d", port), "127.0.0.1:4" } }
    local o = { server = "x", attack = "optimal-lie", attack_args = {}, seed = 5, aggregator = path, aggregator_args = {} }
    local cfg = config_of(o, n, f, 2, { 2, 3 })
    assert.equal(LOWEST, cfg.rule.sources[path]) -- the file's text, under the element's name
    os.execute("rm -rf '" .. dir .. "'")          -- (the worker has no such file)
    local said = {}
    local col = Collusion.new(cfg, { w = 2, d = d, cluster = c, session = session,
                                     say = function(t) said[#said + 1] = t end })
    local partner = N.client(string.format("tcp://127.0.0.1:%d", port), 65536)
    partner:set_session(session)
    local G = T.new({ n, d })
    R.new(8, 8):normal(G, 0, 1)
    local own = G:row(3):clone()
    partner:send(nil, N.GRAD, 3, step, 0, G:row(4).ptr, d * 4)
    col:row(step, own, clock.mono())
    local reply
    local t_end = clock.mono() + 5
    while not reply and clock.mono() < t_end do
      local m = partner:recv(200)
      if m and m.type == N.GRAD and m.step == step then reply = ffi.string(m.data, m.len) end
    end
    partner:close(); col:close()
    assert.equal("lowest-norm", col.rule.elements[1].name)
    -- What optimal-lie computes from rows 3 and 4 against the user's rule (a reference built
    -- from the file here), and against a plain average: another row.
    local function reference(rule)
      local a = K.new("optimal-lie", {}, { n = n, f = f, r = 2, seed = 5 })
      local ref = G:clone()
      Collusion.run_attack(a, ref, { 3, 4 }, step, rule)
      return row_bytes(ref, 3), row_bytes(ref, 4)
    end
    local want3, want4 = reference(A.new("lowest-norm", n, f, {}, { sources = { ["lowest-norm"] = LOWEST } }))
    local avg3 = reference(nil)
    assert.equal(want3, ffi.string(own.ptr, d * 4))
    assert.equal(want4, reply)
    assert.are_not.equal(avg3, want3)
    assert.equal(1, #said, table.concat(said, "\n")) -- "coordinating ...", nothing about the rule
  end)

  it("a rule found through AGT_PATH travels too; an over-size or malformed rule file is refused, saying why", function()
    local dir = H.tmpdir()
    os.execute("mkdir -p '" .. dir .. "/aggregators'")
    H.write(dir .. "/aggregators/lowest_norm.lua", LOWEST)
    -- (AGT_PATH is read when the rules are first listed: a process of its own)
    H.write(dir .. "/wire.lua", [[
local Byzantine = require("agt.session.byzantine")
local A = require("agt.aggregators")
local o = { server = "x", attack = "fang", attack_args = {}, seed = 5, aggregator = "nnm,lowest-norm", aggregator_args = {} }
local byz = Byzantine.new(o, { n = 5, f = 2, r = 2, rule = A.new(o.aggregator, 5, 2) })
io.write(require("cjson").encode(byz:wire().config.rule))
]])
    local rc, out, err = H.run(string.format("AGT_PATH='%s' '%s' '%s/wire.lua'", dir, AGT, dir))
    assert.equal(0, rc, err)
    local rule = require("cjson").decode(out)
    assert.equal("nnm,lowest-norm", rule.name)
    assert.same({ ["lowest-norm"] = LOWEST }, rule.sources) -- nnm is built in: not sent
    -- At the PS: a rule file above U.MAX_SOURCE is refused before the run starts.
    local big = dir .. "/big.lua"
    H.write(big, "-- " .. string.rep("x", U.MAX_SOURCE) .. "\n" .. LOWEST)
    local ok, e = pcall(config_of, { server = "x", attack = "lie", attack_args = {}, seed = 5, aggregator = big,
                                     aggregator_args = {} }, 4, 2, 2, { 2, 3 })
    assert.is_false(ok)
    assert.truthy(tostring(e):find("^%-%-aggregator: rule file '.*big.lua' has %d+ bytes, more than the 1048576"), tostring(e))
    -- ... not when the attack does not collude (no rule to send)
    assert.is_true((pcall(config_of, { server = "x", attack = "gaussian", attack_args = {}, seed = 5, aggregator = big,
                                       aggregator_args = {} }, 4, 2, 2, { 2, 3 })))
    -- At a worker: a text above U.MAX_SOURCE, one that is no text, one that does not load.
    local path = dir .. "/lowest.lua"
    H.write(path, LOWEST)
    local cfg = config_of({ server = "x", attack = "lie", attack_args = {}, seed = 5, aggregator = path,
                            aggregator_args = {} }, 4, 2, 3, { 2, 3 })
    local ctx = { w = 3, d = 5, cluster = { wk_job = "workers", workers = {} }, session = 1, say = function() end }
    local function refused(sources, pattern)
      cfg.rule.sources = sources
      local okc, err2 = pcall(Collusion.new, cfg, ctx)
      assert.is_false(okc)
      assert.truthy(tostring(err2):find(pattern), tostring(err2))
    end
    refused({ [path] = string.rep("-", U.MAX_SOURCE + 1) }, "^the PS sent the rule file '.*lowest.lua' as 1048577 bytes, "
      .. "not the text of at most 1048576 bytes")
    refused({ [path] = 7 }, "^the PS sent the rule file '.*lowest.lua' as number")
    refused({ [path] = "return {" }, "^the run's rule, from the rule file%(s%) the PS sent, cannot be built here: "
      .. "cannot load rule file '.*lowest.lua': .*unexpected symbol")
    refused({ [path] = "return { name = 'x' }" }, "^the run's rule, from the rule file%(s%) the PS sent, cannot be built here: ")
    cfg.rule.sources = { [path] = LOWEST }
    assert.is_true((pcall(Collusion.new, cfg, ctx)))
    os.execute("rm -rf '" .. dir .. "'")
  end)
end)

describe("the flags of attacks over the wire", function()
  local FL = require("agt.cli.run.flags")
  local c = [[{"ps": ["127.0.0.1:1"], "workers": ["a:1", "b:2"]}]]
  -- (the PS waits for its workers at the first step)
  local function refused(extra, pattern)
    local s
    local ok, err = pcall(function() s = S.new(opts(extra)); s:step() end)
    if s then s:close() end
    assert.is_false(ok)
    assert.truthy(tostring(err):find(pattern), tostring(err))
  end

  it("refuses what cannot travel to the workers, before any data is loaded", function()
    local atk = { name = "mine", apply = function() end }
    refused({ aggregator = "average", nb_workers = 2, nb_decl_byz_workers = 1, nb_real_byz_workers = 1, server = c, attack = atk },
            "^%-%-attack: an attack object cannot be sent to the worker processes")
    local dir = H.tmpdir()
    local big = dir .. "/big.lua"
    H.write(big, "-- " .. string.rep("x", 2 ^ 20) .. "\nreturn { name = 'big', apply = function() end }\n")
    refused({ aggregator = "average", nb_workers = 2, nb_decl_byz_workers = 1, nb_real_byz_workers = 1, server = c, attack = big },
            "^%-%-attack: attack '.*big.lua' has %d+ bytes, more than the 1048576")
    os.execute("rm -rf '" .. dir .. "'")
    -- With --attack-at-ps an object stays at the PS (refused here only for want of workers).
    local free = string.format([[{"ps": ["127.0.0.1:%d"], "workers": ["a:1", "b:2"]}]], free_port(9))
    refused({ aggregator = "average", nb_workers = 2, nb_decl_byz_workers = 1, nb_real_byz_workers = 1, server = free, attack = atk,
              attack_at_ps = true, connect_timeout = 0.2 }, "^%-%-connect%-timeout")
  end)

  it("configures no attacker whose agt speaks another version of the Byzantine protocol", function()
    local dir = H.tmpdir()
    local port = free_port(10)
    local path = cluster(dir, port, 2)
    H.write(dir .. "/old.lua", string.format([[
local N = require("agt.net")
local h = N.client("tcp://127.0.0.1:%d", 2^24)
h:send(nil, N.HELLO, 1, -1, 0) -- an agt from before attacks over the wire
local m = h:recv(8000)
io.stderr:write(m and ("got " .. N.TYPE_NAMES[m.type]) or "nothing", "\n")
]], port))
    local pid = spawn(string.format("exec '%s' '%s/old.lua'", AGT, dir), dir .. "/old.log")
    local s
    local ok, err = pcall(function()
      s = S.new(opts({ aggregator = "average", nb_workers = 2, nb_decl_byz_workers = 1, nb_real_byz_workers = 1,
                       attack = "lie", server = path, connect_timeout = 2, stderr_to = dir .. "/ps.err" }))
      s:step() -- (the PS waits for its workers at the first step)
    end)
    if s then s:close() end
    os.execute("sleep 0.5")
    stop({ pid })
    local text = (H.read(dir .. "/ps.err") or "") .. (H.read(dir .. "/old.log") or "")
    os.execute("rm -rf '" .. dir .. "'")
    assert.is_false(ok)
    assert.truthy(tostring(err):find("^%-%-connect%-timeout: 0 of 2 workers ready"), tostring(err))
    assert.truthy(text:find(string.format("worker workers:1 speaks version 0 of the Byzantine workers' protocol, this PS %d: "
      .. "not configured", Collusion.PROTOCOL), 1, true), text)
  end)

  it("warns that --attack-at-ps does nothing in a local run", function()
    local _, warnings = FL.check({ experiment = "x", aggregator = "average", nb_workers = 2, attack_at_ps = true })
    assert.truthy(table.concat(warnings, "\n"):find("--attack-at-ps: has no effect in a local run", 1, true))
  end)
end)

-- A made-up experiment (its data drawn from a fixed stream): a user's file.
local BLOBS = [[
local T = require("agt.tensor")
local R = require("agt.rng")
local function blobs(k, seed)
  local x, y = T.new({ k, 4 }), T.new({ k }, "i32")
  R.new(seed, 1):normal(x, 0, 1)
  for i = 0, k - 1 do
    y.ptr[i] = i % 2
    for j = 0, 3 do x.ptr[i * 4 + j] = x.ptr[i * 4 + j] + (i % 2 == 0 and 2 or -2) end
  end
  return { x = x, y = y }
end
return {
  name = "blobs", doc = "two Gaussian blobs in 4 dimensions (a user's experiment)", shape = { 4 }, classes = 2,
  defaults = { ["batch-size"] = 8, ["eval-size"] = 64 },
  data = function() return { train = blobs(256, 7), test = blobs(64, 8) } end,
  model = function(nn) return nn.sequential({ 4 }, { nn.linear(8), nn.relu(), nn.linear(2) }) end,
}
]]

describe("Byzantine worker processes (attacks over the wire)", function()
  it("collude over CURVE: 2 of 6 send lie from their own honest gradients; alone when the coordinator is gone", function()
    local dir = H.tmpdir()
    local port = free_port(1)
    local path = cluster(dir, port, 6)
    local keys = dir .. "/keys"
    assert.equal(0, (H.run(string.format("'%s' keygen '%s' '%s'", AGT, path, keys))))
    local pids = start_workers(dir, path, 6, "--keys '" .. keys .. "'")
    local got, got2, theta0, theta1, exp = {}, nil, nil, nil, nil
    local ok, err = pcall(function()
      local ps = S.new(opts({ aggregator = "median", nb_workers = 6, nb_decl_byz_workers = 2, auth = "curve",
                              keys = keys, step_timeout = 12, nb_real_byz_workers = 2, attack = "lie", server = path }))
      theta0 = ps.theta:clone()
      exp = ps.exp
      assert.equal(0, ps:step().faulty)
      for i = 1, 6 do got[i] = row_bytes(ps.G, i) end
      -- The coordinator (workers:4, row 5) killed: row 6 attacks alone, on its own gradient.
      theta1 = ps.theta:clone()
      os.execute("kill -9 " .. pids[5])
      assert.equal(1, ps:step().faulty)
      got2 = row_bytes(ps.G, 6)
      ps:close()
    end)
    os.execute("sleep 0.3")
    local text = logs(dir, 6)
    stop(pids)
    os.execute("rm -rf '" .. dir .. "'")
    if not ok then error(tostring(err) .. "\n" .. text, 0) end
    assert.truthy(text:find("coordinating the Byzantine partners (1)", 1, true), text)
    assert.truthy(text:find("no answer from the Byzantine coordinator workers:4 at step 1", 1, true), text)

    -- The honest gradients of the 6 workers at θ0 (and at θ1), computed here.
    local n, d = 6, exp.d
    local G, G1 = T.new({ n, d }), T.new({ n, d })
    local local_workers = Workers.new(exp, n, { seed = 5 })
    local_workers:fill(theta0, G, 0)
    local_workers:fill(theta1, G1, 1)
    for i = 1, 4 do assert.equal(row_bytes(G, i), got[i]) end -- honest rows as they were
    -- What lie computes from what rows 5 and 6 know: their own two gradients.
    local ref = T.new({ n, d })
    for _, p in ipairs({ { 1, 5 }, { 2, 6 }, { 3, 5 }, { 4, 6 }, { 5, 5 }, { 6, 6 } }) do
      ref:row(p[1]):copy(G:row(p[2]))
    end
    local lie = K.new("lie", {}, { n = n, f = 2, r = 2, seed = 5 })
    lie:apply({ G = ref, honest = { 1, 2 }, byz = { 5, 6 }, step = 0 })
    assert.equal(row_bytes(ref, 5), got[5])
    assert.equal(row_bytes(ref, 6), got[6])
    -- ... which is mu + z sigma over those two rows (a plain Lua reference, to float rounding) ...
    local z = K.lie_z(n, 2)
    local a, b, v = G:row(5).ptr, G:row(6).ptr, ffi.cast("const float *", got[5])
    for j = 0, d - 1, 97 do
      local mu = (a[j] + b[j]) / 2
      local want = mu + z * math.abs(a[j] - b[j]) / 2
      assert.is_true(math.abs(v[j] - want) <= 1e-5 * (1 + math.abs(want)), string.format("coordinate %d: %g, want %g", j, v[j], want))
    end
    -- ... and not what the omniscient attacker (--attack-at-ps) sends: the honest rows 1..4.
    local omni = G:clone()
    lie:apply({ G = omni, honest = { 1, 2, 3, 4 }, byz = { 5, 6 }, step = 0 })
    assert.are_not.equal(row_bytes(omni, 5), got[5])
    -- Alone, lie's honest set is row 6's own gradient: sigma = 0, the row is that gradient.
    assert.equal(row_bytes(G1, 6), got2)
  end)

  it("signflip at the workers (reverse of:own) gives the θ of --attack-at-ps and of the local run", function()
    local thetas = {}
    for _, at_ps in ipairs({ false, true }) do
      local dir = H.tmpdir()
      local path = cluster(dir, free_port(at_ps and 3 or 2), 5)
      local pids = start_workers(dir, path, 5)
      local ok, err = pcall(function()
        local ps = S.new(opts({ aggregator = "average", nb_workers = 5, nb_decl_byz_workers = 2,
                                nb_real_byz_workers = 2, attack = "reverse", attack_args = { "of:own", "factor:3" },
                                server = path, attack_at_ps = at_ps }))
        for _ = 1, 3 do assert.equal(0, ps:step().faulty) end
        thetas[#thetas + 1] = ffi.string(ps.theta.ptr, ps.d * 4)
        ps:close()
      end)
      local text = logs(dir, 5)
      stop(pids)
      os.execute("rm -rf '" .. dir .. "'")
      if not ok then error(tostring(err) .. "\n" .. text, 0) end
      assert.equal(not at_ps, text:find("may attack (reverse)", 1, true) ~= nil, text)
    end
    assert.equal(thetas[1], thetas[2])
    -- ... and of the local run with the same seed.
    local loc = S.new(opts({ aggregator = "average", nb_workers = 5, nb_decl_byz_workers = 2, nb_real_byz_workers = 2,
                             attack = "reverse", attack_args = { "of:own", "factor:3" } }))
    for _ = 1, 3 do loc:step() end
    assert.equal(thetas[1], ffi.string(loc.theta.ptr, loc.d * 4))
    loc:close()
  end)

  it("a PS killed (kill -9) and restarted: the Byzantine workers send their streams too, θ is the local run's", function()
    local dir = H.tmpdir()
    local path = cluster(dir, free_port(7), 5)
    local pids = start_workers(dir, path, 5)
    local function ps_cmd(steps)
      return string.format("'%s' run --server '%s' --auth none --experiment fashion-mnist "
        .. "--experiment-args eval-size:500 --aggregator average --nb-workers 5 --nb-decl-byz-workers 2 "
        .. "--nb-real-byz-workers 2 --attack reverse --attack-args of:own factor:3 --seed 5 --max-step %d "
        .. "--step-timeout 60 --connect-timeout 60 --checkpoint-dir '%s/ck' --checkpoint-delta 4 "
        .. "--checkpoint-period -1 --evaluation-period -1 --progress none", AGT, path, steps, dir)
    end
    local ok, err = pcall(function()
      local ps = spawn("exec " .. ps_cmd(100000), dir .. "/ps1.log")
      -- An honest worker stopped past the second checkpoint: the PS waits on a step whose θ the
      -- Byzantine workers (workers:3 and 4) have taken, so their streams are past the
      -- checkpoint's; the PS is killed there.
      -- (any checkpoint of step 8 or later: with --checkpoint-keep 3 one file lives only a few
      -- steps, which a poll can miss on a loaded machine)
      local t_end = os.time() + 90
      while os.time() < t_end and H.newest_checkpoint(dir .. "/ck") < 8 do os.execute("sleep 0.05") end
      os.execute("kill -STOP " .. pids[1])
      assert.truthy(H.newest_checkpoint(dir .. "/ck") >= 8, H.read(dir .. "/ps1.log"))
      os.execute("sleep 0.5")
      os.execute("kill -9 " .. ps)
      os.execute("kill -CONT " .. pids[1])
      gone(ps) -- (its lock on the checkpoint directory with it)
      local rc, pout, perr = H.run(ps_cmd(6))
      assert.equal(0, rc, perr)
      local restored = tonumber(pout:match("Restored step (%d+)"))
      assert.truthy(restored and restored >= 8, pout .. perr)
      os.execute("sleep 0.3")
      for i = 3, 4 do
        local log = H.read(string.format("%s/w%d.log", dir, i)) or ""
        assert.truthy(log:find("the PS is back with a new session", 1, true), log)
        local _, k = log:gsub("may attack %(reverse%)", "")
        assert.equal(2, k, log) -- the attack made again for the new session
      end
      local map = Checkpoint.restore(dir .. "/ck")
      assert.equal(tostring(restored + 6), map.step)
      local loc = S.new(opts({ aggregator = "average", nb_workers = 5, nb_decl_byz_workers = 2, nb_real_byz_workers = 2,
                               attack = "reverse", attack_args = { "of:own", "factor:3" } }))
      for _ = 1, restored + 6 do loc:step() end
      -- The Byzantine workers' streams are the local run's: they sent them before their rows.
      local st = loc:state()
      for i = 1, 5 do assert.equal(st["worker." .. i], map["worker." .. i]) end
      assert.equal(Checkpoint.hex(Checkpoint.sha256(ffi.string(loc.theta.ptr, loc.d * 4))),
                   Checkpoint.hex(Checkpoint.sha256(map.theta)))
      loc:close()
    end)
    local text = logs(dir, 5) .. "\n--- the first PS:\n" .. (H.read(dir .. "/ps1.log") or "")
    stop(pids)
    os.execute("rm -rf '" .. dir .. "'")
    if not ok then error(tostring(err) .. "\n" .. text, 0) end
  end)

  -- A distributed run (n workers, the last two Byzantine, `attack` given as the flag's words)
  -- whose PS is killed with kill -9 past a checkpoint of step 8 or later — an honest worker
  -- stopped first, so the Byzantine workers have moved on to the next step — then restarted
  -- from that checkpoint for `more` steps; then the same run never stopped, with new worker
  -- processes, to the step the restarted one ended at. Fills r (read by the caller, also when
  -- this raises): restored (the step restored), map and map2 (the last checkpoints of the
  -- restarted run and of the run never stopped), perr (the restarted PS's stderr), text (the
  -- workers' and the first PS's logs).
  local function killed_and_never_stopped(r, dir, n, attack, more, port1, port2)
    local function ps_cmd(path, ck, steps)
      return string.format("'%s' run --server '%s' --auth none --experiment fashion-mnist "
        .. "--experiment-args eval-size:500 --aggregator average --nb-workers %d --nb-decl-byz-workers 2 "
        .. "--nb-real-byz-workers 2 --attack %s --seed 5 --max-step %d "
        .. "--step-timeout 60 --connect-timeout 60 --checkpoint-dir '%s' --checkpoint-delta 4 "
        .. "--checkpoint-period -1 --evaluation-period -1 --progress none", AGT, path, n, attack, steps, ck)
    end
    local function first_logs() return logs(dir, n) .. "\n--- the first PS:\n" .. (H.read(dir .. "/ps1.log") or "") end
    local path = cluster(dir, free_port(port1), n)
    local pids = start_workers(dir, path, n)
    local ps = spawn("exec " .. ps_cmd(path, dir .. "/ck", 100000), dir .. "/ps1.log")
    local ok, err = pcall(function()
      local t_end = os.time() + 90
      while os.time() < t_end and H.newest_checkpoint(dir .. "/ck") < 8 do os.execute("sleep 0.05") end
      os.execute("kill -STOP " .. pids[1])
      assert.truthy(H.newest_checkpoint(dir .. "/ck") >= 8, H.read(dir .. "/ps1.log"))
      os.execute("sleep 0.5")
      os.execute("kill -9 " .. ps)
      os.execute("kill -CONT " .. pids[1])
      gone(ps)
      local rc, pout, perr = H.run(ps_cmd(path, dir .. "/ck", more))
      r.perr = perr
      assert.equal(0, rc, perr)
      r.restored = tonumber(pout:match("Restored step (%d+)"))
      assert.truthy(r.restored and r.restored >= 8, pout .. perr)
      os.execute("sleep 0.3")
    end)
    r.text = first_logs()
    stop(pids)
    if not ok then error(err, 0) end
    r.map = Checkpoint.restore(dir .. "/ck")
    assert.equal(tostring(r.restored + more), r.map.step)
    path = cluster(dir, free_port(port2), n)
    pids = start_workers(dir, path, n)
    local rc, _, perr = H.run(ps_cmd(path, dir .. "/ck2", r.restored + more))
    local text2 = logs(dir, n)
    stop(pids)
    assert.equal(0, rc, perr .. "\n" .. text2)
    r.map2 = Checkpoint.restore(dir .. "/ck2")
    assert.equal(r.map2.step, r.map.step)
    assert.equal(Checkpoint.hex(Checkpoint.sha256(r.map2.theta)), Checkpoint.hex(Checkpoint.sha256(r.map.theta)))
  end

  -- The attack's draws come from (seed, row, step) at each worker alone, from (seed, step) at
  -- the coordinator: nothing to carry across the restart, and the run ends where one that never
  -- stopped does.
  for k, attack in ipairs({ "gaussian --attack-args std:0.01", "fang" }) do
  it(string.format("a random attack at the workers (%s) across a PS killed and restarted: θ of the run never stopped",
                   k == 1 and "gaussian, each alone" or "fang, colluding"), function()
    local dir = H.tmpdir()
    local r = { text = "" }
    local ok, err = pcall(function()
      killed_and_never_stopped(r, dir, 4, attack, 4, 13 + 2 * k, 14 + 2 * k)
      for i = 2, 3 do
        assert.truthy(r.text:find(string.format("%%[workers:%d%%] the PS is back with a new session", i)), r.text)
      end
      assert.equal(k == 2, r.text:find("may attack (fang, colluding)", 1, true) ~= nil, r.text)
      -- ... which is not the run without the attack (the draws did reach θ)
      local loc = S.new(opts({ aggregator = "average", nb_workers = 4, nb_decl_byz_workers = 2 }))
      for _ = 1, r.restored + 4 do loc:step() end
      assert.are_not.equal(ffi.string(loc.theta.ptr, loc.d * 4), r.map.theta)
      loc:close()
    end)
    os.execute("rm -rf '" .. dir .. "'")
    if not ok then error(tostring(err) .. "\n" .. r.text, 0) end
  end)
  end

  -- mimic variant:principal keeps a state at its coordinator (the direction z and its
  -- accumulator): the PS asks for it at each step whose end it checkpoints, keeps it in the
  -- checkpoint, and gives it back to the coordinator of the restarted PS's session.
  it("a stateful attack at the workers (mimic variant:principal, colluding) across a PS killed and restarted: θ of the run never stopped", function()
    local dir = H.tmpdir()
    local r = { text = "" }
    local ok, err = pcall(function()
      killed_and_never_stopped(r, dir, 5, "mimic --attack-args variant:principal", 6, 23, 24)
      assert.falsy(r.perr:find("has no state of the attack", 1, true), r.perr)
      assert.truthy(r.text:find("[workers:3] the PS is back with a new session", 1, true), r.text)
      assert.truthy(r.text:find("[workers:3] attack mimic goes on from its state as the PS kept it", 1, true), r.text)
      assert.truthy(r.text:find("may attack (mimic, colluding)", 1, true), r.text)
      assert.equal(tostring(r.restored + 5), r.map["attack.wire"])
      assert.truthy(#r.map["attack.wire.4"] > 8 * 1000, "the coordinator's direction is in the checkpoint")
      assert.equal(r.map2["attack.wire.4"], r.map["attack.wire.4"])
    end)
    os.execute("rm -rf '" .. dir .. "'")
    if not ok then error(tostring(err) .. "\n" .. r.text, 0) end
  end)

  it("optimal-lie at the workers searches against a user's rule that only the PS has (AGT_PATH): θ as simulated here", function()
    local dir = H.tmpdir()
    local psdir = dir .. "/ps"
    os.execute("mkdir -p '" .. psdir .. "/plugins/aggregators'")
    H.write(psdir .. "/blobs.lua", BLOBS)
    local rule_path = psdir .. "/plugins/aggregators/lua_trimmed_mean.lua"
    H.write(rule_path, H.read(host.root .. "/examples/custom_rule.lua"))
    local path = cluster(dir, free_port(19), 5)
    local pids = start_workers(dir, path, 5, "--auth none", dir) -- (no AGT_PATH: no such rule there)
    local rc, out, err = H.run(string.format("cd '%s' && AGT_PATH='%s/plugins' '%s' run --server '%s' --auth none "
      .. "--experiment blobs.lua --aggregator lua-trimmed-mean --nb-workers 5 --nb-decl-byz-workers 2 "
      .. "--nb-real-byz-workers 2 --attack optimal-lie --seed 3 --max-step 5 --step-timeout 30 --connect-timeout 60 "
      .. "--checkpoint-dir ck --checkpoint-period -1 --evaluation-period -1 --quiet", psdir, psdir, AGT, path))
    os.execute("sleep 0.3")
    local text = logs(dir, 5)
    stop(pids)
    local map = Checkpoint.restore(psdir .. "/ck")
    -- The run simulated here: a local run whose attack is what the coordinator computes from the
    -- two Byzantine workers' own gradients (Collusion.run_attack), against the rule given.
    local A = require("agt.aggregators")
    local function simulated(rule)
      local inner = K.new("optimal-lie", {}, { n = 5, f = 2, r = 2, seed = 3, rule = rule })
      local colluding = K.new({ name = "colluding", apply = function(_, c)
        local G = c.G:clone()
        Collusion.run_attack(inner, G, c.byz, c.step, rule)
        for _, i in ipairs(c.byz) do c.G:row(i):copy(G:row(i)) end
      end }, {}, { n = 5, f = 2, r = 2, seed = 3 })
      local loc = S.new(opts({ experiment = psdir .. "/blobs.lua", experiment_args = {}, seed = 3, aggregator = rule_path,
                               nb_workers = 5, nb_decl_byz_workers = 2, nb_real_byz_workers = 2, attack = colluding }))
      for _ = 1, 5 do loc:step() end
      local theta = ffi.string(loc.theta.ptr, loc.d * 4)
      loc:close()
      return theta
    end
    local want = simulated(A.new(rule_path, 5, 2))
    local against_average = simulated(nil)
    os.execute("rm -rf '" .. dir .. "'")
    assert.equal(0, rc, tostring(out) .. tostring(err) .. "\n" .. text)
    assert.truthy(text:find("may attack (optimal-lie, colluding)", 1, true), text)
    assert.falsy(text:find("cannot be built", 1, true), text)
    assert.falsy(text:find("said once", 1, true), text)
    assert.equal("5", map.step)
    assert.equal(want, map.theta)
    assert.are_not.equal(against_average, map.theta)
  end)

  it("trains a user's experiment and attack present only at the PS; selection:random twice gives the same θ", function()
    local dir = H.tmpdir()
    local psdir = dir .. "/ps"
    os.execute("mkdir -p '" .. psdir .. "'")
    -- A made-up experiment (its data drawn from a fixed stream) and a colluding attack: files
    -- only in the PS's directory; the workers run elsewhere.
    H.write(psdir .. "/blobs.lua", BLOBS)
    H.write(psdir .. "/antimean.lua", [[
local C = require("agt.ffi").C
return {
  name = "antimean", doc = "every Byzantine row is -2 times the honest mean (a user's attack)",
  apply = function(self, c)
    local v = self:buffer("v", { c.d })
    C.agt_vec_copy(v.ptr, self:honest_mean(c).ptr, c.d)
    C.agt_vec_scale(v.ptr, c.d, -2)
    self:write(c, v)
  end,
}
]])
    local maps, texts = {}, {}
    for run = 1, 2 do
      local path = cluster(dir, free_port(3 + run), 5)
      local pids = start_workers(dir, path, 5, "--auth none", dir)
      local rc, out, err = H.run(string.format("cd '%s' && '%s' run --server '%s' --auth none --experiment blobs.lua "
        .. "--aggregator median --nb-workers 5 --nb-decl-byz-workers 2 --nb-real-byz-workers 2 --attack antimean.lua "
        .. "--attack-args selection:random --seed 3 --max-step 6 --step-timeout 30 --connect-timeout 60 "
        .. "--checkpoint-dir ck%d --checkpoint-period -1 --evaluation-period -1 --quiet", psdir, AGT, path, run))
      os.execute("sleep 0.3")
      texts[run] = logs(dir, 5)
      stop(pids)
      assert.equal(0, rc, tostring(out) .. tostring(err) .. "\n" .. texts[run])
      assert.falsy(err:find("faulty", 1, true), err)
      maps[run] = Checkpoint.restore(string.format("%s/ck%d", psdir, run))
    end
    -- The same run without the attack, here: another θ (the attack did act).
    local clean = S.new(opts({ experiment = psdir .. "/blobs.lua", experiment_args = {}, seed = 3,
                               aggregator = "median", nb_workers = 5, nb_decl_byz_workers = 2, server = nil }))
    for _ = 1, 6 do clean:step() end
    local clean_theta = ffi.string(clean.theta.ptr, clean.d * 4)
    clean:close()
    os.execute("rm -rf '" .. dir .. "'")
    assert.equal("6", maps[1].step)
    assert.equal(maps[1].theta, maps[2].theta)
    assert.are_not.equal(clean_theta, maps[1].theta)
    for run = 1, 2 do
      assert.truthy(texts[run]:find("ready: blobs.lua", 1, true), texts[run])
      assert.truthy(texts[run]:find("may attack (antimean, colluding)", 1, true), texts[run])
      assert.truthy(texts[run]:find("coordinating the Byzantine partners (4)", 1, true), texts[run])
      assert.falsy(texts[run]:find("said once", 1, true), texts[run])
    end
  end)
end)
