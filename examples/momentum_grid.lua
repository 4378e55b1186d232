-- momentum_grid.lua — the grid of docs/momentum.md: attacks × rules, with and without worker
-- momentum, IID and non-IID shards, each cell one child `agt run` process; several run at
-- once. Every finished cell is a line of <dir>/grid.csv, so a stopped grid resumes where it
-- was (finished cells are skipped); the markdown tables and the SVG heat maps are made from
-- the CSV alone.
--
--   ./agt examples/momentum_grid.lua --jobs 16 --steps 1500 --dir runs/momentum-grid
--   ./agt examples/momentum_grid.lua --report --dir runs/momentum-grid --svg docs
--
-- Flags: --jobs N (parallel runs, default 2), --steps K (default 1500), --dir DIR (cells,
-- logs and grid.csv; default runs/momentum-grid), --beta B (worker momentum, default 0.9),
-- --lr R (SGD rate, default 0.05), --attacks a,b,... --rules r,s,... --data iid,dirichlet
-- --momenta none,worker (subsets of the grid), --threads T (engine and BLAS threads of each
-- run, default 1: N jobs use N·T cores), --decl-byz F (the f the rules are told, default 2:
-- the real attackers stay 2; F > 2 makes the rules trim or discard more), --seed S (every
-- run's seed, default 1; neither the seed nor F is in the CSV, so a grid per seed or per F
-- goes in its own --dir), --eval-last N and --eval-delta D (a cell's accuracy is the mean
-- of its last N evaluations, taken every D steps and at the end: steps T, T−D, …, T−(N−1)·D
-- when D divides T; default N = 1, the final evaluation alone, D = 50), --report (no runs:
-- print the tables, and with --svg DIR write DIR/momentum-<data>.svg heat maps; with
-- --dir a,b,... the tables give each cell's mean ± standard deviation over those grids, one
-- per seed). A cell of the CSV is
--   data,momentum,rule,attack,steps,status,accuracy,seconds,final,evals
-- status: ok | diverged | failed (then the log in <dir>/cells/ says why); accuracy: the mean
-- of the last `evals` evaluations; final: the last one alone (CSVs written before these two
-- columns existed have 8 columns: accuracy is the final evaluation).
local fs = require("agt.fs")
local host = require("agt.host")
local clock = require("agt.clock")

-- The grid of issue 17: fashion-mnist, n = 11, f = r = 2.
local ATTACKS = {
  { "none" }, { "nan" }, { "reverse", "factor:100" }, { "gaussian" }, { "lie" }, { "empire" },
  { "optimal-lie" }, { "minmax" }, { "fang" }, { "mimic" },
}
local RULES = { "median", "trimmed-mean", "krum", "bulyan", "nnm,krum", "centered-clipping" }
local DATA = {
  iid = {},
  dirichlet = { "shard:dirichlet", "noniid-alpha:1" },
}

local function split(s)
  local out = {}
  for w in s:gmatch("[^,]+") do out[#out + 1] = w end
  return out
end

local o = { jobs = 2, steps = 1500, threads = 1, dir = "runs/momentum-grid", beta = 0.9, lr = 0.05, seed = 1,
            data = "iid,dirichlet", momenta = "none,worker", ["eval-last"] = 1, ["eval-delta"] = 50,
            ["decl-byz"] = 2 }
do
  local a, i = arg or {}, 1
  while i <= #a do
    local k = a[i]:match("^%-%-(.+)$")
    if not k then error("momentum_grid: unexpected argument '" .. a[i] .. "' (flags start with --)", 0) end
    if k == "report" then o.report = true; i = i + 1
    elseif k == "help" then
      for line in io.lines(debug.getinfo(1, "S").source:sub(2)) do
        if not line:match("^%-%-") then break end
        print((line:gsub("^%-%- ?", "")))
      end
      return
    else
      if a[i + 1] == nil then error("momentum_grid: --" .. k .. " expects a value", 0) end
      o[k] = a[i + 1]
      i = i + 2
    end
  end
  for _, k in ipairs({ "jobs", "steps", "beta", "lr", "threads", "seed", "eval-last", "eval-delta", "decl-byz" }) do
    o[k] = tonumber(o[k]) or error("momentum_grid: --" .. k .. " expects a number, got " .. tostring(o[k]), 0)
  end
  for _, k in ipairs({ "eval-last", "eval-delta" }) do
    if o[k] < 1 or o[k] % 1 ~= 0 then
      error("momentum_grid: --" .. k .. " expects a whole number >= 1, got " .. o[k], 0)
    end
  end
  if o["decl-byz"] < 0 or o["decl-byz"] % 1 ~= 0 then
    error("momentum_grid: --decl-byz expects a whole number >= 0, got " .. o["decl-byz"], 0)
  end
end
local attacks, rules = ATTACKS, RULES
if o.attacks then
  attacks = {}
  for _, w in ipairs(split(o.attacks)) do
    local parts = {}
    for p in w:gmatch("[^/]+") do parts[#parts + 1] = p end
    attacks[#attacks + 1] = parts
  end
end
if o.rules then rules = {} for _, r in ipairs(split(o.rules)) do rules[#rules + 1] = (r:gsub("%+", ",")) end end

local function attack_label(a) return table.concat(a, "/") end

-- The cells: every rule × attack, and the plain average without attack (the common reference).
local cells = {}
local function cell(data, mom, rule, a)
  local key = table.concat({ data, mom, rule, attack_label(a) }, "|")
  cells[#cells + 1] = { data = data, mom = mom, rule = rule, attack = a, key = key,
                        id = (key:gsub("[^%w%-]", "_")) }
end
for _, data in ipairs(split(o.data)) do
  if not DATA[data] then error("momentum_grid: --data: unknown '" .. data .. "' (iid, dirichlet)", 0) end
  for _, mom in ipairs(split(o.momenta)) do
    cell(data, mom, "average", { "none" })
    for _, a in ipairs(attacks) do
      for _, rule in ipairs(rules) do cell(data, mom, rule, a) end
    end
  end
end

local dirs = split(o.dir)
if #dirs > 1 and not o.report then
  error("momentum_grid: several --dir (" .. o.dir .. ") only go with --report; a grid runs into one", 0)
end
local csv = o.dir .. "/grid.csv"
local HEADER = "data,momentum,rule,attack,steps,status,accuracy,seconds,final,evals"

local function read_csv(path)
  local rows = {}
  local fh = io.open(path or csv, "r")
  if not fh then return rows end
  for line in fh:lines() do
    if not line:match("^data,") and line ~= "" then   -- a header, this one or the 8-column one
      local f, pos, nxt = {}, 1, nil
      repeat   -- fields split at commas; a quoted field ("nnm,krum") keeps its commas
        local field
        if line:sub(pos, pos) == '"' then field, nxt = line:match('^"([^"]*)"()', pos)
        else field, nxt = line:match("^([^,]*)()", pos) end
        f[#f + 1] = field
        pos = nxt + 1
      until nxt > #line
      local r = { data = f[1], mom = f[2], rule = f[3], attack = f[4], steps = tonumber(f[5]),
                  status = f[6], acc = tonumber(f[7]), seconds = tonumber(f[8]),
                  final = tonumber(f[9]), evals = tonumber(f[10]) or 1 }
      rows[table.concat({ r.data, r.mom, r.rule, r.attack }, "|")] = r
    end
  end
  fh:close()
  return rows
end

---------------------------------------------------------------------------------------------------
-- Running the cells

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function command(c)
  local base = o.dir .. "/cells/" .. c.id
  local w = { "AGT_NUM_THREADS=" .. o.threads, "OPENBLAS_NUM_THREADS=" .. o.threads,
    q(host.root .. "/" .. host.exe), "run", "--experiment", "fashion-mnist",
    "--aggregator", q(c.rule), "--nb-workers", "11", "--nb-decl-byz-workers", o["decl-byz"],
    "--max-step", o.steps, "--learning-rate-args", "initial-rate:" .. o.lr,
    "--evaluation-file", q(base .. ".eval"),
    "--evaluation-delta", o["eval-last"] > 1 and o["eval-delta"] or -1, "--evaluation-period", "-1",
    "--checkpoint-dir", "-", "--summary-dir", "-", "--quiet", "--progress", "none", "--seed", o.seed }
  local exp_args = DATA[c.data]
  if #exp_args > 0 then
    w[#w + 1] = "--experiment-args"
    for _, x in ipairs(exp_args) do w[#w + 1] = x end
  end
  if c.attack[1] ~= "none" then
    w[#w + 1] = "--nb-real-byz-workers 2 --attack " .. q(c.attack[1])
    if #c.attack > 1 then
      w[#w + 1] = "--attack-args"
      for k = 2, #c.attack do w[#w + 1] = q(c.attack[k]) end
    end
  end
  if c.mom ~= "none" then w[#w + 1] = "--momentum-at " .. c.mom .. " --momentum " .. o.beta end
  return string.format("(rm -f %s.eval; %s > %s.log 2>&1; echo $? > %s.rc.tmp; mv %s.rc.tmp %s.rc) &",
    q(base), table.concat(w, " "), q(base), q(base), q(base), q(base))
end

local function finished(c)
  local base = o.dir .. "/cells/" .. c.id
  local fh = io.open(base .. ".rc", "r")
  if not fh then return nil end
  local rc = tonumber(fh:read("*l"))
  fh:close()
  local accs = {}   -- the evaluations in order (at start, every --eval-delta steps, at the end)
  local ev = io.open(base .. ".eval", "r")
  if ev then
    for line in ev:lines() do accs[#accs + 1] = tonumber(line:match("top1[^:]*:([-%d.e]+)")) end
    ev:close()
  end
  local acc, final, n = nil, accs[#accs], math.min(o["eval-last"], #accs)
  if n > 0 then
    acc = 0
    for k = #accs - n + 1, #accs do acc = acc + accs[k] end
    acc = acc / n
  end
  local status = "ok"
  if rc ~= 0 then
    local lg = io.open(base .. ".log", "r")
    local text = lg and lg:read("*a") or ""
    if lg then lg:close() end
    status = text:find("diverged", 1, true) and "diverged" or "failed"
    acc, final = nil, nil
  end
  os.remove(base .. ".rc")
  return status, acc, final
end

local function run_grid()
  fs.mkdir_p(o.dir .. "/cells")
  local done = read_csv()
  local todo = {}
  for _, c in ipairs(cells) do
    local r = done[c.key]
    if not (r and r.steps == o.steps and r.evals == o["eval-last"]) then todo[#todo + 1] = c end
  end
  local exists = io.open(csv, "r")
  local out = io.open(csv, "a")
  if not exists then out:write(HEADER, "\n") else exists:close() end
  io.write(string.format("momentum grid: %d cells, %d done, %d to run, %d at a time, %d steps\n",
    #cells, #cells - #todo, #todo, o.jobs, o.steps))
  local running, next_i, ndone, t_start = {}, 1, 0, clock.mono()
  while next_i <= #todo or next(running) do
    while next_i <= #todo and #running < o.jobs do
      local c = todo[next_i]
      next_i = next_i + 1
      os.remove(o.dir .. "/cells/" .. c.id .. ".rc")
      os.execute(command(c))
      c.t0 = clock.mono()
      running[#running + 1] = c
    end
    os.execute("sleep 0.2")
    for k = #running, 1, -1 do
      local c = running[k]
      local status, acc, final = finished(c)
      if status then
        table.remove(running, k)
        ndone = ndone + 1
        local secs = clock.mono() - c.t0
        out:write(string.format('%s,%s,"%s",%s,%d,%s,%s,%.1f,%s,%d\n', c.data, c.mom, c.rule,
          attack_label(c.attack), o.steps, status, acc and string.format("%.4f", acc) or "", secs,
          final and string.format("%.4f", final) or "", o["eval-last"]))
        out:flush()
        local el = clock.mono() - t_start
        io.write(string.format("[%d/%d] %-9s %-6s %-17s %-18s %s (%.0f s; eta %.0f s)\n", ndone,
          #todo, c.data, c.mom, c.rule, attack_label(c.attack),
          acc and string.format("%.4f", acc) or status, secs, el / ndone * (#todo - ndone)))
        io.flush()
      end
    end
  end
  out:close()
end

---------------------------------------------------------------------------------------------------
-- The report: markdown tables (accuracy, and the drop from the attack-free run) and heat maps

local function cell_text(r)
  if not r then return "–" end
  if r.status ~= "ok" or not r.acc then return r.status == "diverged" and "div." or "fail" end
  if r.sd then return string.format("%.1f ± %.1f", 100 * r.acc, 100 * r.sd) end
  return string.format("%.1f", 100 * r.acc)
end

-- Several grids (--report --dir a,b,...: one per seed): each cell's mean and sample standard
-- deviation over the grids. A cell missing from one grid is missing; one that diverged or
-- failed in any grid counts as diverged or failed.
local function merge(grids)
  local rows = {}
  for key, r0 in pairs(grids[1]) do
    local accs, status = {}, "ok"
    for _, g in ipairs(grids) do
      local r = g[key]
      if not r then status = nil; break end
      if r.status ~= "ok" or not r.acc then
        if status == "ok" or r.status == "diverged" then status = r.status == "diverged" and "diverged" or "failed" end
      else accs[#accs + 1] = r.acc end
    end
    if status then
      local m = { data = r0.data, mom = r0.mom, rule = r0.rule, attack = r0.attack, steps = r0.steps,
                  status = status }
      if status == "ok" then
        local sum, ss = 0, 0
        for _, a in ipairs(accs) do sum = sum + a end
        m.acc = sum / #accs
        for _, a in ipairs(accs) do ss = ss + (a - m.acc) ^ 2 end
        m.sd = #accs > 1 and math.sqrt(ss / (#accs - 1)) or 0
      end
      rows[key] = m
    end
  end
  return rows
end

-- Accuracy points lost to the attack against the attack-free run of the same rule (ref nil)
-- or of the rule ref (nil: unknown; a diverged or failed run has lost everything).
local function drop(rows, data, mom, rule, atk, ref)
  local base = rows[table.concat({ data, mom, ref or rule, "none" }, "|")]
  local r = rows[table.concat({ data, mom, rule, atk }, "|")]
  if not (base and base.acc and r) then return nil end
  if not r.acc then return math.huge end
  return 100 * (base.acc - r.acc)
end

local function report(rows, per_grid)
  local lines = {}
  local function w(s) lines[#lines + 1] = s end
  local names = { iid = "IID shards", dirichlet = "Dirichlet α = 1 shards" }
  local verdicts = {}
  for _, data in ipairs(split(o.data)) do
    for _, mom in ipairs(split(o.momenta)) do
      local steps
      for _, r in pairs(rows) do if r.data == data and r.mom == mom then steps = r.steps end end
      w(string.format("#### %s, %s (top-1 test accuracy %%, %s steps)", names[data],
        mom == "none" and "no momentum" or ("momentum at the " .. mom .. ", β = " .. o.beta),
        tostring(steps or "?")))
      w("")
      local h = "| attack |"
      local sep = "|---|"
      for _, rule in ipairs(rules) do h = h .. " " .. rule .. " |"; sep = sep .. "---:|" end
      w(h .. " best rule within 3 |")
      w(sep .. "---|")
      for _, a in ipairs(attacks) do
        local al = attack_label(a)
        local line = "| " .. al .. " |"
        local ok = {}
        for _, rule in ipairs(rules) do
          local r = rows[table.concat({ data, mom, rule, al }, "|")]
          local t = cell_text(r)
          local dr = drop(rows, data, mom, rule, al)
          if al ~= "none" and dr and dr <= 3 then ok[#ok + 1] = rule; t = "**" .. t .. "**" end
          line = line .. " " .. t .. " |"
        end
        line = line .. " " .. (al == "none" and "(reference)" or (#ok > 0 and table.concat(ok, ", ") or "none")) .. " |"
        w(line)
      end
      w("")
      -- The target: one rule within 3 points on every attack, against its own attack-free run
      -- and against the attack-free plain average.
      local avg = rows[table.concat({ data, mom, "average", "none" }, "|")]
      w(string.format("Attack-free plain average: %s.", cell_text(avg)))
      w("")
      local v = { data = data, mom = mom }
      local function worst_of(rs, rule, ref)   -- nil: a result is missing
        local worst = -math.huge
        for _, a in ipairs(attacks) do
          local al = attack_label(a)
          if al ~= "none" and worst then
            local dr = drop(rs, data, mom, rule, al, ref or nil)
            worst = dr and math.max(worst, dr)
          end
        end
        return worst
      end
      local function fmt(x) return not x and "?" or x == math.huge and "div./fail" or string.format("%.1f", x) end
      for _, ref in ipairs({ false, "average" }) do
        local all = {}
        for _, rule in ipairs(rules) do all[#all + 1] = { rule = rule, worst = worst_of(rows, rule, ref) } end
        table.sort(all, function(x, y) return (x.worst or math.huge) < (y.worst or math.huge) end)
        local met, txt = {}, {}
        for _, x in ipairs(all) do
          if x.worst and x.worst <= 3 then met[#met + 1] = x.rule end
          txt[#txt + 1] = string.format("%s %s", x.rule, fmt(x.worst))
        end
        w(string.format("Largest loss to an attack, per rule, in points below %s: %s.",
          ref and "the attack-free plain average" or "the same rule without attack", table.concat(txt, ", ")))
        w("")
        if per_grid then   -- the same, in each grid (seed) alone
          local t = {}
          for _, rule in ipairs(rules) do
            local g = {}
            for _, rs in ipairs(per_grid) do g[#g + 1] = fmt(worst_of(rs, rule, ref)) end
            t[#t + 1] = rule .. " " .. table.concat(g, " / ")
          end
          w(string.format("In each grid alone (%s): %s.", table.concat(dirs, ", "), table.concat(t, "; ")))
          w("")
        end
        v[ref and "avg" or "own"] = met
      end
      verdicts[#verdicts + 1] = v
    end
  end
  local function list(m) return #m > 0 and table.concat(m, ", ") or "no rule" end
  for _, v in ipairs(verdicts) do
    w(string.format("- %s, %s: within 3 points on every attack of its own attack-free run: %s; "
      .. "of the attack-free average: %s", names[v.data],
      v.mom == "none" and "no momentum" or "worker momentum", list(v.own), list(v.avg)))
  end
  return table.concat(lines, "\n")
end

-- A heat map per data distribution: one panel per momentum setting, attacks × rules, each cell
-- coloured by the points it is below the attack-free plain average of its panel (white 0 or
-- above it, red 30 or more; grey: no result).
local function svg(rows, data, path)
  local cw, ch, left, top, gap = 100, 24, 120, 70, 40
  local moms = split(o.momenta)
  local pw = cw * #rules
  local W = left + #moms * pw + (#moms - 1) * gap + 20
  local H = top + ch * (#attacks - 1) + 40
  local s = {}
  local function add(x) s[#s + 1] = x end
  add(string.format('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">', W, H))
  add(string.format('<rect width="%d" height="%d" fill="white"/>', W, H))
  add(string.format('<text x="10" y="18" font-size="14">fashion-mnist, n=11 f=r=2, %s: points of top-1 accuracy below the attack-free average</text>',
    data == "iid" and "IID" or "Dirichlet α=1"))
  for p, mom in ipairs(moms) do
    local x0 = left + (p - 1) * (pw + gap)
    add(string.format('<text x="%d" y="38" font-size="12">%s</text>', x0,
      mom == "none" and "no momentum" or ("worker momentum β=" .. o.beta)))
    for j, rule in ipairs(rules) do
      add(string.format('<text x="%d" y="%d" text-anchor="middle">%s</text>', x0 + (j - 0.5) * cw, top - 8, rule))
    end
    local row = 0
    for _, a in ipairs(attacks) do
      local al = attack_label(a)
      if al ~= "none" then
        local y = top + row * ch
        if p == 1 then add(string.format('<text x="%d" y="%d" text-anchor="end">%s</text>', left - 6, y + 16, al)) end
        for j, rule in ipairs(rules) do
          local dr = drop(rows, data, mom, rule, al, "average")
          local fill, label = "#cccccc", "–"
          if dr then
            local t = math.max(0, math.min(1, dr / 30))
            local g = math.floor(255 * (1 - t) + 0.5)
            fill = string.format("#ff%02x%02x", g, g)
            label = dr == math.huge and "div." or string.format("%.1f", dr)
          end
          add(string.format('<rect x="%d" y="%d" width="%d" height="%d" fill="%s" stroke="white"/>', x0 + (j - 1) * cw, y, cw, ch, fill))
          add(string.format('<text x="%d" y="%d" text-anchor="middle">%s</text>', x0 + (j - 0.5) * cw, y + 16, label))
        end
        row = row + 1
      end
    end
  end
  add("</svg>")
  local fh = assert(io.open(path, "w"))
  fh:write(table.concat(s, "\n"), "\n")
  fh:close()
end

if not o.report then run_grid() end
local rows, per_grid = read_csv(), nil
if #dirs > 1 then
  per_grid = {}
  for _, d in ipairs(dirs) do per_grid[#per_grid + 1] = read_csv(d .. "/grid.csv") end
  rows = merge(per_grid)
end
print(report(rows, per_grid))
if o.svg then
  fs.mkdir_p(o.svg)
  for _, data in ipairs(split(o.data)) do
    local path = o.svg .. "/momentum-" .. data .. ".svg"
    svg(rows, data, path)
    print("wrote " .. path)
  end
end
