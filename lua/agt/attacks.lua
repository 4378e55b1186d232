-- agt.attacks — what Byzantine workers do: the registry of attacks, their loader, and the
-- helpers they share.
--
-- An attack is a Lua file (lua/attacks/NAME.lua, or a user's file passed by path) returning a
-- table: name, kind ("gradient" or "data"), doc, paper, args (a list of
-- {name=, default=, doc=} specs parsed from key:value words) and apply(self, c), which
-- overwrites the Byzantine rows of the gradient matrix c.G. Optional: init(self) checks the
-- arguments once, state(self)/set_state(self, s) carry state across steps (checkpointed);
-- needs_honest (a boolean, or function(self) for an answer that depends on the arguments; true
-- when left out) says whether apply reads honest rows: one that does not (it reads only the
-- Byzantine rows' own gradients and random draws) runs in each Byzantine worker process alone,
-- one that does makes the Byzantine processes of a distributed run collude (agt.session.collusion);
-- devices = {"cpu", "cuda"} says that apply runs where c.G is (below).
--
-- Devices. c.G may be on the GPU (agt run --use-gpu). An attack that declares devices =
-- {"cpu", "cuda"} then runs there: its apply uses only the helpers below (self:buffer,
-- honest_mean, honest_std, honest_sqdist, write, row_view, draw_row, rule_distance) and tensor
-- methods (v:copy, v:axpy, v:scale, v:fill, v:norm, v:dot, ...), which find their kernels in
-- G's backend, so the same file gives the CPU's bits on either device. Any other attack, given
-- a device G, runs on a host copy of G, and its Byzantine rows are copied back (a warning says
-- so, once per attack): correct, but a copy of G each way per step.
--
-- Invariants:
--  * apply writes only the rows listed in c.byz; honest rows are read, never written.
--  * Every random draw comes from a stream fixed by the run's seed (the context's stream, or
--    one derived from (seed, step)), so a run with the same seed attacks identically, and the
--    Byzantine set of a step depends only on (seed, step): resuming needs no extra state.
--  * Attacks that evaluate the aggregation rule do it on a scratch copy of G and restore the
--    rule's state afterwards, so the search leaves no trace in the run.
local ffi = require("ffi")
local T = require("agt.tensor")
local DEBUG = T.debug   -- AGT_DEBUG=1: self:row gives checked pointers (agt.tensor)
local R = require("agt.rng")
local kv = require("agt.kv")
local P = require("agt.plugins")
local contract = require("agt.contract")

local K = {}

-- Arguments every attack takes, on top of its own.
local COMMON_ARGS = {
  { name = "selection", default = "fixed", choices = { "fixed", "random" },
    doc = "which workers are Byzantine: 'fixed' = the last r workers (n-r+1..n) at every "
       .. "step; 'random' = r workers drawn anew each step from the run's seed" },
}

---------------------------------------------------------------------------------------------
-- Registry and loader.
---------------------------------------------------------------------------------------------

local registered = {}   -- name -> definition, for attacks registered at run time

local function validate(def, where)
  contract.attack(def, where)
  def.kind = def.kind or "gradient"
  def.args = def.args or {}
  return def
end

-- Adds an attack defined in Lua (same table as a file returns) under def.name.
function K.register(def)
  validate(def, "attack '" .. tostring(def and def.name) .. "'")
  registered[def.name] = def
  return def
end

-- Returns the definition and where it came from. name_or_path: a registered or built-in name
-- ("label-flip" or "label_flip"), or a path to a .lua file.
function K.load(name_or_path)
  if type(name_or_path) == "table" then return validate(name_or_path, "attack table"), nil end
  if type(name_or_path) ~= "string" or name_or_path == "" then
    error("attack: expected a name or a path, got " .. tostring(name_or_path), 2)
  end
  local s = name_or_path
  if s:find("/", 1, true) or s:match("%.lua$") then
    local chunk, err = loadfile(s)
    if not chunk then error("attack: cannot load '" .. s .. "': " .. err, 2) end
    return validate(chunk(), s), s
  end
  local name = s:gsub("_", "-")
  if registered[name] then return registered[name], name end
  local file = name:gsub("-", "_")
  local path, module = P.find("attacks", file)
  if not path then
    error(string.format("unknown attack '%s' (known: %s; or pass a path to a .lua file)",
      s, table.concat(K.list(), ", ")), 2)
  end
  local def = P.load("attacks", file, "attack")
  return validate(def, module or path), module or path
end

function K.list()
  local names, seen = {}, {}
  for _, file in ipairs(P.list("attacks")) do
    local n = file:gsub("_", "-")
    names[#names + 1] = n; seen[n] = true
  end
  for n in pairs(registered) do if not seen[n] then names[#names + 1] = n end end
  table.sort(names)
  return names
end

function K.help()
  local out = {
    "Attacks: what the r real Byzantine workers (--nb-real-byz-workers) send.",
    "  --attack NAME|PATH.lua  --attack-args key:value ...",
    "Arguments every attack takes:",
    kv.help(COMMON_ARGS, "    "),
    "",
  }
  for _, name in ipairs(K.list()) do
    local ok, def = pcall(K.load, name)
    if ok then
      out[#out + 1] = string.format("%s (%s)  %s", name, def.kind, def.doc or "")
      if def.paper then out[#out + 1] = "    source: " .. def.paper end
      if #def.args > 0 then out[#out + 1] = kv.help(def.args, "    ") end
    else
      out[#out + 1] = name .. "  (cannot load: " .. tostring(def) .. ")"
    end
  end
  return table.concat(out, "\n")
end

---------------------------------------------------------------------------------------------
-- Math helpers shared by attacks (exported for users' attacks and the specs).
---------------------------------------------------------------------------------------------

-- Standard normal CDF, accurate to ~1e-14: series for erf near 0, continued fraction for the
-- tail (no erf in Lua 5.1).
function K.normal_cdf(x)
  local z = math.abs(x) / math.sqrt(2)
  local erfc
  if z < 3 then
    local sum, term, k = z, z, 0
    repeat
      k = k + 1
      term = -term * z * z / k
      local add = term / (2 * k + 1)
      sum = sum + add
    until math.abs(add) < 1e-17 * math.abs(sum) or k > 200
    erfc = 1 - 2 / math.sqrt(math.pi) * sum
  else
    local frac = 0
    for k = 60, 1, -1 do frac = (k / 2) / (z + frac) end
    erfc = math.exp(-z * z) / math.sqrt(math.pi) / (z + frac)
  end
  if x >= 0 then return 1 - erfc / 2 else return erfc / 2 end
end

-- Inverse of normal_cdf on (0, 1), by bisection (monotone, exact to double rounding).
function K.normal_quantile(p)
  if not (p > 0 and p < 1) then error("normal_quantile needs 0 < p < 1, got " .. tostring(p), 2) end
  local lo, hi = -40, 40
  for _ = 1, 200 do
    local mid = (lo + hi) / 2
    if K.normal_cdf(mid) < p then lo = mid else hi = mid end
    if hi - lo < 1e-15 then break end
  end
  return (lo + hi) / 2
end

-- z_max of "A little is enough" (Baruch et al. 2019, Alg. 1) for n workers, m of them
-- malicious: s = floor(n/2 + 1) - m workers must be won over, z = Phi^-1((n - s)/n).
-- When m already reaches a majority (s <= 0) the quantile is capped at 1 - 1e-6.
function K.lie_z(n, m)
  local s = math.floor(n / 2 + 1) - m
  local p = (n - s) / n
  if p >= 1 then p = 1 - 1e-6 end
  if p <= 0 then p = 1e-6 end
  return K.normal_quantile(p)
end

-- Maximises fn over the reals by a line search with a budget of `evals` evaluations.
-- Starts at `start`; probes start + delta then start - delta to pick a direction, doubles the
-- step while it keeps improving (expansion), then probes both sides of the best point with a
-- step shrunk by `ratio` each round (contraction). Returns best_x, best_y, evaluations used.
-- NaN values count as no improvement.
function K.line_maximize(fn, o)
  o = o or {}
  local budget = o.evals or 16
  local ratio = o.ratio or 0.8
  local delta = o.delta or 1
  local lower = o.lower                       -- optional bound x >= lower
  local best_x = o.start or 0
  local best_y = fn(best_x)
  local used = 1
  if best_y ~= best_y then best_y = -math.huge end
  local function try(x)
    if lower and x < lower then return false end
    if used >= budget then return false end
    used = used + 1
    local y = fn(x)
    if y == y and y > best_y then best_x, best_y = x, y; return true end
    return false
  end
  -- Direction, then expansion.
  local dir = 0
  if try(best_x + delta) then dir = 1
  elseif try(best_x - delta) then dir = -1 end
  if dir ~= 0 then
    while used < budget do
      delta = delta * 2
      if not try(best_x + dir * delta) then break end
    end
  end
  -- Contraction around the best point.
  while used < budget do
    delta = delta * ratio
    if not try(best_x + delta) then try(best_x - delta) end
  end
  return best_x, best_y, used
end

---------------------------------------------------------------------------------------------
-- The attack object.
---------------------------------------------------------------------------------------------

local Attack = {}
Attack.__index = Attack
K.Attack = Attack

local function is_int(x) return type(x) == "number" and x == math.floor(x) end

-- K.new(name_or_path, args, {n =, f =, r =, rule =, seed =, warn =})
--   args: list of "key:value" words or a table; r defaults to f; warn(msg) receives warnings
--   (default: printed on stderr).
function K.new(name_or_path, args, opts)
  opts = opts or {}
  local def, origin = K.load(name_or_path)
  local n, f = opts.n, opts.f
  if not is_int(n) or n < 1 then error("attack " .. def.name .. " needs n >= 1 workers, got n=" .. tostring(n), 2) end
  if not is_int(f) or f < 0 then error("attack " .. def.name .. " needs f >= 0, got f=" .. tostring(f), 2) end
  local r = opts.r
  if r == nil then r = f end
  if not is_int(r) or r < 0 or r > n then
    error(string.format("attack %s needs 0 <= r <= n real Byzantine workers, got r=%s n=%d",
      def.name, tostring(r), n), 2)
  end
  local spec = {}
  for _, s in ipairs(COMMON_ARGS) do spec[#spec + 1] = s end
  for _, s in ipairs(def.args) do spec[#spec + 1] = s end
  local a = kv.parse(args, spec, "attack " .. def.name, { n = n, f = f })
  local self = setmetatable({
    def = def, name = def.name, kind = def.kind, poison = def.poison, origin = origin,
    args = a, selection = a.selection, n = n, f = f, r = r, rule = opts.rule,
    seed = opts.seed or 0, warnings = {}, _bufs = {}, device = "cpu",
  }, Attack)
  self._warn = opts.warn or function(msg) io.stderr:write("warning: ", msg, "\n") end
  if r > f then
    self:warn(string.format("%d real Byzantine workers exceed the %d the rule is told about "
      .. "(r > f): the rule's guarantees do not hold", r, f))
  end
  if self.kind == "data" and self.selection == "random" then
    error("attack " .. def.name .. " poisons the data of fixed workers: selection:random does not apply", 2)
  end
  if def.init then def.init(self) end
  return self
end

function Attack:warn(msg)
  self.warnings[#self.warnings + 1] = msg
  self._warn(msg)
end

-- 1-based indices of the workers that attack at `step`, ascending.
function Attack:byzantine(step)
  local r, n = self.r, self.n
  local list = {}
  if r == 0 then return list end
  if self.selection == "fixed" then
    for i = n - r + 1, n do list[#list + 1] = i end
    return list
  end
  local g = R.new(self.seed, R.stream_id("byzantine-selection", step or 0))
  local perm = g:permutation(n)
  for k = 1, r do list[k] = tonumber(perm[k]) + 1 end
  table.sort(list)
  return list
end

-- The honest indices, given the Byzantine ones (ascending, 1-based).
function Attack:honest(byz)
  local is_byz, list = {}, {}
  for _, i in ipairs(byz) do is_byz[i] = true end
  for i = 1, self.n do if not is_byz[i] then list[#list + 1] = i end end
  return list
end

-- Overwrites the Byzantine rows of ctx.G. ctx: {G =, honest =, byz =, step =, rule =, rng =}.
-- Returns an info table (what the attack chose: a scale factor, a target, ...).
function Attack:apply(ctx)
  if self.kind == "data" then return {} end
  local G = ctx.G
  if not T.is_tensor(G) or G:dim() ~= 2 then error("attack " .. self.name .. ": ctx.G must be an n×d tensor", 2) end
  if G:size(1) ~= self.n then
    error(string.format("attack %s: G has %d rows, expected n=%d", self.name, G:size(1), self.n), 2)
  end
  local byz = ctx.byz or self:byzantine(ctx.step)
  if #byz == 0 then return {} end
  local host_copy = G.device ~= "cpu" and not self:runs_on(G.device)
  local Gw = G
  if host_copy then
    if not self._warned_host then
      self._warned_host = true
      self:warn(string.format("attack %s has no device path: G is copied to the host and its "
        .. "Byzantine rows back at every step", self.name))
    end
    Gw = self._host_G
    if not Gw or Gw.n ~= G.n then Gw = T.new(G.shape); self._host_G = Gw end
    Gw:copy(G)
  end
  self.device = Gw.device
  local c = {
    G = Gw, n = self.n, d = G:size(2), byz = byz, honest = ctx.honest or self:honest(byz),
    step = ctx.step or 0, rule = ctx.rule or self.rule, rng = ctx.rng, cache = {},
  }
  local info = self.def.apply(self, c) or {}
  if host_copy then
    for _, i in ipairs(byz) do G:row(i):copy(Gw:row(i)) end
  end
  return info
end

-- Whether apply runs on device ("cpu", "cuda", "cuda:0") itself (the file's devices list).
function Attack:runs_on(device)
  if device == "cpu" then return true end
  local B = require("agt.backend")
  for _, dv in ipairs(self.def.devices or {}) do
    if B.get(dv) == B.get(device) then return true end
  end
  return false
end

-- Whether apply reads the honest rows (see needs_honest above).
function Attack:needs_honest()
  if self.kind == "data" then return false end
  local v = self.def.needs_honest
  if type(v) == "function" then return v(self) and true or false end
  return v ~= false
end

-- The attack of one Byzantine worker that knows only its own gradient, for an attack that
-- needs no honest row: overwrites row (an f32 tensor of d, holding that gradient) in place.
-- rng: the worker's own attack stream.
function Attack:apply_own(row, step, rng)
  if self:needs_honest() then
    error("attack " .. self.name .. " reads the honest rows: it cannot run on one worker's row alone", 2)
  end
  local G = row:reshape({ 1, row.n })
  local c = { G = G, n = self.n, d = row.n, byz = { 1 }, honest = {}, step = step or 0, rng = rng, cache = {} }
  return self.def.apply(self, c) or {}
end

function Attack:state()
  if self.def.state then return self.def.state(self) end
  return nil
end

function Attack:set_state(s)
  if s == nil then return end
  if not self.def.set_state then error("attack " .. self.name .. " keeps no state", 2) end
  self.def.set_state(self, s)
end

-- Helpers for apply(self, c) ---------------------------------------------------------------

-- A tensor kept across steps under `key`, on the device of the G being attacked, reallocated
-- when the shape or the device changes (not zeroed).
function Attack:buffer(key, shape)
  local b = self._bufs[key]
  local same = b ~= nil and #b.shape == #shape and b.device == self.device
  if same then for i = 1, #shape do if b.shape[i] ~= shape[i] then same = false end end end
  if not same then b = T.new(shape, "f32", self.device); self._bufs[key] = b end
  return b
end

-- The backend of c.G's device (its kernels: vec.copy, vec.rows_mean, ...).
local function be_of(c) return require("agt.backend").of(c.G) end

local function check_row(self, c, i, what)
  local n = c.G:size(1)
  if type(i) ~= "number" or i ~= math.floor(i) or i < 1 or i > n then
    error(string.format("attack %s: self:%s(c, i): row %s out of range 1..%d", self.name, what,
                        tostring(i), n), 3)
  end
end

-- The raw float* to row i (1-based) of c.G, on G's device (a device pointer for a GPU G: for
-- the backend's kernels, not for the CPU's), never checked: for the engine's attacks, which
-- pass it to C. i outside 1..n is an error.
function Attack:raw_row(c, i)
  check_row(self, c, i, "raw_row")
  return c.G:pointer() + (i - 1) * c.d
end

-- The row for attack files: under AGT_DEBUG=1 (and a host G) a checked pointer over the row's
-- d values (an index outside 0..d-1 is an error at its line), otherwise the raw pointer.
function Attack:row(c, i)
  check_row(self, c, i, "row")
  local p = c.G:pointer() + (i - 1) * c.d
  if DEBUG and c.G.device == "cpu" then
    return T.checked(p, c.d, "self:row(c, " .. i .. ")", "c.G's row " .. i)
  end
  return p
end

-- Row i of c.G as a tensor view (on G's device; made once per step): for tensor methods.
function Attack:row_view(c, i)
  check_row(self, c, i, "row_view")
  local views = c.cache.rows or {}
  c.cache.rows = views
  views[i] = views[i] or c.G:row(i)
  return views[i]
end

-- Fills row i of c.G with fn(p), p a HOST float* of d values (random draws from the host's
-- streams: the same values on every device); on a device the values are then copied there.
function Attack:draw_row(c, i, fn)
  check_row(self, c, i, "draw_row")
  if c.G.device == "cpu" then return fn(c.G:pointer() + (i - 1) * c.d) end
  local h = self._bufs["draw-host"]
  if not h or h.n ~= c.d then h = T.new({ c.d }); self._bufs["draw-host"] = h end
  fn(h:pointer())
  self:row_view(c, i):copy(h)
end

-- The random stream of this step: the context's, or one derived from (seed, step).
function Attack:rng(c)
  if c.rng then return c.rng end
  if not c.cache.rng then c.cache.rng = R.new(self.seed, R.stream_id("attack", c.step)) end
  return c.cache.rng
end

-- The honest rows gathered in a contiguous h×d tensor (computed once per step).
function Attack:honest_matrix(c)
  if c.cache.H then return c.cache.H end
  local h = #c.honest
  if h == 0 then error("attack " .. self.name .. " needs at least one honest worker, got none", 3) end
  local H = self:buffer("honest", { h, c.d })
  local dst, copy = H:pointer(), be_of(c):op("vec.copy")
  for k, i in ipairs(c.honest) do copy(dst + (k - 1) * c.d, self:raw_row(c, i), c.d) end
  c.cache.H = H
  return H
end

-- mu: the coordinate-wise mean of the honest rows (d values).
function Attack:honest_mean(c)
  if c.cache.mean then return c.cache.mean end
  local H = self:honest_matrix(c)
  local m = self:buffer("mean", { c.d })
  be_of(c):op("vec.rows_mean")(H:pointer(), #c.honest, c.d, m:pointer())
  c.cache.mean = m
  return m
end

-- sigma: the coordinate-wise standard deviation of the honest rows (ddof 0 or 1).
function Attack:honest_std(c, ddof)
  ddof = ddof or 0
  local key = "std" .. ddof
  if c.cache[key] then return c.cache[key] end
  local H = self:honest_matrix(c)
  if #c.honest - ddof < 1 then
    error(string.format("attack %s: std with ddof=%d needs more than %d honest workers", self.name, ddof, ddof), 3)
  end
  local s = self:buffer(key, { c.d })
  be_of(c):op("vec.rows_std")(H:pointer(), #c.honest, c.d, self:honest_mean(c):pointer(), ddof, s:pointer())
  c.cache[key] = s
  return s
end

-- Pairwise squared distances between the honest rows: a double[h*h] (row-major, diagonal 0,
-- non-finite distances +inf), computed once per step by the engine's distance kernel.
function Attack:honest_sqdist(c)
  if c.cache.D then return c.cache.D end
  local H = self:honest_matrix(c)
  local h = #c.honest
  local D = ffi.new("double[?]", h * h)
  be_of(c):op("gar.sqdist")(H:pointer(), h, c.d, D)
  c.cache.D = D
  return D
end

-- Copies the d values at ptr (a float* or a tensor) into every Byzantine row of G (or of M).
-- A tensor must hold exactly d values; a raw pointer is trusted, a checked one (t.ptr and
-- self:row under AGT_DEBUG=1) must reach d values. v, G and M are on one device (a raw
-- pointer: G's).
function Attack:write(c, v, M)
  if T.is_checked(v) then
    local room
    v, room = T.unchecked(v, string.format("attack %s: self:write(c, v)", self.name), 2)
    if room < c.d then
      error(string.format("attack %s: self:write(c, v): v reaches %d values, d = %d are read "
                          .. "(AGT_DEBUG checks)", self.name, room, c.d), 2)
    end
  end
  if T.is_tensor(v) then
    if v.n ~= c.d or v.dtype ~= "f32" then
      error(string.format("attack %s: self:write(c, v): v must be an f32 tensor of d = %d values, "
                          .. "got %s %d", self.name, c.d, v.dtype, v.n), 2)
    end
  elseif type(v) ~= "cdata" then
    error(string.format("attack %s: self:write(c, v): v must be a tensor of d = %d values, got %s",
                        self.name, c.d, type(v)), 2)
  end
  if M ~= nil and (not T.is_tensor(M) or M.n ~= c.G.n) then
    error(string.format("attack %s: self:write(c, v, M): M must be a tensor shaped like c.G", self.name), 2)
  end
  for _, t in ipairs({ v, M or v }) do
    if T.is_tensor(t) and t.dev ~= c.G.dev then
      error(string.format("attack %s: self:write(c, v, M): a tensor on %s for G on %s", self.name,
                          t.device, c.G.device), 2)
    end
  end
  local src = T.is_tensor(v) and v:pointer() or v
  local base = (M or c.G):pointer()
  local copy = be_of(c):op("vec.copy")
  for _, i in ipairs(c.byz) do
    local dst = base + (i - 1) * c.d
    if dst ~= src then copy(dst, src, c.d) end
  end
end

-- A plain average, the rule searched against when the run names none.
local AVERAGE = {
  name = "average",
  aggregate = function(_, G, out)
    T.rows_mean(G, out)
    return {}
  end,
}
K.AVERAGE = AVERAGE

-- Aggregates a copy of G whose Byzantine rows fill(S) writes, with the run's rule, and leaves
-- the rule as it found it. Returns ||rule(S) - mu|| (mu = honest mean), the rule's info and
-- the output tensor (valid until the next call).
function Attack:rule_distance(c, fill)
  local rule = c.rule or AVERAGE
  local n, d = c.n, c.d
  local S = self:buffer("scratch", { n, d })
  local out = self:buffer("scratch-out", { d })
  S:copy(c.G)
  fill(S)
  local saved = rule.state and rule:state() or nil
  local actx = { step = c.step, rng = c.rng and c.rng:clone() or nil }
  if not actx.rng then actx.rng = R.new(self.seed, R.stream_id("aggregate", c.step)) end
  local info = rule:aggregate(S, out, actx)
  if rule.state then
    if saved ~= nil then
      rule:set_state(saved)
    elseif rule:state() ~= nil then
      -- The rule had no state before (e.g. centered clipping before its first step): only a
      -- rule whose set_state(nil) resets it can be put back.
      local ok = pcall(rule.set_state, rule, nil)
      if (not ok or rule:state() ~= nil) and not self._warned_state then
        self._warned_state = true
        self:warn("rule " .. tostring(rule.name) .. " cannot reset its state: the attack's search "
          .. "may have changed it")
      end
    end
  end
  local mu = self:honest_mean(c)
  local dist = math.sqrt(be_of(c):op("vec.sqdist")(out:pointer(), mu:pointer(), d))
  if dist ~= dist then dist = math.huge end     -- a NaN output is as far as it gets
  return dist, info or {}, out
end

return K
