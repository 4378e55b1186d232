-- agt.sweep — a grid of training runs: every combination of the values given to some `agt run`
-- flags, each run a child `agt run` process in its own folder, several at once, then one table.
--
--   agt sweep --out runs/s --experiment fashion-mnist --nb-workers 11 --nb-decl-byz-workers 2 \
--             --nb-real-byz-workers 2 --max-step 300 --aggregator average --aggregator krum \
--             --attack none --attack lie --attack reverse factor:100 --seed 1 --seed 2
--
--   require("agt.sweep").run{ out = "runs/s", jobs = 2,
--     flags = { experiment = "fashion-mnist", ["nb-workers"] = 11, ["max-step"] = 300 },
--     axes  = { aggregator = { "average", "krum" }, attack = { "none", "lie" }, seed = { 1, 2 } } }
--
-- A flag given more than once (or, in the table form, listed under `axes`) is an axis; the runs
-- are the cross product of the axes, the other flags passed to every run as they are. A value of
-- --experiment, --aggregator, --attack, --optimizer or --learning-rate may carry key:value words
-- after its name (`--attack reverse factor:100`): they become that run's matching --X-args, so
-- one axis can hold an attack with different arguments. `--attack none` is the attack-free cell:
-- no --attack, no --attack-args and --nb-real-byz-workers 0.
--
-- Invariants. A run's folder under `out` is named after its axis values only, so the same grid
-- finds the same folders: a folder holding a `result` file is finished and never run again (a
-- resumable sweep), any other is cleared and run from the start (a restarted `agt run` would
-- take --max-step MORE steps from its checkpoint). A run that diverges is a result; a run that
-- fails otherwise is reported and run again next time. The sweep owns each run's
-- --checkpoint-dir (the folder), and so its evaluation file and summaries.
local host = require("agt.host")
local pool = require("agt.pool")
local fs = require("agt.fs")
local FL = require("agt.cli.run.flags")
local plot = require("agt.plot")

local M = {}

-- The flags whose value may carry key:value words for a companion --X-args flag.
M.paired = { experiment = "experiment-args", aggregator = "aggregator-args", attack = "attack-args",
             optimizer = "optimizer-args", ["learning-rate"] = "learning-rate-args" }

-- Flags the sweep sets itself in every run.
M.owned = { ["checkpoint-dir"] = true, ["evaluation-file"] = true, ["summary-dir"] = true,
            ["stdout-to"] = true, ["stderr-to"] = true, quiet = true, progress = true }

local function split_words(s)
  local out = {}
  for w in tostring(s):gmatch("%S+") do out[#out + 1] = w end
  return out
end

-- A spec: { out, jobs, metric, fixed = { {flag, words} }, axes = { {flag, values = {words}} } }.
-- Parses `agt sweep` words: --out, --jobs, --metric are the sweep's, every other --flag is
-- agt run's and takes the words up to the next --flag (none for a boolean flag).
function M.parse(args)
  local spec, order, by = { fixed = {}, axes = {} }, {}, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    local name, val = a:match("^%-%-([^=]+)=(.*)$")
    if not name then name = a:match("^%-%-(.+)$") end
    if not name then
      error(string.format("unexpected argument '%s' (flags start with --; see agt sweep --help)", a), 0)
    end
    local words = {}
    if val then words[1] = val end
    i = i + 1
    while i <= #args and not args[i]:match("^%-%-") do
      words[#words + 1] = args[i]
      i = i + 1
    end
    if name == "out" or name == "jobs" or name == "metric" then
      if #words ~= 1 then error(string.format("--%s: expects one value", name), 0) end
      spec[name] = words[1]
    else
      if not by[name] then by[name] = {}; order[#order + 1] = name end
      local vs = by[name]
      vs[#vs + 1] = words
    end
  end
  for _, name in ipairs(order) do
    local vs = by[name]
    if #vs == 1 then spec.fixed[#spec.fixed + 1] = { name, vs[1] }
    else spec.axes[#spec.axes + 1] = { name, values = vs } end
  end
  return M.check(spec)
end

-- The same spec from a Lua table: { out=, jobs=, metric=, flags = {flag = value}, axes =
-- {flag = {values}} }. Keys may use '_' for '-'. A value is a string (split at spaces), a
-- number, true (a boolean flag), false (left out) or a list of words. Axes run in the order
-- aggregator, attack, then the others by name, seed last.
function M.from_table(t)
  if type(t) ~= "table" then error("agt.sweep: expects a table {out=, flags=, axes=}", 2) end
  local spec = { out = t.out, jobs = t.jobs, metric = t.metric, fixed = {}, axes = {} }
  local function words(flag, v)
    if v == true then return {} end
    if type(v) == "number" then return { tostring(v) } end
    if type(v) == "string" then return split_words(v) end
    if type(v) == "table" then
      local w = {}
      for k, x in ipairs(v) do w[k] = tostring(x) end
      return w
    end
    error(string.format("agt.sweep: --%s: expects a string, a number, true or a list of words, got %s",
      flag, type(v)), 0)
  end
  local function sorted_keys(map, rank)
    local keys = {}
    for k in pairs(map or {}) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b)
      local ra, rb = rank(a:gsub("_", "-")), rank(b:gsub("_", "-"))
      if ra ~= rb then return ra < rb end
      return a < b
    end)
    return keys
  end
  local rank = function(k)
    return k == "aggregator" and 1 or k == "attack" and 2 or k == "seed" and 4 or 3
  end
  for _, k in ipairs(sorted_keys(t.flags, rank)) do
    local v = t.flags[k]
    if v ~= false then
      local flag = k:gsub("_", "-")
      spec.fixed[#spec.fixed + 1] = { flag, words(flag, v) }
    end
  end
  for _, k in ipairs(sorted_keys(t.axes, rank)) do
    local flag = k:gsub("_", "-")
    local vs = t.axes[k]
    if type(vs) ~= "table" or #vs == 0 then
      error(string.format("agt.sweep: axes.%s: expects a non-empty list of values", k), 0)
    end
    local values = {}
    for j, v in ipairs(vs) do values[j] = words(flag, v) end
    spec.axes[#spec.axes + 1] = { flag, values = values }
  end
  return M.check(spec)
end

-- Refuses what cannot make a sweep, naming the flag.
function M.check(spec)
  if not spec.out or spec.out == "" then error("--out: the sweep's folder is required (--out DIR)", 0) end
  local jobs = spec.jobs or pool.default_threads()
  if not tonumber(jobs) or tonumber(jobs) < 1 or tonumber(jobs) % 1 ~= 0 then
    error(string.format("--jobs: expects a positive integer, got '%s'", tostring(jobs)), 0)
  end
  spec.jobs = tonumber(jobs)
  local seen = {}
  local function look(flag)
    if M.owned[flag] then
      error(string.format("--%s: set by the sweep for each run (each run writes into its folder "
        .. "under --out); leave it out", flag), 0)
    end
    if seen[flag] then error(string.format("--%s: given twice", flag), 0) end
    seen[flag] = true
  end
  for _, fx in ipairs(spec.fixed) do look(fx[1]) end
  for _, ax in ipairs(spec.axes) do
    look(ax[1])
    for _, w in ipairs(ax.values) do
      if #w == 0 then error(string.format("--%s: an axis needs a value each time it is given", ax[1]), 0) end
      if #w > 1 and not M.paired[ax[1]] then
        error(string.format("--%s: one value each time ('%s'); key:value words after a value are "
          .. "only for --%s", ax[1], table.concat(w, " "), table.concat((function()
            local k = {}
            for f in pairs(M.paired) do k[#k + 1] = f end
            table.sort(k)
            return k
          end)(), ", --")), 0)
      end
    end
  end
  return spec
end

-- The text of an axis value: its words joined by spaces.
local function label(words) return table.concat(words, " ") end

-- A folder name for a value: '/' and spaces are not kept.
local function slug(s) return (s:gsub("[/%s]+", "+"):gsub("[^%w%.,:=+%-_]", "_")) end

-- The runs of a spec: list of { values = {flag -> label} (axes only), args = agt run words,
-- name = folder name }.
function M.cells(spec)
  local cells = { {} }
  for _, ax in ipairs(spec.axes) do
    local grown = {}
    for _, c in ipairs(cells) do
      for _, w in ipairs(ax.values) do
        local nc = { unpack(c) }
        nc[#nc + 1] = { ax[1], w }
        grown[#grown + 1] = nc
      end
    end
    cells = grown
  end
  local out = {}
  for _, c in ipairs(cells) do
    local settings = {}
    for _, fx in ipairs(spec.fixed) do settings[#settings + 1] = fx end
    for _, v in ipairs(c) do settings[#settings + 1] = v end
    local attack_free = false
    for _, s in ipairs(settings) do
      if s[1] == "attack" and s[2][1] == "none" then attack_free = true end
    end
    local args, values, parts = {}, {}, {}
    for _, s in ipairs(settings) do
      local flag, w = s[1], s[2]
      local skip = attack_free and (flag == "attack" or flag == "attack-args" or flag == "nb-real-byz-workers")
      if not skip then
        args[#args + 1] = "--" .. flag
        if M.paired[flag] and #w > 1 then
          args[#args + 1] = w[1]
          args[#args + 1] = "--" .. M.paired[flag]
          for k = 2, #w do args[#args + 1] = w[k] end
        else
          for _, x in ipairs(w) do args[#args + 1] = x end
        end
      end
    end
    if attack_free then
      args[#args + 1] = "--nb-real-byz-workers"
      args[#args + 1] = "0"
    end
    for _, v in ipairs(c) do
      values[v[1]] = label(v[2])
      parts[#parts + 1] = v[1] .. "=" .. slug(label(v[2]))
    end
    out[#out + 1] = { values = values, args = args,
                      name = #parts > 0 and table.concat(parts, "_") or "run" }
  end
  return out
end

-- Quotes a word for sh.
local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function read_all(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function write_file(path, text)
  local f, err = io.open(path, "w")
  if not f then error("cannot write " .. path .. ": " .. tostring(err), 0) end
  f:write(text)
  f:close()
end

-- What a finished run left in its folder: { status = "done" | "diverged" | "failed", final,
-- best (of the metric), step, steps_per_s, message }. rc is the child's exit status.
function M.read_run(dir, rc, metric)
  local r = { status = "done" }
  local log = read_all(dir .. "/log") or ""
  r.steps_per_s = tonumber(log:match("Throughput: ([%d%.eE+%-]+) step%(s%)/s %(all steps%)"))
  local ev = plot.read_eval(dir .. "/eval")
  if ev and #ev.rows > 0 then
    local m = metric or ev.names[1]
    r.metric = m
    for _, row in ipairs(ev.rows) do
      local v = row.metrics[m]
      if v then
        r.final, r.step = v, row.step
        if v == v and (not r.best or v > r.best) then r.best = v end
      end
    end
  end
  if rc ~= 0 then
    local msg = log:match("agt run: ([^\n]*)") or log:match("agt[^\n]*: ([^\n]*)") or log:match("^([^\n]+)")
      or ("exit status " .. rc)
    r.message = msg
    if msg:find("diverged", 1, true) then r.status = "diverged"; r.final = nil
    else r.status = "failed" end
  end
  return r
end

local function result_text(r)
  local o = {}
  for _, k in ipairs({ "status", "metric", "final", "best", "step", "steps_per_s", "message" }) do
    if r[k] ~= nil then
      local v = r[k]
      if type(v) == "number" then v = string.format("%.9g", v) end
      o[#o + 1] = k .. "=" .. tostring(v):gsub("\n", " ")
    end
  end
  return table.concat(o, "\n") .. "\n"
end

local function parse_result(text)
  local r = {}
  for line in text:gmatch("[^\n]+") do
    local k, v = line:match("^([%w_]+)=(.*)$")
    if k then r[k] = tonumber(v) or v end
  end
  if r.status == "diverged" then r.final = nil end
  return r
end

local function say(spec, line)
  if not spec.quiet then io.stdout:write(line, "\n"); io.stdout:flush() end
end

-- Runs the cells not finished yet, `jobs` at a time, each a child `agt run` with
-- max(1, cores / jobs) threads. Returns the list of cells, each with its result.
function M.execute(spec)
  local cells = M.cells(spec)
  -- every run's flags are checked as agt run checks them before any run starts
  for _, c in ipairs(cells) do
    local ok, err = pcall(function()
      local words = { unpack(c.args) }
      for _, w in ipairs({ "--checkpoint-dir", spec.out .. "/" .. c.name }) do words[#words + 1] = w end
      FL.check(FL.parse_args(words))
    end)
    if not ok then error(string.format("run %s: %s", c.name, tostring(err)), 0) end
  end
  assert(fs.mkdir_p(spec.out))
  local exe = host.root .. "/agt"
  local f = io.open(exe, "r")
  if f then f:close() else exe = host.exe end
  local threads = math.max(1, math.floor(pool.default_threads() / spec.jobs))
  local todo = {}
  for i, c in ipairs(cells) do
    c.dir = spec.out .. "/" .. c.name
    local done = read_all(c.dir .. "/result")
    if done then
      c.result = parse_result(done)
    else
      todo[#todo + 1] = i
    end
  end
  say(spec, string.format("agt sweep: %d run(s) in %s, %d finished before, %d to run, %d at a time",
    #cells, spec.out, #cells - #todo, #todo, spec.jobs))
  if #todo == 0 then return cells end
  local lines = {}
  for _, i in ipairs(todo) do
    local c = cells[i]
    local argv = { q(exe), "run" }
    for _, a in ipairs(c.args) do argv[#argv + 1] = q(a) end
    for _, a in ipairs({ "--checkpoint-dir", c.dir, "--progress", "plain" }) do argv[#argv + 1] = q(a) end
    local cmd = table.concat(argv, " ")
    -- the folder starts empty; `command` in it re-runs the run by hand
    lines[#lines + 1] = string.format(
      "rm -rf %s && mkdir -p %s && printf '%%s\\n' %s > %s/command && AGT_NUM_THREADS=%d "
        .. "OPENBLAS_NUM_THREADS=%d %s > %s/log 2>&1; echo \"agt-sweep %d $?\"",
      q(c.dir), q(c.dir), q(cmd), q(c.dir), threads, threads, cmd, q(c.dir), i)
  end
  local jobfile = spec.out .. "/.jobs"
  write_file(jobfile, table.concat(lines, "\0") .. "\0")
  local p = io.popen(string.format("xargs -0 -n 1 -P %d sh -c < %s", spec.jobs, q(jobfile)), "r")
  local finished = 0
  for line in p:lines() do
    local i, rc = line:match("^agt%-sweep (%d+) (%d+)$")
    if i then
      local c = cells[tonumber(i)]
      local r = M.read_run(c.dir, tonumber(rc), spec.metric)
      c.result = r
      if r.status ~= "failed" then write_file(c.dir .. "/result", result_text(r)) end
      finished = finished + 1
      local what = r.status == "done" and string.format("%s %.4f", r.metric or "?", r.final or 0/0)
        or r.status == "diverged" and "diverged" or ("failed: " .. tostring(r.message))
      say(spec, string.format("[%d/%d] %s: %s%s", finished, #todo, c.name, what,
        r.steps_per_s and string.format(" (%.1f steps/s)", r.steps_per_s) or ""))
    end
  end
  p:close()
  os.remove(jobfile)
  return cells
end

-- Mean and sample standard deviation of a list (std 0 for one value).
function M.mean_std(xs)
  local n = #xs
  if n == 0 then return nil end
  local s = 0
  for _, x in ipairs(xs) do s = s + x end
  local m = s / n
  if n == 1 then return m, 0 end
  local v = 0
  for _, x in ipairs(xs) do v = v + (x - m) ^ 2 end
  return m, math.sqrt(v / (n - 1))
end

local function csv(v)
  v = v == nil and "" or type(v) == "number" and string.format("%.6g", v) or tostring(v)
  if v:find('[,"\n]') then v = '"' .. v:gsub('"', '""') .. '"' end
  return v
end

-- Writes DIR/results.csv (one row per run) and DIR/summary.csv (one row per setting of the
-- axes other than --seed: mean and std of the final and best metric over the seeds), and
-- returns the groups { key, values, finals = {}, bests = {}, diverged, failed }.
function M.tabulate(spec, cells)
  local axes = {}
  for _, ax in ipairs(spec.axes) do axes[#axes + 1] = ax[1] end
  local o = { table.concat(axes, ",") .. (#axes > 0 and "," or "")
              .. "status,metric,final,best,step,steps_per_s,dir" }
  for _, c in ipairs(cells) do
    local r, row = c.result or { status = "not run" }, {}
    for _, a in ipairs(axes) do row[#row + 1] = csv(c.values[a]) end
    for _, k in ipairs({ "status", "metric", "final", "best", "step", "steps_per_s" }) do
      row[#row + 1] = csv(r[k])
    end
    row[#row + 1] = csv(c.name)
    o[#o + 1] = table.concat(row, ",")
  end
  write_file(spec.out .. "/results.csv", table.concat(o, "\n") .. "\n")
  local groups, by = {}, {}
  local keep = {}
  for _, a in ipairs(axes) do if a ~= "seed" then keep[#keep + 1] = a end end
  for _, c in ipairs(cells) do
    local kv = {}
    for _, a in ipairs(keep) do kv[#kv + 1] = a .. "=" .. c.values[a] end
    local key = table.concat(kv, " ")
    local g = by[key]
    if not g then
      g = { key = key, values = c.values, finals = {}, bests = {}, diverged = 0, failed = 0 }
      by[key] = g
      groups[#groups + 1] = g
    end
    local r = c.result or {}
    if r.status == "done" and r.final then
      g.finals[#g.finals + 1] = r.final
      g.bests[#g.bests + 1] = r.best
    elseif r.status == "diverged" then g.diverged = g.diverged + 1
    else g.failed = g.failed + 1 end
  end
  o = { table.concat(keep, ",") .. (#keep > 0 and "," or "")
        .. "runs,final_mean,final_std,best_mean,best_std,diverged,failed" }
  for _, g in ipairs(groups) do
    g.mean, g.std = M.mean_std(g.finals)
    g.best_mean, g.best_std = M.mean_std(g.bests)
    local row = {}
    for _, a in ipairs(keep) do row[#row + 1] = csv(g.values[a]) end
    for _, v in ipairs({ #g.finals + g.diverged + g.failed, g.mean, g.std, g.best_mean, g.best_std,
                         g.diverged, g.failed }) do
      row[#row + 1] = csv(v)
    end
    o[#o + 1] = table.concat(row, ",")
  end
  write_file(spec.out .. "/summary.csv", table.concat(o, "\n") .. "\n")
  return groups
end

-- A group's cell text: "0.797", "0.797 ± 0.004" over several seeds, "diverged", "failed".
function M.cell_text(g)
  if g.mean then
    local t = string.format("%.3f", g.mean)
    if #g.finals > 1 then t = t .. string.format(" ± %.3f", g.std) end
    if g.diverged > 0 then t = t .. string.format(" (%d div.)", g.diverged) end
    return t
  end
  if g.diverged > 0 then return "diverged" end
  return "failed"
end

-- The table of groups: rows the --attack values, columns the --aggregator values (each with
-- the other axes but --seed). Returns { rows = {labels}, cols = {labels}, cell = {[r][c] = g} }.
function M.grid(spec, groups)
  local row_axis, col_axes = nil, {}
  for _, ax in ipairs(spec.axes) do
    if ax[1] == "attack" then row_axis = "attack"
    elseif ax[1] ~= "seed" then col_axes[#col_axes + 1] = ax[1] end
  end
  local fixed = {}
  for _, fx in ipairs(spec.fixed) do fixed[fx[1]] = label(fx[2]) end
  local rows, cols, ri, ci, cell = {}, {}, {}, {}, {}
  for _, g in ipairs(groups) do
    local r = row_axis and g.values[row_axis] or fixed.attack or "none"
    local parts = {}
    for _, a in ipairs(col_axes) do
      parts[#parts + 1] = a == "aggregator" and g.values[a] or (a .. "=" .. g.values[a])
    end
    local c = #parts > 0 and table.concat(parts, " ") or (fixed.aggregator or "run")
    if not ri[r] then ri[r] = #rows + 1; rows[#rows + 1] = r; cell[ri[r]] = {} end
    if not ci[c] then ci[c] = #cols + 1; cols[#cols + 1] = c end
    cell[ri[r]][ci[c]] = g
  end
  return { rows = rows, cols = cols, cell = cell }
end

-- The grid as fixed-width text, the README's table layout.
function M.text(grid)
  local first = #"attack \\ rule" + 2
  for _, r in ipairs(grid.rows) do first = math.max(first, #r + 2) end
  local width = {}
  for j, c in ipairs(grid.cols) do
    local w = #c + 2
    for i = 1, #grid.rows do
      local g = grid.cell[i][j]
      if g then w = math.max(w, #M.cell_text(g):gsub("±", "+") + 2) end
    end
    width[j] = w
  end
  local o = { string.format("%-" .. first .. "s", "attack \\ rule") }
  for j, c in ipairs(grid.cols) do o[1] = o[1] .. string.format("%" .. width[j] .. "s", c) end
  o[2] = string.rep("-", #o[1])
  for i, r in ipairs(grid.rows) do
    local line = string.format("%-" .. first .. "s", r)
    for j = 1, #grid.cols do
      local g = grid.cell[i][j]
      local t = g and M.cell_text(g) or ""
      -- '±' is two bytes: pad by its displayed width
      local pad = width[j] - #t + (t:find("±", 1, true) and 1 or 0)
      line = line .. string.rep(" ", math.max(1, pad)) .. t
    end
    o[#o + 1] = line
  end
  return table.concat(o, "\n") .. "\n"
end

-- Runs a sweep (a spec from M.parse or a table for M.from_table) and writes results.csv,
-- summary.csv, table.txt and the heat map heatmap.svg / heatmap.png into spec.out. Returns
-- { cells, groups, grid, text }.
function M.run(t)
  local spec = t.fixed and t or M.from_table(t)
  local cells = M.execute(spec)
  local groups = M.tabulate(spec, cells)
  local grid = M.grid(spec, groups)
  local text = M.text(grid)
  write_file(spec.out .. "/table.txt", text)
  local metric
  for _, c in ipairs(cells) do
    if c.result and c.result.metric then metric = c.result.metric; break end
  end
  local svg, png = plot.heatmap(grid, { output = spec.out .. "/heatmap",
    title = string.format("final %s (mean over seeds)", metric or spec.metric or "metric") },
    M.cell_text)
  say(spec, "\n" .. text)
  say(spec, "Results: " .. spec.out .. "/results.csv, " .. spec.out .. "/summary.csv")
  say(spec, "Heat map: " .. svg .. ", " .. png)
  return { cells = cells, groups = groups, grid = grid, text = text }
end

return M
