-- agt.plot — evaluation files drawn as curves, to PNG, SVG and PDF.
--
-- An evaluation file holds AggregaThor lines `<wall s>\t<step>\t<name>:<value>...`. A plot has
-- two panels, a metric against the step and against the wall time since the run's first
-- evaluation (time spent stopped between a checkpoint and its resume is left out), with one
-- curve per file, overlaid and labelled. A run's label comes from the `<file>.info` that
-- agt.session writes beside its evaluation file (rule, attack, n, f, r), unless given. One
-- drawing (agt.draw, over cairo) is written in each format asked for: SVG and PNG by default.
local draw = require("agt.draw")
local fs = require("agt.fs")
local summary = require("agt.summary")

local M = {}

M.palette = {
  { 31, 119, 180 }, { 214, 39, 40 }, { 44, 160, 44 }, { 255, 127, 14 }, { 148, 103, 189 },
  { 140, 86, 75 }, { 227, 119, 194 }, { 23, 190, 207 }, { 127, 127, 127 }, { 188, 189, 34 },
}

-- Reads an evaluation file: { rows = { {wall, step, metrics = {name -> value}} }, names = {...},
-- skipped = {name -> {count, step (the first)}} } (values that are not finite, left out).
-- Malformed lines are refused with their line number.
function M.read_eval(path)
  local f, err = io.open(path, "r")
  if not f then return nil, err end
  local rows, names, seen, ln, skipped = {}, {}, {}, 0, {}
  for line in f:lines() do
    ln = ln + 1
    if line ~= "" then
      local fields = {}
      for x in line:gmatch("[^\t]+") do fields[#fields + 1] = x end
      local wall, step = tonumber(fields[1]), tonumber(fields[2])
      if not wall or not step then
        f:close()
        return nil, string.format("%s:%d: expected '<wall s>\\t<step>\\t<name>:<value>...'", path, ln)
      end
      local m = {}
      for i = 3, #fields do
        local k, v = fields[i]:match("^(.-):([^:]*)$")
        local x = k and tonumber(v)
        if x then
          if not seen[k] then seen[k] = true; names[#names + 1] = k end
          -- a diverged run's NaN or ±inf cannot be drawn: left out, and counted for a warning
          if x == x and x ~= math.huge and x ~= -math.huge then
            m[k] = x
          else
            skipped[k] = skipped[k] or { count = 0, step = step }
            skipped[k].count = skipped[k].count + 1
          end
        end
      end
      rows[#rows + 1] = { wall = wall, step = step, metrics = m }
    end
  end
  f:close()
  return { rows = rows, names = names, path = path, skipped = skipped }
end

-- The label of a run: from `<path>.info` (key=value lines) when present, else the path.
function M.label(path)
  local f = io.open(path .. ".info", "r")
  if not f then return path end
  local info = {}
  for line in f:lines() do
    local k, v = line:match("^([^=]+)=(.*)$")
    if k then info[k] = v end
  end
  f:close()
  if not info.aggregator then return path end
  -- names, not paths: a rule or attack given as a file shows its name (or the file's name)
  local function name(v) return (v:match("([^/]+)%.lua$") or v) end
  local rule = info.rule_name or name(info.aggregator)
  local attack = (info.attack and info.attack ~= "" and tonumber(info.r or 0) > 0)
                 and (info.attack_name or name(info.attack)) or "no attack"
  return string.format("%s%s / %s (n=%s f=%s r=%s)", info.experiment and (name(info.experiment) .. ": ") or "",
                       rule, attack, info.n or "?", info.f or "?", info.r or "?")
end

-- Curve points of one evaluation file for a metric: list of {step, seconds, value}. The time
-- axis is the sum of the gaps between successive evaluations, a gap that goes back in steps or
-- spans a restart (a step that repeats) counting as zero.
function M.series(ev, metric)
  local pts, t, prev = {}, 0, nil
  for _, r in ipairs(ev.rows) do
    local v = r.metrics[metric]
    if prev then
      local dt = r.wall - prev.wall
      if r.step > prev.step and dt > 0 then t = t + dt end
    end
    if v then pts[#pts + 1] = { r.step, t, v } end
    prev = r
  end
  return pts
end

-- About `count` round tick values covering [lo, hi].
function M.ticks(lo, hi, count)
  count = count or 5
  if hi <= lo then hi = lo + 1 end
  local raw = (hi - lo) / count
  local mag = 10 ^ math.floor(math.log10(raw))
  local step = mag
  for _, m in ipairs({ 1, 2, 2.5, 5, 10 }) do
    if m * mag >= raw then step = m * mag; break end
  end
  local out = {}
  local k0 = math.ceil(lo / step - 1e-9)
  for k = k0, math.floor(hi / step + 1e-9) do
    -- k / (1 / step) rounds like the decimal tick (0.6, not 0.6000000000000001)
    local v = step < 1 and k / math.floor(1 / step + 0.5) or k * step
    out[#out + 1] = v == 0 and 0 or v
  end
  return out, step
end

local function fmt_tick(v, step)
  if step >= 1 and step % 1 == 0 and math.abs(v) < 1e15 then
    if math.abs(v) >= 10000 and v % 1000 == 0 then return string.format("%dk", v / 1000) end
    return string.format("%d", v)
  end
  -- as many decimals as the step has (0.25: two)
  local dec = 0
  while dec < 12 and math.abs(step * 10 ^ dec - math.floor(step * 10 ^ dec + 0.5)) > 1e-6 * step * 10 ^ dec do
    dec = dec + 1
  end
  return string.format("%." .. dec .. "f", v)
end

-- The labels of M.ticks(lo, hi, count), as the axes show them.
function M.tick_labels(lo, hi, count)
  local t, step = M.ticks(lo, hi, count)
  for i, v in ipairs(t) do t[i] = fmt_tick(v, step) end
  return t
end

-- The y range of a metric over every run's points.
local function y_range(runs, metric)
  local lo, hi = math.huge, -math.huge
  for _, r in ipairs(runs) do
    for _, p in ipairs(r.series[metric] or {}) do lo = math.min(lo, p[3]); hi = math.max(hi, p[3]) end
  end
  if lo == math.huge then lo, hi = 0, 1 end
  if lo >= 0 and hi <= 1 then
    lo = math.max(0, math.floor((lo - 0.05) * 10) / 10)
    hi = math.min(1, math.ceil((hi + 0.02) * 10) / 10)
  elseif hi - lo < 1e-12 then
    lo, hi = lo - 0.5, hi + 0.5
  else
    local pad = (hi - lo) * 0.05
    lo, hi = lo - pad, hi + pad
  end
  return lo, hi
end

-- Builds the layout shared by both outputs: one metric against the step and the wall time, or
-- several metrics (evaluation metrics, summary tags) against the step, two panels a row.
local function layout(runs, opts)
  local metrics = opts.metrics
  local multi = #metrics > 1
  local legend_h = 18 * #runs + 10
  local specs = {}
  if multi then
    for i, m in ipairs(metrics) do
      specs[i] = { metric = m, xi = 1, xlabel = "step", col = (i - 1) % 2, row = math.floor((i - 1) / 2) }
    end
  else
    specs = { { metric = metrics[1], xi = 1, xlabel = "step", col = 0, row = 0 },
              { metric = metrics[1], xi = 2, xlabel = "wall time (s)", col = 1, row = 0 } }
  end
  local rows = specs[#specs].row + 1
  local W = opts.width or 1100
  local H = opts.height or (multi and (50 + 300 * rows + legend_h + 5) or 470)
  local row_h = (H - 50 - legend_h - 5) / rows
  local pw = W / 2
  local panels = {}
  for i, sp in ipairs(specs) do
    local xmax = 0
    for _, r in ipairs(runs) do
      for _, p in ipairs(r.series[sp.metric] or {}) do xmax = math.max(xmax, p[sp.xi]) end
    end
    if xmax <= 0 then xmax = 1 end
    local lo, hi = y_range(runs, sp.metric)
    local x0, y0 = sp.col * pw, 50 + sp.row * row_h
    panels[i] = {
      left = x0 + 70, right = x0 + pw - 20, top = y0, bottom = y0 + row_h - 55,
      xlo = 0, xhi = xmax, ylo = lo, yhi = hi, xlabel = sp.xlabel, xi = sp.xi, metric = sp.metric,
    }
  end
  return { W = W, H = H, panels = panels, legend_top = H - legend_h - 5 }
end

local function to_px(p, x, y)
  local px = p.left + (x - p.xlo) / (p.xhi - p.xlo) * (p.right - p.left)
  local py = p.bottom - (y - p.ylo) / (p.yhi - p.ylo) * (p.bottom - p.top)
  return px, py
end

-- The formats to write and the path prefix: formats is a list or a comma-separated string of
-- png, svg, pdf; without it, output's extension names the one format, else SVG and PNG.
function M.outputs(prefix, formats)
  local ext = prefix:match("%.(%a+)$")
  if ext and draw.formats[ext:lower()] then
    prefix = prefix:sub(1, -#ext - 2)
    formats = formats or { ext:lower() }
  end
  formats = formats or { "svg", "png" }
  if type(formats) == "string" then
    local list = {}
    for f in formats:gmatch("[^,%s]+") do list[#list + 1] = f end
    formats = list
  end
  if #formats == 0 then error("no image format given (expected png, svg or pdf)", 0) end
  for _, f in ipairs(formats) do
    if not draw.formats[f] then
      error(string.format("unknown image format '%s' (expected png, svg or pdf)", f), 0)
    end
  end
  return prefix, formats
end

-- Draws with paint(canvas) into <prefix>.<format> for each format; returns the paths.
local function render(prefix, formats, W, H, paint)
  local paths = {}
  for i, f in ipairs(formats) do
    local cv = draw.canvas(f, prefix .. "." .. f, W, H)
    paint(cv)
    paths[i] = cv:close()
  end
  return paths
end

local function paint_plot(cv, runs, L, title)
  local black, grid = { 0, 0, 0 }, { 224, 224, 224 }
  cv:text(L.W / 2, 24, title, { size = 16, align = "center" })
  for _, p in ipairs(L.panels) do
    local yt, ys = M.ticks(p.ylo, p.yhi, 5)
    for _, v in ipairs(yt) do
      local _, py = to_px(p, p.xlo, v)
      cv:line(p.left, py, p.right, py, grid, 1)
      cv:text(p.left - 6, py + 4, fmt_tick(v, ys), { align = "right" })
    end
    local xt, xs = M.ticks(p.xlo, p.xhi, 5)
    for _, v in ipairs(xt) do
      local px = to_px(p, v, p.ylo)
      cv:line(px, p.top, px, p.bottom, grid, 1)
      cv:text(px, p.bottom + 16, fmt_tick(v, xs), { align = "center" })
    end
    cv:rect(p.left, p.top, p.right - p.left, p.bottom - p.top, nil, black)
    cv:text((p.left + p.right) / 2, p.bottom + 36, p.xlabel, { align = "center" })
    cv:text(p.left - 48, (p.top + p.bottom) / 2, p.metric, { align = "center", up = true })
    for ri, r in ipairs(runs) do
      local band = r.band and r.band[p.metric]
      if band and #band > 1 then
        local poly = {}
        for _, q in ipairs(band) do poly[#poly + 1] = { to_px(p, q[p.xi], q[4]) } end
        for k = #band, 1, -1 do poly[#poly + 1] = { to_px(p, band[k][p.xi], band[k][3]) } end
        cv:polygon(poly, M.palette[(ri - 1) % #M.palette + 1], 0.2)
      end
    end
    -- a curve is one path of width 2 (the only strokes of that width: specs count them)
    for ri, r in ipairs(runs) do
      local c = M.palette[(ri - 1) % #M.palette + 1]
      local pts = {}
      for _, q in ipairs(r.series[p.metric] or {}) do pts[#pts + 1] = { to_px(p, q[p.xi], q[3]) } end
      if #pts == 1 then cv:dot(pts[1][1], pts[1][2], 2.5, c) end
      if #pts > 1 then cv:polyline(pts, c, 2) end
    end
  end
  for ri, r in ipairs(runs) do
    local y = L.legend_top + (ri - 1) * 18 + 12
    cv:line(80, y - 4, 110, y - 4, M.palette[(ri - 1) % #M.palette + 1], 3)
    cv:text(118, y, r.label)
  end
end

-- Points of a summary tag (summary.csv beside the evaluation file): {step, seconds, value},
-- values that are not finite left out; nil when there is no summary.csv.
local function tag_series(eval_path, tag)
  local dir = eval_path:match("^(.*)/[^/]+$") or "."
  local rows = summary.read_csv(dir .. "/summary.csv")
  if not rows then return nil end
  local pts, t0 = {}, nil
  for _, r in ipairs(rows) do
    if r[3] == tag and r[4] and r[4] == r[4] and r[4] ~= math.huge and r[4] ~= -math.huge then
      t0 = t0 or r[1]
      pts[#pts + 1] = { r[2], r[1] - t0, r[4] }
    end
  end
  return pts
end

-- Runs of one setting over several seeds (the same label: the label leaves the seed out) as
-- one curve, the mean at each step all of them reached, with a band from their lowest to their
-- highest value. Other runs stay as they are.
function M.bands(runs, metrics)
  local groups, order = {}, {}
  for _, r in ipairs(runs) do
    if not groups[r.label] then groups[r.label] = {}; order[#order + 1] = r.label end
    local g = groups[r.label]
    g[#g + 1] = r
  end
  local out = {}
  for _, label in ipairs(order) do
    local g = groups[label]
    if #g == 1 then
      out[#out + 1] = g[1]
    else
      local r = { label = string.format("%s, %d seeds", label, #g), series = {}, band = {}, ev = g[1].ev }
      for _, m in ipairs(metrics) do
        local at = {}   -- step -> {n, t, sum, lo, hi}
        for _, member in ipairs(g) do
          for _, p in ipairs(member.series[m] or {}) do
            local a = at[p[1]] or { n = 0, t = 0, sum = 0, lo = math.huge, hi = -math.huge }
            a.n, a.t, a.sum = a.n + 1, a.t + p[2], a.sum + p[3]
            a.lo, a.hi = math.min(a.lo, p[3]), math.max(a.hi, p[3])
            at[p[1]] = a
          end
        end
        local steps = {}
        for s, a in pairs(at) do if a.n == #g then steps[#steps + 1] = s end end
        table.sort(steps)
        local pts, band = {}, {}
        for i, s in ipairs(steps) do
          local a = at[s]
          pts[i] = { s, a.t / a.n, a.sum / a.n }
          band[i] = { s, a.t / a.n, a.lo, a.hi }
        end
        r.series[m], r.band[m] = pts, band
      end
      out[#out + 1] = r
    end
  end
  return out
end

-- Plots runs. files: list of paths (an evaluation file or a run's folder) or {path=, label=};
-- opts: metrics (a list: evaluation metrics or summary tags such as loss or
-- robust/byzantine_selected; default the first metric of the first file; metric = one),
-- output (path prefix, default <dir of first file>/plot), title, warn(msg), bands (false: no
-- grouping of the seeds of one setting, see M.bands), formats (see M.outputs: default SVG and
-- PNG, or the one the output's extension names). One metric is drawn against the step and the
-- wall time; several, each in its panel against the step. Returns the paths written (SVG then
-- PNG by default), or raises naming the bad file, metric or format.
function M.plot(files, opts)
  opts = opts or {}
  if #files == 0 then error("no evaluation file to plot", 2) end
  local runs = {}
  local metrics = opts.metrics or (opts.metric and { opts.metric }) or nil
  local warn = opts.warn or function(msg) io.stderr:write("agt plot: warning: ", msg, "\n") end
  for _, f in ipairs(files) do
    if type(f) == "string" then f = { path = f } end
    -- a run's folder stands for its evaluation file
    if fs.kind(f.path) == "dir" then f = { path = f.path .. "/eval", label = f.label } end
    local ev, err = M.read_eval(f.path)
    if not ev then error(err, 0) end
    for k, s in pairs(ev.skipped) do
      warn(string.format("%s: %d value(s) of %s not finite (from step %d): not drawn", f.path, s.count, k, s.step))
    end
    metrics = metrics or (ev.names[1] and { ev.names[1] })
    runs[#runs + 1] = { ev = ev, label = f.label or M.label(f.path) }
  end
  if not metrics then error("the evaluation files hold no metric to plot", 0) end
  for _, m in ipairs(metrics) do
    local any = false
    for _, r in ipairs(runs) do
      r.series = r.series or {}
      local pts = M.series(r.ev, m)
      if #pts == 0 then pts = tag_series(r.ev.path, m) or {} end
      r.series[m] = pts
      if #pts > 0 then any = true end
    end
    if not any then
      error(string.format("no run has the metric or summary tag '%s' (evaluation metrics: %s; summary "
        .. "tags are in summary.csv beside the evaluation file)", m, table.concat(runs[1].ev.names, ", ")), 0)
    end
  end
  if opts.bands ~= false then runs = M.bands(runs, metrics) end
  local prefix, formats = M.outputs(opts.output or ((runs[1].ev.path:match("^(.*)/[^/]+$") or ".") .. "/plot"),
                                    opts.formats)
  local L = layout(runs, { metrics = metrics, width = opts.width, height = opts.height })
  local title = opts.title or table.concat(metrics, ", ")
  return unpack(render(prefix, formats, L.W, L.H, function(cv) paint_plot(cv, runs, L, title) end))
end

---------------------------------------------------------------------------------------------------
-- Heat maps: a table of values (a sweep's rule × attack grid), each cell coloured by its value.

-- Colour of t in [0, 1] on the viridis scale (five stops, linear between them).
local viridis = { { 68, 1, 84 }, { 59, 82, 139 }, { 33, 145, 140 }, { 94, 201, 98 }, { 253, 231, 37 } }
function M.colour(t)
  if t ~= t then return { 200, 200, 200 } end
  t = math.max(0, math.min(1, t)) * (#viridis - 1)
  local k = math.min(#viridis - 2, math.floor(t))
  local a, b, u = viridis[k + 1], viridis[k + 2], t - k
  return { math.floor(a[1] + (b[1] - a[1]) * u + 0.5), math.floor(a[2] + (b[2] - a[2]) * u + 0.5),
           math.floor(a[3] + (b[3] - a[3]) * u + 0.5) }
end

-- grid: { rows = {labels}, cols = {labels}, cell = {[i][j] = {mean=, text=}} } where text is
-- what the cell shows (agt.sweep's cells carry mean and are shown by their own text function).
-- Colours span the finite means' range; a cell without a finite mean is grey.
local function heat_layout(grid, opts, text_of)
  local lo, hi = math.huge, -math.huge
  for i = 1, #grid.rows do
    for j = 1, #grid.cols do
      local g = grid.cell[i][j]
      local v = g and g.mean
      if v and v == v and v > -math.huge and v < math.huge then
        lo, hi = math.min(lo, v), math.max(hi, v)
      end
    end
  end
  if lo > hi then lo, hi = 0, 1 end
  local tw = draw.text_width
  local left = 120
  for _, r in ipairs(grid.rows) do left = math.max(left, 24 + tw(r, 13)) end
  local cw = 80
  for j, c in ipairs(grid.cols) do
    cw = math.max(cw, tw(c, 13) + 20)
    for i = 1, #grid.rows do
      local g = grid.cell[i][j]
      if g then cw = math.max(cw, tw(text_of(g), 13) + 20) end
    end
  end
  local note = string.format("colour: %.3f (dark) to %.3f (bright); grey: no value", lo, hi)
  left, cw = math.ceil(left), math.ceil(cw)
  return { lo = lo, hi = hi, left = left, top = 70, cw = cw, ch = 34, note = note,
           W = math.ceil(math.max(left + cw * #grid.cols + 24, left + tw(note, 13) + 24)),
           H = 70 + 34 * #grid.rows + 40, title = opts.title or "" }
end

local function heat_fill(L, g)
  local v = g and g.mean
  if not v or v ~= v then return { 200, 200, 200 } end
  return M.colour(L.hi > L.lo and (v - L.lo) / (L.hi - L.lo) or 0.5)
end

local function ink(c) return (0.299 * c[1] + 0.587 * c[2] + 0.114 * c[3]) > 140 and { 0, 0, 0 } or { 255, 255, 255 } end

local function paint_heatmap(cv, grid, L, text_of)
  local grey = { 85, 85, 85 }
  cv:text(L.W / 2, 24, L.title, { size = 16, align = "center" })
  cv:text(L.left - 8, L.top - 12, "attack \\ rule", { size = 13, align = "right", colour = grey })
  for j, c in ipairs(grid.cols) do
    cv:text(L.left + (j - 0.5) * L.cw, L.top - 12, c, { size = 13, align = "center" })
  end
  for i, r in ipairs(grid.rows) do
    local y = L.top + (i - 1) * L.ch
    cv:text(L.left - 8, y + L.ch / 2 + 5, r, { size = 13, align = "right" })
    for j = 1, #grid.cols do
      local g = grid.cell[i][j]
      local c = heat_fill(L, g)
      local x = L.left + (j - 1) * L.cw
      cv:rect(x + 1, y + 1, L.cw - 2, L.ch - 2, c)
      if g then
        cv:text(x + L.cw / 2, y + L.ch / 2 + 5, text_of(g), { size = 13, align = "center", colour = ink(c) })
      end
    end
  end
  cv:text(L.left, L.H - 14, L.note, { size = 13, colour = grey })
end

-- Writes a heat map to <opts.output>.<format> for each of opts.formats (default SVG and PNG;
-- see M.outputs); text_of(cell) is the text shown in a cell (default: its mean with 3
-- decimals). Returns the paths written.
function M.heatmap(grid, opts, text_of)
  text_of = text_of or function(g) return g.mean and string.format("%.3f", g.mean) or "-" end
  local prefix, formats = M.outputs(opts.output, opts.formats)
  local L = heat_layout(grid, opts, text_of)
  return unpack(render(prefix, formats, L.W, L.H, function(cv) paint_heatmap(cv, grid, L, text_of) end))
end

return M
