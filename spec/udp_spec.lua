-- Specs of --UDP K (lossy rows over UDP): agt.udp through its binding; a PS session in this
-- process with `agt worker` processes sending their rows as datagrams with a test drop rate
-- (the spec steps the PS and reads G: NaN exactly at the left-out chunks' offsets, the
-- counters exactly the chunks left out, training goes on); the same through `agt run` with the
-- summaries and the closing report; the flags' refusals; and, where this machine lets a test
-- make a network namespace with `tc netem`, a run under real packet loss.
local H = require("helpers")
local ffi = require("ffi")
local S = require("agt.session")
local U = require("agt.udp")
local T = require("agt.tensor")
local host = require("agt.host")

local AGT = host.root .. "/agt"

local free_port, cluster, spawn, stop = H.free_port, H.cluster, H.spawn, H.stop

local function start_workers(dir, path, n, prefix)
  local pids = {}
  for i = 0, n - 1 do
    pids[i + 1] = spawn(string.format("exec %s'%s' worker --server '%s' --id workers:%d --auth none --idle-timeout 30",
                                      prefix or "", AGT, path, i), string.format("%s/w%d.log", dir, i))
  end
  return pids
end

local function isnan(x) return x ~= x end

local BASE = {
  experiment = "fashion-mnist", experiment_args = { "eval-size:500" }, seed = 5, quiet = true,
  evaluation_file = "-", summary_dir = "-", checkpoint_period = -1, evaluation_period = -1,
}
local function opts(extra)
  local o = {}
  for k, v in pairs(BASE) do o[k] = v end
  for k, v in pairs(extra) do o[k] = v end
  return o
end

describe("agt.udp", function()
  it("carries a row into its place, NaN exactly where the drop rate left chunks out", function()
    local d, chunk = 1000, 256 -- 64 floats a chunk: 16 chunks, the last of 40 floats
    local r = U.server("127.0.0.1", 0, 2, d, chunk)
    assert.equal(16, r.chunks)
    r:set_session(77)
    local key = r:new_key(1)
    assert.equal(64, #key)
    local s = U.client("127.0.0.1", r.port, 1, d, chunk, 77, key)
    local row, G = T.new({ d }), T.new({ 2, d })
    for i = 0, d - 1 do row.ptr[i] = i - 500.25 end
    r:open(3, G.ptr)
    local left = s:send(3, row.ptr, 0.25, 11)
    local lost, complete = r:finish({ false, true }, 0.5)
    assert.equal(0, complete)
    assert.same({ 0, left }, lost)
    local n = 0
    for c = 0, 15 do
      local dropped = U.dropped(11, 1, 3, c, 0.25)
      if dropped then n = n + 1 end
      for i = c * 64, math.min(d, (c + 1) * 64) - 1 do
        if dropped then assert.is_true(isnan(G.ptr[d + i])) else assert.equal(row.ptr[i], G.ptr[d + i]) end
        assert.is_true(isnan(G.ptr[i])) -- worker 0 sent nothing
      end
    end
    assert.equal(n, left)
    assert.is_true(left > 0 and left < 16)
    assert.same({ received = 16 - left, lost = left, rejected = 0, late = 0, duplicate = 0 }, r:stats(1))
    -- A key that is not the worker's own: every chunk rejected, nothing written.
    local forger = U.client("127.0.0.1", r.port, 1, d, chunk, 77, string.rep("ab", 32))
    r:open(4, G.ptr)
    forger:send(4, row.ptr)
    os.execute("sleep 0.2")
    lost = r:finish({ false, true }, 0)
    assert.equal(16, lost[2])
    assert.equal(16, r:stats(1).rejected)
    for i = 0, d - 1 do assert.is_true(isnan(G.ptr[d + i])) end
    assert.has_error(function() U.client("127.0.0.1", r.port, 1, d, chunk, 77, "short") end,
                     "a UDP key is 64 hexadecimal characters")
    assert.has_error(function() U.server("127.0.0.1", 0, 2, d, 6) end)
    forger:close(); s:close(); r:close(); r:close()
  end)
end)

-- What docs/distributed.md says of each rule and NaN coordinates (the lost chunks of UDP rows),
-- on random rows with n = 11, f = 2: "coordinate" rules lose only the NaN coordinates and
-- absorb up to f rows NaN at each coordinate, however many rows have some NaN; "row" rules
-- drop a row with any NaN whole and absorb up to f such rows.
describe("NaN coordinates and the rules", function()
  local A = require("agt.aggregators")
  local R = require("agt.rng")
  local n, f, d = 11, 2, 40
  -- The rule's output on random rows with NaN at nan[row] = { coordinates... }: finite everywhere?
  local function finite(name, nan, seed)
    local rule = A.new(name, n, f)
    local G = T.new({ n, d })
    R.new(seed, 1):normal(G, 0, 1)
    for r, coords in pairs(nan) do for _, k in ipairs(coords) do G:row(r).ptr[k] = 0 / 0 end end
    local out = T.new({ d })
    rule:aggregate(G, out, { step = 0, rng = R.new(seed, 2) })
    for k = 0, d - 1 do
      local v = out.ptr[k]
      if v ~= v or math.abs(v) == math.huge then return false end
    end
    return true
  end
  -- f rows with NaN on random coordinates (all of them somewhere, some everywhere).
  local function f_rows(seed)
    local rng, nan = R.new(seed, 3), {}
    for j = 1, f do
      local r = (seed + 3 * j) % n + 1
      nan[r] = {}
      for k = 0, d - 1 do if j == 1 or rng:double() < 0.3 then nan[r][#nan[r] + 1] = k end end
    end
    return nan
  end
  -- every row with NaN somewhere, at most f at each coordinate
  local function spread(seed)
    local nan = {}
    for r = 1, n do nan[r] = {} end
    for k = 0, d - 1 do
      for j = 0, f - 1 do local r = (k * f + j + seed) % n + 1; nan[r][#nan[r] + 1] = k end
    end
    return nan
  end
  local COORDINATE = { "average-nan", "median", "trimmed-mean", "phocas", "averaged-median" }
  local ROW = { "krum", "multi-krum", "bulyan", "mda", "cge", "geometric-median", "centered-clipping", "nnm,krum",
                "clipping,median", "arc,krum" }

  it("coordinate rules absorb up to f NaN rows at each coordinate, whatever the rows", function()
    for _, name in ipairs(COORDINATE) do
      for seed = 1, 3 do
        assert.is_true(finite(name, f_rows(seed), seed), name .. " with f NaN rows")
        assert.is_true(finite(name, spread(seed), seed), name .. " with NaN in every row, <= f per coordinate")
      end
    end
    -- average-nan: any number (0 where no value is finite); median: fewer than half of the rows
    local all = {}
    for r = 1, n do all[r] = { 0, 1 } end
    assert.is_true(finite("average-nan", all, 1))
    assert.is_true(finite("median", { [1] = { 0 }, [2] = { 0 }, [3] = { 0 }, [4] = { 0 }, [5] = { 0 } }, 1))
    assert.is_false(finite("median", { [1] = { 0 }, [2] = { 0 }, [3] = { 0 }, [4] = { 0 }, [5] = { 0 }, [6] = { 0 } }, 1))
    assert.is_false(finite("trimmed-mean", { [1] = { 0 }, [2] = { 0 }, [3] = { 0 } }, 1))
  end)

  it("row rules absorb up to f rows with any NaN, each dropped whole", function()
    for _, name in ipairs(ROW) do
      for seed = 1, 3 do assert.is_true(finite(name, f_rows(seed), seed), name .. " with f NaN rows") end
    end
    -- multi-krum averages n-f rows by default: f+1 NaN rows put one in
    assert.is_false(finite("multi-krum", { [1] = { 0 }, [2] = { 5 }, [3] = { 9 } }, 1))
    -- average: any NaN reaches the output
    assert.is_false(finite("average", { [4] = { 7 } }, 1))
  end)
end)

describe("--UDP K with worker processes", function()
  it("trains on, NaN exactly at the chunks the senders left out, counted exactly", function()
    local dir = H.tmpdir()
    local port = free_port()
    local path = cluster(dir, port, 5)
    local pids = start_workers(dir, path, 5)
    local drop, chunk, k, steps = 0.2, 8192, 2, 6
    local ok, err = pcall(function()
      local ps = S.new(opts({ aggregator = "median", nb_workers = 5, nb_decl_byz_workers = 2, server = path,
                              auth = "none", step_timeout = 30, connect_timeout = 60, UDP = k,
                              udp_args = { "drop:" .. drop, "chunk:" .. chunk } }))
      local loc = S.new(opts({ aggregator = "median", nb_workers = 5, nb_decl_byz_workers = 2 }))
      local d, per = ps.d, chunk / 4
      local nchunks = math.ceil(d / per)
      local expect = { 0, 0 }
      for step = 0, steps - 1 do
        local t = ps:step()
        assert.equal(0, t.faulty)
        assert.is_true(t.loss == t.loss)
        if step == 0 then loc:step() end
        for w = 0, k - 1 do
          local row = ps.G.ptr + w * d
          local bad = 0
          for c = 0, nchunks - 1 do
            local dropped = U.dropped(5, w, step, c, drop)
            if dropped then expect[w + 1] = expect[w + 1] + 1 end
            for i = c * per, math.min(d, (c + 1) * per) - 1 do
              if dropped ~= isnan(row[i]) then bad = bad + 1 end
              -- At step 0 both runs start from the same θ: a chunk that arrived is the local row.
              if step == 0 and not dropped and row[i] ~= loc.G.ptr[w * d + i] then bad = bad + 1 end
            end
          end
          assert.equal(0, bad, string.format("step %d worker %d: %d coordinates out of place", step, w, bad))
        end
        -- The TCP rows are whole.
        for i = k * d, 5 * d - 1 do assert.is_false(isnan(ps.G.ptr[i])) end
      end
      assert.is_true(expect[1] > 0 and expect[2] > 0)
      local counters = {}
      for _, c in ipairs(ps.source:counters()) do counters[c[1]] = c[2] end
      assert.equal(expect[1], counters["udp/workers:0/lost"])
      assert.equal(expect[2], counters["udp/workers:1/lost"])
      assert.equal(0, counters["udp/workers:0/rejected"])
      assert.equal(0, counters["udp/kernel_drops"])
      -- Median with n = 5, f = 2 absorbs the two UDP rows' NaN: θ stays finite.
      for i = 0, ps.d - 1 do assert.is_false(isnan(ps.theta.ptr[i])) end
      loc:close()
      ps:close()
    end)
    os.execute("sleep 0.3")
    local logs = {}
    for i = 0, 4 do logs[i + 1] = H.read(string.format("%s/w%d.log", dir, i)) or "" end
    stop(pids)
    os.execute("rm -rf '" .. dir .. "'")
    if not ok then error(tostring(err) .. "\n" .. table.concat(logs, "\n"), 0) end
    assert.truthy(logs[1]:find("rows over UDP to port " .. port, 1, true), logs[1])
    assert.falsy(logs[3]:find("UDP", 1, true), logs[3])
  end)

  it("with no loss, all rows over UDP and attackers over the wire give the local run's θ bit for bit, across a silent PS", function()
    local dir = H.tmpdir()
    local port = free_port() + 5
    local path = cluster(dir, port, 5)
    local pids = start_workers(dir, path, 5)
    local extra = { aggregator = "median", nb_workers = 5, nb_decl_byz_workers = 2, nb_real_byz_workers = 2,
                    attack = "reverse", attack_args = { "of:own", "factor:3" } }
    local theta, counters
    local ok, err = pcall(function()
      local o = opts(extra)
      o.server, o.auth, o.step_timeout, o.connect_timeout, o.UDP = path, "none", 30, 60, 5
      local ps = S.new(o)
      for k = 1, 3 do
        assert.equal(0, ps:step().faulty)
        -- The PS silent past 2 s: the workers say HELLO again, and keep sending under the key
        -- of their first CONFIG (a new key in each CONFIG would make their chunks rejected).
        if k == 1 then os.execute("sleep 2.5") end
      end
      theta = ffi.string(ps.theta.ptr, ps.d * 4)
      counters = {}
      for _, c in ipairs(ps.source:counters()) do counters[c[1]] = c[2] end
      ps:close()
    end)
    local text = {}
    for i = 0, 4 do text[#text + 1] = H.read(string.format("%s/w%d.log", dir, i)) or "" end
    text = table.concat(text, "\n")
    stop(pids)
    os.execute("rm -rf '" .. dir .. "'")
    if not ok then error(tostring(err) .. "\n" .. text, 0) end
    assert.truthy(text:find("may attack (reverse)", 1, true), text)
    for i = 0, 4 do assert.equal(0, counters[string.format("udp/workers:%d/lost", i)]) end
    local loc = S.new(opts(extra))
    for _ = 1, 3 do loc:step() end
    assert.equal(ffi.string(loc.theta.ptr, loc.d * 4), theta)
    loc:close()
  end)

  it("agt run --UDP writes the counters to the summaries and the closing report", function()
    local dir = H.tmpdir()
    local port = free_port() + 7
    local path = cluster(dir, port, 4)
    local pids = start_workers(dir, path, 4)
    local rc, out, err = H.agt_run(string.format("run --server '%s' --auth none --experiment fashion-mnist "
      .. "--experiment-args eval-size:500 --aggregator trimmed-mean --nb-workers 4 --nb-decl-byz-workers 1 "
      .. "--seed 3 --max-step 5 --step-timeout 30 --UDP 1 --udp-args drop:0.3 chunk:4096 rate:50 "
      .. "--summary-dir '%s/sm' --evaluation-period -1 --quiet", path, dir))
    local log0 = H.wait_logs({ dir .. "/w0.log" }, "left out by the test drop rate")[1] -- (said after the PS's BYE)
    local csv = H.read(dir .. "/sm/summary.csv") or ""
    local events = H.sh(string.format("ls '%s/sm' | grep -c tfevents", dir))
    stop(pids)
    os.execute("rm -rf '" .. dir .. "'")
    assert.equal(0, rc, err)
    local expect = 0
    for step = 0, 4 do for c = 0, math.ceil(79510 / 1024) - 1 do
      if U.dropped(3, 0, step, c, 0.3) then expect = expect + 1 end
    end end
    assert.truthy(log0:find(string.format("UDP: %d chunk(s) left out by the test drop rate", expect), 1, true), log0)
    assert.truthy(err:find(string.format("UDP chunks: workers:0 received %d, lost %d, rejected 0, late 0, duplicate 0",
                                         5 * 78 - expect, expect), 1, true), err)
    local last
    for v in csv:gmatch(",5,udp/workers:0/lost,(%d+)") do last = tonumber(v) end
    assert.equal(expect, last, csv)
    assert.truthy(csv:find(",udp/workers:0/rejected,0", 1, true), csv)
    assert.equal("1", events:match("%d+"))
  end)

  it("refuses bad --UDP flags before any data is loaded", function()
    local function refused(extra, pattern)
      local ok, e = pcall(S.new, opts(extra))
      assert.is_false(ok)
      assert.truthy(tostring(e):find(pattern), tostring(e))
    end
    local c = [[{"ps": ["127.0.0.1:1"], "workers": ["a:1", "b:2"]}]]
    refused({ aggregator = "median", nb_workers = 2, UDP = 1 }, "^%-%-UDP: needs %-%-server")
    refused({ aggregator = "median", nb_workers = 2, server = c, auth = "none", UDP = 3 }, "^%-%-UDP: K must be in %[0, n%], got K=3 n=2")
    refused({ aggregator = "median", nb_workers = 2, server = c, auth = "none", udp_args = { "chunk:4096" } },
            "^%-%-udp%-args: given without %-%-UDP K")
    refused({ aggregator = "median", nb_workers = 2, server = c, auth = "none", UDP = 1, udp_args = { "chunk:4098" } },
            "^%-%-udp%-args: 'chunk' must be a multiple of 4 in %[4, 65440%], got 4098")
    refused({ aggregator = "median", nb_workers = 2, server = c, auth = "none", UDP = 1, udp_args = { "drop:1" } },
            "^%-%-udp%-args: 'drop' must be in %[0, 1%)")
    refused({ aggregator = "median", nb_workers = 2, server = c, auth = "none", UDP = 1, udp_args = { "mtu:9000" } },
            "^%-%-udp%-args: unknown key 'mtu' %(known: chunk, port, timeout, rate, drop%)")
  end)
end)

-- Real packet loss: netem on the loopback of a network namespace this spec makes, on UDP only
-- (a u32 filter steers IPv4 protocol 17 to a netem band), so the chunks netem drops are exactly
-- the ones the PS must count lost. Needs root, `ip netns` and the kernel's sch_netem.
describe("--UDP under tc netem loss", function()
  it("counts lost exactly the datagrams netem dropped, and trains on", function()
    local ns = "agt-udp-" .. (tonumber(H.sh("echo $$")) or 0)
    local function nsx(cmd) return string.format("ip netns exec %s %s", ns, cmd) end
    local setup = table.concat({
      "ip netns add " .. ns, nsx("ip link set lo up"),
      nsx("tc qdisc add dev lo root handle 1: prio bands 4"),
      nsx("tc qdisc add dev lo parent 1:4 handle 40: netem loss 10%"),
      nsx("tc filter add dev lo parent 1: protocol ip prio 1 u32 match ip protocol 17 0xff flowid 1:4"),
    }, " && ")
    local rc, _, why = H.run("(" .. setup .. ")")
    if rc ~= 0 then
      H.run("ip netns del " .. ns)
      pending("tc netem in a network namespace is not available here: " .. (why:gsub("%s+$", "")))
      return
    end
    local dir = H.tmpdir()
    local port = free_port() + 11
    local path = cluster(dir, port, 4)
    local pids = start_workers(dir, path, 4, "ip netns exec " .. ns .. " ")
    local rc2, _, err = H.run(nsx(string.format("%s run --server '%s' --auth none --experiment fashion-mnist "
      .. "--experiment-args eval-size:500 --aggregator median --nb-workers 4 --nb-decl-byz-workers 1 "
      .. "--seed 3 --max-step 5 --step-timeout 30 --UDP 1 --udp-args chunk:4096 timeout:0.5 "
      .. "--evaluation-period -1 --quiet", H.shell_quote(H.agt), path)))
    local stats = H.sh(nsx("tc -s qdisc show dev lo"))
    os.execute("sleep 0.3")
    stop(pids)
    H.run("ip netns del " .. ns)
    os.execute("rm -rf '" .. dir .. "'")
    assert.equal(0, rc2, err)
    local dropped = tonumber(stats:match("qdisc netem 40:.-dropped (%d+)"))
    assert.truthy(dropped, stats)
    local lost = tonumber(err:match("workers:0 received %d+, lost (%d+)"))
    assert.truthy(lost, err)
    assert.is_true(dropped > 0, stats)
    assert.equal(dropped, lost)
  end)
end)
