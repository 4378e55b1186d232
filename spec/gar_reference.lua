-- gar_reference.lua — slow, obviously-correct plain-Lua versions of every aggregation rule,
-- for the specs to compare the engine's kernels with.
--
-- G is a Lua list of n rows, each a list of d numbers (float32 values). Each function returns
-- the output list (and, for selecting rules, the 1-based selected rows). Where the engine's
-- definition fixes a float32 summation order (per-coordinate rules, averages of rows), the
-- reference rounds to float32 after every operation (`f32`), which reproduces float32
-- arithmetic exactly (double has more than 2*24+2 bits), so those rules must match bit for
-- bit. Distances and norms are computed in double.
local ffi = require("ffi")

local R = {}
local inf = math.huge
local fbuf = ffi.new("float[1]")
local function f32(x) fbuf[0] = x; return fbuf[0] end
R.f32 = f32

local function finite(x) return x == x and x ~= inf and x ~= -inf end
local function key(x) return finite(x) and x or inf end

local function column(G, k)
  local c = {}
  for i = 1, #G do c[i] = key(G[i][k]) end
  table.sort(c)
  return c
end

local function median_of(v)
  local n = #v
  if n % 2 == 1 then return v[(n + 1) / 2] end
  return f32(f32(v[n / 2] + v[n / 2 + 1]) * 0.5)
end

local function trimmed_of(v, f)
  local s = 0
  for i = f + 1, #v - f do s = f32(s + v[i]) end
  return f32(s / (#v - 2 * f))
end

-- the beta values of v closest to m (distance |v - m| in float, 0 when equal; ties: smaller
-- value), summed in ascending value order, divided by beta
local function closest_of(v, m, beta)
  local idx = {}
  for i = 1, #v do idx[i] = i end
  local function dist(x)
    if x == m then return 0 end
    return math.abs(f32(x - m))
  end
  table.sort(idx, function(a, b)
    local da, db = dist(v[a]), dist(v[b])
    if da ~= db then return da < db end
    return a < b -- v is sorted: lower position = smaller value
  end)
  local chosen = {}
  for q = 1, beta do chosen[#chosen + 1] = idx[q] end
  table.sort(chosen)
  local s = 0
  for _, i in ipairs(chosen) do s = f32(s + v[i]) end
  return f32(s / beta)
end

local function per_coord(G, fn)
  local out = {}
  for k = 1, #G[1] do out[k] = fn(column(G, k)) end
  return out
end

function R.average(G)
  local n, out = #G, {}
  for k = 1, #G[1] do
    local s = 0
    for i = 1, n do s = s + G[i][k] end
    out[k] = f32(s / n)
  end
  return out
end

function R.average_nan(G)
  local out = {}
  for k = 1, #G[1] do
    local s, c = 0, 0
    for i = 1, #G do
      local x = G[i][k]
      if finite(x) then s = f32(s + x); c = c + 1 end
    end
    out[k] = c > 0 and f32(s / c) or 0
  end
  return out
end

function R.median(G) return per_coord(G, median_of) end
function R.trimmed_mean(G, f) return per_coord(G, function(v) return trimmed_of(v, f) end) end
function R.meamed(G, beta)
  return per_coord(G, function(v) return closest_of(v, median_of(v), beta) end)
end
function R.phocas(G, f)
  return per_coord(G, function(v) return closest_of(v, trimmed_of(v, f), #v - f) end)
end

function R.sqdist(a, b)
  local s = 0
  for k = 1, #a do local t = a[k] - b[k]; s = s + t * t end
  return finite(s) and s or inf
end

local function dist_matrix(G)
  local D = {}
  for i = 1, #G do D[i] = {} end
  for i = 1, #G do
    D[i][i] = 0
    for j = i + 1, #G do
      local v = R.sqdist(G[i], G[j])
      D[i][j], D[j][i] = v, v
    end
  end
  return D
end
R.dist_matrix = dist_matrix

-- mean of the listed rows, summed in the given order, float32 throughout
local function rows_mean(G, rows)
  local out = {}
  for k = 1, #G[1] do
    local s = 0
    for _, i in ipairs(rows) do s = f32(s + G[i][k]) end
    out[k] = f32(s / #rows)
  end
  return out
end
R.rows_mean = rows_mean

local function sorted_copy(t)
  local c = {}
  for i, v in ipairs(t) do c[i] = v end
  table.sort(c)
  return c
end

-- Krum score of each row of `set` (list of row indices) within the set, k neighbours
local function scores(D, set, k)
  local sc = {}
  for a, i in ipairs(set) do
    local ds = {}
    for b, j in ipairs(set) do if a ~= b then ds[#ds + 1] = D[i][j] end end
    table.sort(ds)
    local s = 0
    for q = 1, k do s = s + ds[q] end
    sc[a] = s
  end
  return sc
end

local function order_by(keys)
  local idx = {}
  for i = 1, #keys do idx[i] = i end
  table.sort(idx, function(a, b)
    if keys[a] ~= keys[b] then return keys[a] < keys[b] end
    return a < b
  end)
  return idx
end

function R.multi_krum(G, f, m)
  local n = #G
  local D = dist_matrix(G)
  local all = {}
  for i = 1, n do all[i] = i end
  local ord = order_by(scores(D, all, n - f - 2))
  local sel = {}
  for q = 1, m do sel[q] = ord[q] end
  return rows_mean(G, sorted_copy(sel)), sel
end

function R.krum(G, f) return R.multi_krum(G, f, 1) end

function R.bulyan(G, f)
  local n = #G
  local D = dist_matrix(G)
  local theta, rem, sel = n - 2 * f, {}, {}
  for i = 1, n do rem[i] = i end
  for _ = 1, theta do
    local r = #rem
    local k = math.max(r - f - 2, 0)
    local sc = scores(D, rem, k)
    local best = 1
    for q = 2, r do if sc[q] < sc[best] then best = q end end
    sel[#sel + 1] = rem[best]
    table.remove(rem, best)
  end
  local sub = {}
  for q, i in ipairs(sel) do sub[q] = G[i] end
  return R.meamed(sub, theta - 2 * f), sel
end

function R.cge(G, f)
  local sq = {}
  for i = 1, #G do
    local s = 0
    for k = 1, #G[i] do s = s + G[i][k] * G[i][k] end
    sq[i] = finite(s) and s or inf
  end
  local ord = order_by(sq)
  local sel = {}
  for q = 1, #G - f do sel[q] = ord[q] end
  return rows_mean(G, sorted_copy(sel)), sel
end

-- every subset of n-f rows, in lexicographic order; the first of smallest diameter
function R.mda(G, f)
  local n = #G
  local k = n - f
  local D = dist_matrix(G)
  local best, bestset
  local cur = {}
  local function rec(start, depth)
    if depth > k then
      local diam = 0
      for a = 1, k do for b = a + 1, k do
        if D[cur[a]][cur[b]] > diam then diam = D[cur[a]][cur[b]] end
      end end
      if not best or diam < best then
        best = diam
        bestset = { unpack(cur, 1, k) }
      end
      return
    end
    for i = start, n - (k - depth) do
      cur[depth] = i
      rec(i + 1, depth + 1)
    end
  end
  rec(1, 1)
  return rows_mean(G, bestset), bestset
end

function R.nnm(G, f)
  local n = #G
  local D = dist_matrix(G)
  local out = {}
  for i = 1, n do
    local keys = {}
    for j = 1, n do keys[j] = j == i and -1 or D[i][j] end
    local ord = order_by(keys)
    local sel = {}
    for q = 1, n - f do sel[q] = ord[q] end
    out[i] = rows_mean(G, sorted_copy(sel))
  end
  return out
end

function R.bucketing(G, s, perm) -- perm: 1-based row order
  local out = {}
  for b = 1, math.ceil(#G / s) do
    local rows = {}
    for q = (b - 1) * s + 1, math.min(b * s, #G) do rows[#rows + 1] = perm[q] end
    out[b] = rows_mean(G, rows)
  end
  return out
end

local function norm2(x)
  local s = 0
  for k = 1, #x do s = s + x[k] * x[k] end
  return finite(s) and math.sqrt(s) or inf
end

local function scale(x, nr, c)
  if not finite(nr) or not finite(c) or nr <= c then return { unpack(x) } end
  local a = f32(c / nr)
  local y = {}
  for k = 1, #x do y[k] = f32(x[k] * a) end
  return y
end

function R.clipping(G, c)
  local out = {}
  for i = 1, #G do out[i] = scale(G[i], norm2(G[i]), c) end
  return out
end

function R.arc(G, f)
  local n = #G
  local k = math.floor(2 * f * (n - f) / n)
  local nr, neg = {}, {}
  for i = 1, n do nr[i] = norm2(G[i]); neg[i] = -nr[i] end
  local ord = order_by(neg)
  local out = {}
  for i = 1, n do out[i] = { unpack(G[i]) } end
  if k < n then
    local thr = nr[ord[k + 1]]
    for q = 1, k do local i = ord[q]; out[i] = scale(G[i], nr[i], thr) end
  end
  return out
end

-- Weiszfeld in double from the reference coordinate median
function R.geometric_median(G, nu, iters, tol)
  local n, d = #G, #G[1]
  local z = R.median(G)
  for _ = 1, iters do
    local w, W = {}, 0
    for i = 1, n do
      local r = math.sqrt(R.sqdist(G[i], z))
      w[i] = finite(r) and 1 / math.max(nu, r) or 0
      W = W + w[i]
    end
    if not (W > 0) then break end
    local nz = {}
    for k = 1, d do
      local s = 0
      for i = 1, n do if w[i] > 0 then s = s + w[i] / W * G[i][k] end end
      nz[k] = s
    end
    local dz = math.sqrt(R.sqdist(nz, z))
    local zn = 0
    for k = 1, d do zn = zn + z[k] * z[k] end
    zn = math.sqrt(zn)
    z = nz
    if dz <= tol * zn then break end
  end
  return z
end

function R.centered_clipping(G, v, tau, iters)
  local n, d = #G, #G[1]
  v = { unpack(v) }
  for _ = 1, iters do
    local c = {}
    for i = 1, n do
      local r = math.sqrt(R.sqdist(G[i], v))
      c[i] = not finite(r) and 0 or (r <= tau and 1 or tau / r)
    end
    local nv = {}
    for k = 1, d do
      local s = 0
      for i = 1, n do if c[i] > 0 then s = s + c[i] / n * (G[i][k] - v[k]) end end
      nv[k] = v[k] + s
    end
    v = nv
  end
  return v
end

return R
