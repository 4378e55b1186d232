-- agt.check — a user's plugin file put through what the shipped ones are held to, before a run.
--
--   local report = require("agt.check").file("my_rule.lua", { reference = "median" })
--   report.kind ("rule" | "attack" | "experiment"), report.checks = { {name=, ok=, detail=} }
--
-- A rule: its table against agt.contract; its requirement (built at the smallest n it accepts
-- for f = 1 and 2, refused one below with a message naming n and f); on random inputs a finite
-- output of d values and a valid info table; the same output twice (determinism); the same
-- output for the rows in another order (permutation invariance, within float rounding; not
-- asked of a pre-aggregation step); a finite output with f rows of NaN, +inf or -inf, or one
-- NaN coordinate in f rows (a pre-aggregation step, checked in front of the average, is robust
-- only with its rule and is not asked); and, given a reference rule (a name or a path), the same output as
-- it within float rounding. An attack: its table; built for n = 11, f = r = 2 with median as
-- the rule; honest rows left untouched, the Byzantine rows written with d values; the same
-- rows again for the same seed; its state restored gives the same rows. An experiment: its
-- table, its model built with a parameter count, one worker's gradient finite.
local A = require("agt.aggregators")
local K = require("agt.attacks")
local E = require("agt.experiments")
local T = require("agt.tensor")
local R = require("agt.rng")
local U = require("agt.util")
local contract = require("agt.contract")

local M = {}

M.d = 13          -- columns of the random inputs: a few SIMD blocks and a tail
M.tolerance = 1e-5 -- relative, for outputs computed in another order

-- Which contract a table follows: a rule aggregates, an attack applies or poisons, an
-- experiment has a model.
function M.kind_of(def)
  if type(def) ~= "table" then return nil end
  if def.aggregate then return "rule" end
  if def.apply or def.poison then return "attack" end
  if def.model or def.data then return "experiment" end
  return nil
end

local function matrix(n, d, seed)
  local G = T.new({ n, d })
  R.new(seed, R.stream_id("check", n)):normal(G, 0, 1)
  return G
end

local function finite(x) return x == x and x ~= math.huge and x ~= -math.huge end

-- Largest |a - b| over the vectors, relative to 1 + max |a|; NaN when either has a NaN.
local function rel_diff(a, b)
  local worst, scale = 0, 1
  for k = 0, #a - 1 do
    local x, y = a.raw[k], b.raw[k]
    if x ~= x or y ~= y then return 0 / 0 end
    if x ~= y then worst = math.max(worst, math.abs(x - y)) end
    scale = math.max(scale, math.abs(x))
  end
  return worst / scale
end

local function aggregate(spec, n, f, G)
  local rule = A.new(spec, n, f)
  local out = T.new({ G:size(2) })
  local info = rule:aggregate(G, out, { step = 1, rng = R.new(1, R.stream_id("check-rule", 0)) })
  return out, info
end

-- The smallest n <= 64 the rule accepts for f, or nil.
local function smallest_n(path, f)
  for n = 1, 64 do
    if pcall(A.new, path, n, f) then return n end
  end
end

local function rule_checks(path, def, opts, add)
  local where = opts.where or path
  -- a pre-aggregation step is checked in front of the average, which accepts any n and f
  if def.kind == "pre" then path = path .. ",average" end
  local sizes = {}
  for _, f in ipairs({ 1, 2 }) do
    local n = smallest_n(path, f)
    if not n then
      add("requirement", false, string.format("refuses every n <= 64 for f=%d", f))
      return
    end
    local refused, msg = true, ""
    if n > 1 then refused, msg = pcall(A.new, path, n - 1, f); refused = not refused end
    local named = n == 1 or (tostring(msg):find("n=" .. (n - 1), 1, true) and tostring(msg):find("f=" .. f, 1, true))
    add(string.format("requirement at f=%d", f), refused and named and true or false,
      string.format("accepts n=%d%s", n, n > 1 and (refused and (named and ", refuses n=" .. (n - 1) .. ": " .. tostring(msg)
        or ", refuses n=" .. (n - 1) .. " without naming n and f: " .. tostring(msg)) or "") or ""))
    sizes[#sizes + 1] = { n = n + 2, f = f }
  end
  for _, s in ipairs(sizes) do
    local n, f, d = s.n, s.f, M.d
    local at = string.format(" (n=%d f=%d d=%d)", n, f, d)
    local G = matrix(n, d, 1)
    local ok, out, info = pcall(aggregate, path, n, f, G)
    if not ok then
      -- agt.aggregators holds the info to its contract too: a bad one raises there
      add("finite output and valid info" .. at, false, tostring(out))
      return
    end
    local bad
    for k = 0, d - 1 do if not finite(out.raw[k]) then bad = k; break end end
    local iok, ierr = pcall(contract.rule_info, info, n, where)
    add("finite output and valid info" .. at, bad == nil and iok,
      bad and string.format("out[%d] = %s on finite input", bad + 1, tostring(out.raw[bad])) or (not iok and ierr) or "")
    local again = aggregate(path, n, f, G)
    add("deterministic" .. at, rel_diff(out, again) == 0, rel_diff(out, again) == 0 and "" or "two calls on the same input differ")
    if (def.kind or "rule") == "rule" then
      local perm = R.new(2, R.stream_id("check-perm", n)):permutation(n)
      local P = T.new({ n, d })
      for i = 0, n - 1 do P:row(i + 1):copy(G:row(tonumber(perm[i + 1]) + 1)) end
      local pout = aggregate(path, n, f, P)
      local diff = rel_diff(out, pout)
      add("permutation invariant" .. at, diff <= M.tolerance,
        diff <= M.tolerance and "" or string.format("rows reordered change the output by %.3g (relative)", diff))
    end
    -- a pre-aggregation step is robust only with its rule: the average behind it is not
    for _, case in ipairs(def.kind == "pre" and {} or { { "NaN rows", 0 / 0 }, { "+inf rows", math.huge }, { "-inf rows", -math.huge },
                            { "one NaN coordinate per row", "one" } }) do
      local B = G:clone()
      for i = n - f + 1, n do
        if case[2] == "one" then B:row(i).raw[i % d] = 0 / 0 else B:row(i):fill(case[2]) end
      end
      local bok, bout = pcall(aggregate, path, n, f, B)
      local nonfin
      if bok then for k = 0, d - 1 do if not finite(bout.raw[k]) then nonfin = k; break end end end
      add(string.format("finite with %d %s%s", f, case[1], at), bok and nonfin == nil,
        not bok and tostring(bout) or nonfin and string.format("out[%d] = %s", nonfin + 1, tostring(bout.raw[nonfin])) or "")
    end
    if opts.reference then
      local rok, rout = pcall(aggregate, opts.reference, n, f, G)
      if not rok then
        add("agrees with " .. opts.reference .. at, false, tostring(rout))
      else
        local diff = rel_diff(out, rout)
        add("agrees with " .. opts.reference .. at, diff <= M.tolerance,
          diff <= M.tolerance and "" or string.format("differs by %.3g (relative)", diff))
      end
    end
  end
end

local function rows_equal(a, b, i)
  local x, y = a:row(i), b:row(i)
  for k = 0, #x - 1 do
    if x.raw[k] ~= y.raw[k] and not (x.raw[k] ~= x.raw[k] and y.raw[k] ~= y.raw[k]) then return false end
  end
  return true
end

local function attack_checks(path, def, opts, add)
  local n, f, d = 11, 2, M.d
  local rule = A.new("median", n, f)
  local ok, atk = pcall(K.new, path, opts.args or {}, { n = n, f = f, r = f, seed = 1, rule = rule,
                                                      warn = function() end })
  add("builds at n=11 f=r=2", ok, ok and "" or tostring(atk))
  if not ok then return end
  if atk.kind == "data" then
    add("data attack", true, "poisons " .. tostring(atk.poison) .. " (its effect shows in training)")
    return
  end
  local function fresh() return K.new(path, opts.args or {}, { n = n, f = f, r = f, seed = 1, rule = rule, warn = function() end }) end
  -- a's step `step` on the check's matrix, with the stream the session would give it
  local function attacked(a, step)
    a = a or fresh()
    local G = matrix(n, d, 3)
    local rng = R.new(1, R.stream_id("attack", step))
    local byz = a:byzantine(step)
    local info = a:apply({ G = G, byz = byz, honest = a:honest(byz), step = step, rule = rule, rng = rng })
    return G, byz, info, a
  end
  local aok, G, byz, info, a = pcall(attacked, nil, 1)
  add("applies", aok, aok and "" or tostring(G))
  if not aok then return end
  local orig = matrix(n, d, 3)
  local touched = {}
  local is_byz = {}
  for _, i in ipairs(byz) do is_byz[i] = true end
  for i = 1, n do
    if not is_byz[i] and not rows_equal(G, orig, i) then touched[#touched + 1] = i end
  end
  add("leaves the honest rows untouched", #touched == 0,
    #touched == 0 and "" or ("wrote honest row(s) " .. table.concat(touched, ", ")))
  local same = {}
  for _, i in ipairs(byz) do if rows_equal(G, orig, i) then same[#same + 1] = i end end
  add("writes the Byzantine rows", #same == 0,
    #same == 0 and "" or ("left row(s) " .. table.concat(same, ", ") .. " as the honest worker computed them"))
  add("returns a table", info == nil or type(info) == "table", type(info))
  local G2 = attacked(nil, 1)
  local det = true
  for i = 1, n do det = det and rows_equal(G, G2, i) end
  add("same rows for the same seed", det, det and "" or "two runs with seed 1 differ")
  if def.state then
    local sok, same = pcall(function()
      local st = a:state()
      local Ga = attacked(a, 2)
      local b = fresh()
      b:set_state(st)
      local Gb = attacked(b, 2)
      for i = 1, n do if not rows_equal(Ga, Gb, i) then return false end end
      return true
    end)
    add("its state restored gives the same next step", sok and same,
      not sok and tostring(same) or (not same and "a fresh attack given the state attacks differently") or "")
  end
end

local function experiment_checks(path, def, opts, add)
  local ok, exp = pcall(E.load, path, opts.args or {}, { seed = 1, n = 2 })
  add("loads its data and builds its model", ok, ok and string.format("d = %d parameters", exp.d) or tostring(exp))
  if not ok then return end
  local theta = T.new({ exp.d })
  exp:init_params(theta, R.new(1, R.stream_id("init", 0)))
  local g = T.new({ exp.d })
  local gok, loss = pcall(function() return exp:worker(1, { seed = 1 }):gradient(theta, g) end)
  local bad
  if gok then for k = 0, exp.d - 1 do if not finite(g.raw[k]) then bad = k; break end end end
  add("one worker's gradient is finite", gok and finite(loss) and bad == nil,
    not gok and tostring(loss) or (bad and string.format("gradient[%d] = %s", bad + 1, tostring(g.raw[bad])))
      or string.format("loss %.4f", loss))
end

-- Checks a plugin file. opts: reference (a rule name or path, for a rule), args (key:value
-- words for an attack or an experiment). Returns { kind, checks = {...}, failed = count }.
function M.file(path, opts)
  opts = opts or {}
  local report = { path = path, checks = {}, failed = 0 }
  local function add(name, ok, detail)
    report.checks[#report.checks + 1] = { name = name, ok = ok and true or false, detail = detail or "" }
    if not ok then report.failed = report.failed + 1 end
  end
  local lok, def = pcall(U.load_lua_file, path, "plugin file")
  if not lok then
    add("loads", false, tostring(def))
    return report
  end
  local kind = M.kind_of(def)
  report.kind = kind
  report.what = kind == "rule" and def.kind == "pre" and "pre-aggregation step" or kind
  if not kind then
    add("is a rule, an attack or an experiment", false, type(def) ~= "table"
      and ("returns " .. type(def) .. ", not a table")
      or "has none of aggregate (a rule), apply or poison (an attack), model or data (an experiment)")
    return report
  end
  local cok, cerr = pcall(contract[kind], def, path, kind == "experiment" and E.common_keys and E.common_keys() or nil)
  add("follows the " .. kind .. " contract", cok, cok and "" or cerr)
  if not cok then return report end
  if kind == "rule" then rule_checks(path, def, opts, add)
  elseif kind == "attack" then attack_checks(path, def, opts, add)
  else experiment_checks(path, def, opts, add) end
  return report
end

return M
