-- agt.aggregators — the registry of robust aggregation rules and the pre-aggregation pipeline.
--
--   local A = require("agt.aggregators")
--   A.list() -> sorted names;  A.help() -> text;  A.find(name) -> the rule file's table
--   local rule = A.new("nnm,bucketing,krum", n, f, {s = 2} [, {backend = "cpu", d = d, sources = }])
--                    (sources: element -> the text of a user's rule file, from A.user_files' paths
--                    in another process: the element is built from it instead of looked up here)
--   local info = rule:aggregate(G, out [, {step = k, rng = r}])   -- G: n×d f32, out: d f32
--   local out, info = rule:aggregate(G)                            -- out: a new d-vector
--   rule:state() -> string or nil;  rule:set_state(s)
--
-- A spec is a rule name or alias, a path to a rule file (ends in .lua or contains a /), or a
-- comma-separated chain "step,step,...,rule" of pre-aggregation steps ending with one rule.
-- Each step states what it does to n and f; the chain checks every element's requirement on
-- the n and f it will see, at construction, and refuses with a message naming the element,
-- the steps before it and the numbers: "krum (after bucketing) needs n >= 2f+3, got n=5 f=2".
--
-- Rule files (lua/aggregators/*.lua, or a user's file) return a table:
--   name, aliases = {...}, presets = {alias = function(n, f) -> args},
--   kind = "rule" | "pre", summary, doc (exact definition, extra memory),
--   args = { {name=, default= value or function(n, f), doc=}, ... },
--   requires = { text = "n >= 2f+3", check = function(n, f, args) -> bool },
--   output = function(n, f, args) -> n2, f2           (pre steps)
--   keeps_rows = true                                  (pre steps whose row i stays worker i)
--   init(self), aggregate(self, G, out, ctx) -> info, state(self), set_state(self, s),
--   reset(self) (back to the state before the first step: what rule:set_state(nil) does)
--   coordinate(self) -> kernel, p                      (per-coordinate rules: the kernel and
--                      its size argument, so that a host G can be uploaded to a device in
--                      chunks with the rule computed on each chunk as it arrives)
--   devices = {"cpu", "cuda"}                          (a user's rule file that only calls
--                      self:kernel may run on a device; built-in rules all do)
-- In aggregate, self.n, self.f, self.d, self.args are set (in init too, self.d when A.new was
-- given opts.d, as agt run does); the info returned is checked by agt.contract.rule_info. Every
-- rule file is checked against agt.contract when it is loaded. self:kernel(name, ...) calls the
-- kernel gar.<name> of the backend (agt.backend: agt_gar_<name> on the CPU, agt_gpu_gar_<name>
-- on CUDA) with the CPU kernel's arguments (src/gar.h) and raises its message on failure;
-- self:ptr(t) is the tensor's data pointer on its device. G, out and output matrices are
-- backend memory, while `selected`, `perm` and `iterations` are host memory; self:copy_in and
-- self:copy_out move a rule's host state to and from backend memory.
--
-- Devices: a rule runs where its G is (the backend of G's device, agt.backend), with the
-- pipeline's buffers allocated there; A.new(..., {backend = "cuda"}) (alias "gpu") fixes the
-- device: a host G is then uploaded (page-locked once, through its storage, and pipelined with
-- a lone per-coordinate rule), and a host out receives the result. Tensors on two devices
-- otherwise are an error naming both.
local F = require("agt.ffi")
local U = require("agt.util")
local kv = require("agt.kv")
local P = require("agt.plugins")
local B = require("agt.backend")
local T = require("agt.tensor")
local DEBUG = T.debug   -- AGT_DEBUG=1: self:kernel takes checked pointers (agt.tensor)
local contract = require("agt.contract")
local host = require("agt.host")
local ffi = F.ffi

local A = {}

-- The names a rule may be built for (backend = ...), whether or not a device is seen now.
function A.backends() return B.names() end


-- ---- the index of built-in rules --------------------------------------------------------
local index -- name or alias -> { def = table, preset = fn or nil }

-- user: the path of a user's file (found in AGT_PATH), nil for a built-in one
local function add_def(idx, def, where, user)
  contract.rule(def, where)
  if type(def.name) ~= "string" then error("rule file " .. where .. " has no name", 0) end
  idx[def.name] = { def = def, user = user }
  for _, a in ipairs(def.aliases or {}) do
    idx[a] = { def = def, preset = def.presets and def.presets[a], alias = a, user = user }
  end
end

local function get_index()
  if index then return index end
  index = {}
  for _, mod in ipairs(P.list("aggregators")) do
    local path, module = P.find("aggregators", mod)
    add_def(index, P.load("aggregators", mod, "rule file"), mod, module == nil and path or nil)
  end
  return index
end

function A.list()
  local names = {}
  for name, e in pairs(get_index()) do
    if not e.alias then names[#names + 1] = name end
  end
  table.sort(names)
  return names
end

local function is_path(spec) return spec:match("%.lua$") or spec:find("/", 1, true) end

-- The rule file's table for a name, alias or path (nil, message if none). sources: element ->
-- the text of its file (a user's rule file sent by another process, see A.user_files), taken
-- instead of looking the element up here.
function A.find(spec, sources)
  local text = sources and sources[spec]
  if text or is_path(spec) then
    local def = contract.rule(text and U.load_lua_text(text, spec, "rule file") or U.load_lua_file(spec, "rule file"), spec)
    if type(def.name) ~= "string" then def.name = spec:match("([^/]+)%.lua$") or spec end
    for _, a in ipairs(not is_path(spec) and def.aliases or {}) do
      if a == spec then return { def = def, preset = def.presets and def.presets[a], alias = a, user = true } end
    end
    return { def = def, user = true }
  end
  local e = get_index()[spec]
  if not e then
    return nil, string.format("unknown aggregation rule '%s' (known: %s)", spec,
                              table.concat(A.list(), ", "))
  end
  return e
end

-- ---- requirements -----------------------------------------------------------------------
local function check_requirement(def, label, n, f, args)
  if n < 1 then error(string.format("%s needs n >= 1, got n=%d f=%d", label, n, f), 0) end
  if f < 0 then error(string.format("%s needs f >= 0, got f=%d", label, f), 0) end
  local r = def.requires
  if r and r.check then
    local ok, why = r.check(n, f, args)
    -- a reason that starts with one of the rule's arguments is that argument's error, not the
    -- rule's requirement on n and f ("m=0 must be in 1..n", "tau must be > 0")
    local key = not ok and why and why:match("^([%w_-]+)[=%s]")
    if key and args and args[key] ~= nil then
      error(string.format("%s: argument %s (got %s:%s; n=%d f=%d)", label, why, key,
                          tostring(args[key]), n, f), 0)
    end
    if not ok then
      error(string.format("%s needs %s, got n=%d f=%d%s", label, r.text or "other n, f", n, f,
                          why and (" (" .. why .. ")") or ""), 0)
    end
  end
end

-- Arguments of one element: defaults (possibly functions of n, f), preset of the alias,
-- then the user's words for it.
local function element_args(entry, n, f, user, label)
  local preset = entry.preset and entry.preset(n, f) or {}
  local words = {}
  for k, v in pairs(preset) do words[k] = v end
  for k, v in pairs(user) do words[k] = v end
  return kv.parse(words, entry.def.args or {}, label .. " arguments", { n = n, f = f })
end

-- ---- rule objects -----------------------------------------------------------------------
local Element = {}
Element.__index = Element

function Element:ptr(t) return t:pointer() end
-- Host <-> backend copies (plain memcpy on the CPU backend): a rule that keeps host state
-- (centered clipping's previous output) moves it through these.
function Element:copy_in(dst, src_host, bytes) self.backend.write(dst, src_host, bytes) end
function Element:copy_out(dst_host, src, bytes) self.backend.read(dst_host, src, bytes) end
-- The C declaration of a rule kernel, from the FFI declarations, for error messages (every
-- backend's kernel takes the CPU kernel's arguments).
local function declaration(name)
  local text = U.read_file(host.root .. "/bindings/agt/cdef.lua") or ""
  local decl = text:match("[%w_]+ agt_gar_" .. name .. "%b()")
  return decl and decl:gsub("%s+", " ") or ("agt_gar_" .. name .. "(...)")
end
-- Under AGT_DEBUG=1 the arguments may be checked pointers (G.ptr): the raw ones, after checking
-- each still points inside its tensor (how far the kernel reads is the kernel's business).
local function unchecked_args(name, ...)
  local args = { ... }
  for i = 1, select("#", ...) do
    args[i] = T.unchecked(args[i], string.format("kernel '%s', argument %d", name, i), 3)
  end
  return unpack(args, 1, select("#", ...))
end
function Element:kernel(name, ...)
  local fn = self.backend.gar[name]
  if not fn then
    error(string.format("%s: gar.%s has no kernel on %s", self.name, name, self.backend.name), 2)
  end
  local ok, s
  if DEBUG then ok, s = pcall(fn, unchecked_args(name, ...)) else ok, s = pcall(fn, ...) end
  if not ok then
    -- LuaJIT's own message ("wrong number of arguments for function call") names neither
    error(string.format("%s: kernel '%s' called with %d argument(s) it cannot take (%s); it is %s",
      self.name, name, select("#", ...), tostring(s):gsub("^[^:]*:%d+: ", ""), declaration(name)), 2)
  end
  if s ~= 0 then error(self.name .. ": " .. F.errmsg(), 2) end
end
-- An int64 buffer of k entries, kept for reuse.
function Element:indices(k)
  if not self._idx or self._idx_n < k then
    self._idx = ffi.new("int64_t[?]", k)
    self._idx_n = k
  end
  return self._idx
end
-- 1-based Lua list from k 0-based indices.
function Element:list(p, k)
  local t = {}
  for i = 0, k - 1 do t[i + 1] = tonumber(p[i]) + 1 end
  return t
end

local function make_element(entry, n, f, user, label, d)
  local def = entry.def
  local el = setmetatable({}, { __index = function(t, k)
    local v = def[k]
    if v ~= nil then return v end
    return Element[k]
  end })
  el.def, el.name, el.n, el.f, el.d, el.backend = def, def.name, n, f, d, B.get("cpu")
  el.user = entry.user
  el.args = element_args(entry, n, f, user, label)
  check_requirement(def, label, n, f, el.args)
  if def.init then def.init(el) end
  return el
end

local Rule = {}
Rule.__index = Rule

-- Splits user args between elements: "step.key" targets one element, a plain key every
-- element that declares it; a key no element declares is refused.
local function split_args(entries, args)
  local per = {}
  for i = 1, #entries do per[i] = {} end
  for k, v in pairs(args or {}) do
    local target, key = tostring(k):match("^([^.]+)%.(.+)$")
    local used = false
    for i, e in ipairs(entries) do
      local name = e.def.name
      local want = key and (target == name or target == e.alias) and key or (not key and k)
      if want then
        for _, a in ipairs(e.def.args or {}) do
          if a.name == want then per[i][want] = v; used = true end
        end
      end
    end
    if not used then
      local known = {}
      for _, e in ipairs(entries) do
        for _, a in ipairs(e.def.args or {}) do known[#known + 1] = e.def.name .. "." .. a.name end
      end
      error(string.format("aggregator arguments: unknown key '%s' (known: %s)", tostring(k),
                          #known > 0 and table.concat(known, ", ") or "none"), 0)
    end
  end
  return per
end

-- The elements of a spec (one, or the chain's).
local function chain(spec)
  local parts = {}
  for p in (spec .. ","):gmatch("([^,]*),") do
    p = p:match("^%s*(.-)%s*$")
    if p == "" then
      error(string.format("aggregator '%s': an empty element in the chain (expected 'step,...,rule', "
                          .. "e.g. 'nnm,krum')", spec), 0)
    end
    parts[#parts + 1] = p
  end
  return parts
end

-- The elements of spec that are a user's rule files (a path, or a name or alias found in
-- AGT_PATH): element -> the file's path; what another process needs besides agt to build the
-- rule (A.new's opts.sources, the files' texts).
function A.user_files(spec)
  local files = {}
  for _, p in ipairs(chain(spec)) do
    if is_path(p) then
      files[p] = p
    else
      local e = get_index()[p]
      if e and e.user then files[p] = e.user end
    end
  end
  return files
end

function A.new(spec, n, f, args, opts)
  if type(spec) ~= "string" or spec == "" then
    error("aggregator: expects a rule name, a path or a chain 'step,...,rule', got " .. tostring(spec), 2)
  end
  if type(n) ~= "number" or n ~= math.floor(n) or type(f) ~= "number" or f ~= math.floor(f) then
    error(string.format("aggregator '%s': n and f must be integers, got n=%s f=%s", spec, tostring(n), tostring(f)), 2)
  end
  if n < 1 or f < 0 or f >= n then
    error(string.format("aggregator '%s': needs n >= 1 and 0 <= f < n, got n=%d f=%d", spec, n, f), 2)
  end
  opts = opts or {}
  local backend
  if opts.backend then
    local ok, be = pcall(B.get, opts.backend)
    if not ok then
      error(string.format("aggregator: unknown backend '%s' (known: %s, gpu)", tostring(opts.backend),
                          table.concat(A.backends(), ", ")), 2)
    end
    local avail, why = be:available()
    if not avail then error(string.format("aggregator '%s' on %s: %s", spec, be.name, tostring(why)), 2) end
    backend = be
  end
  local parts = chain(spec)
  local entries = {}
  for i, p in ipairs(parts) do
    local e, err = A.find(p, opts.sources)
    if not e then error(err, 0) end
    local kind = e.def.kind or "rule"
    if i < #parts and kind ~= "pre" then
      error(string.format("aggregator '%s': '%s' is a rule, not a pre-aggregation step; only the last element may be a rule", spec, p), 0)
    end
    if i == #parts and kind == "pre" then
      error(string.format("aggregator '%s': the chain must end with a rule, not the step '%s'", spec, p), 0)
    end
    entries[i] = e
  end
  local per = split_args(entries, kv.words(args, "aggregator arguments"))
  local self = setmetatable({ name = spec, n = n, f = f, elements = {}, shapes = {},
                              backend = backend, buffers = {} }, Rule)
  local cn, cf = n, f
  local before = {}
  for i, e in ipairs(entries) do
    local label = (e.alias or e.def.name) ..
        (#before > 0 and (" (after " .. table.concat(before, ",") .. ")") or "")
    local el = make_element(e, cn, cf, per[i], label, opts.d)
    self.elements[i] = el
    self.shapes[i] = { n = cn, f = cf }
    if e.def.kind == "pre" then
      cn, cf = e.def.output(cn, cf, el.args)
    end
    before[#before + 1] = e.alias or e.def.name
  end
  self.args = #entries == 1 and self.elements[1].args or nil
  if backend then self:_check_device(backend, 2) end
  return self
end

-- A user's rule file runs on a device only if it says it can (devices = {...}).
function Rule:_check_device(be, level)
  if be.name == "cpu" then return end
  for _, el in ipairs(self.elements) do
    local ok = not el.user
    for _, dv in ipairs(el.def.devices or {}) do ok = ok or B.get(dv) == be end
    if not ok then
      error(string.format("'%s' is a rule file of its own: it runs on the CPU, not on %s (a file "
                          .. "that only calls self:kernel may declare devices = {\"cpu\", \"%s\"})",
                          el.name, be.name, be.name), level + 1)
    end
  end
end

-- A buffer of the rule on be's device, kept for the next step while its shape holds.
function Rule:_buffer(key, shape, be)
  local buf = self.buffers[key]
  local numel = 1
  for _, v in ipairs(shape) do numel = numel * v end
  if not buf or #buf ~= numel or B.of(buf) ~= be then
    if buf then buf:free() end
    buf = T.new(shape, "f32", be.name)
    self.buffers[key] = buf
  end
  return buf
end

-- The pipeline on G's device: each step writes a buffer there, the last element writes out.
function Rule:_run(G, out, d, ctx, be)
  local X, keeps = G, true
  local nel = #self.elements
  for i = 1, nel - 1 do
    local el = self.elements[i]
    local buf = self:_buffer(i, { self.shapes[i + 1].n, d }, be)
    el.d, el.backend = d, be
    el:aggregate(X, buf, ctx)
    keeps = keeps and el.keeps_rows
    X = buf
  end
  local last = self.elements[nel]
  last.d, last.backend = d, be
  local info = contract.rule_info(last:aggregate(X, out, ctx), self.shapes[nel].n, last.name) or {}
  if nel > 1 and not keeps then info.selected = nil end
  return info
end

-- G (n x d) and out (d): f32 tensors. Runs on G's device, or on the rule's fixed backend.
function Rule:aggregate(G, out, ctx)
  -- rule:aggregate(G) makes its output on G's device and returns it, then the info
  local fresh = out == nil and T.is_tensor(G) and G.dtype == "f32"
  if fresh then out = T.new({ math.max(1, math.floor(#G / self.n)) }, "f32", B.of(G).name) end
  if not (T.is_tensor(G) and T.is_tensor(out)) or G.dtype ~= "f32" or out.dtype ~= "f32" then
    error(self.name .. ": aggregate takes f32 tensors G (n x d) and out (d)", 2)
  end
  local n = self.n
  local total = #G
  local d = total / n
  if d ~= math.floor(d) or d < 1 then
    error(string.format("%s: G has %d values, not n=%d rows", self.name, total, n), 2)
  end
  if #out ~= d then error(string.format("%s: out has %d values, expected d=%d", self.name, #out, d), 2) end
  ctx = ctx or {}
  local gb, ob = B.of(G), B.of(out)
  local be = self.backend or gb
  if gb ~= be and not (be.upload and gb.name == "cpu") then
    error(string.format("%s: G is on %s, the rule runs on %s: copy G with :to(\"%s\")", self.name,
                        G.device, be.name, be.name), 2)
  end
  if not self.backend and ob ~= be then
    error(string.format("%s: G and out are on two devices (%s and %s)", self.name, G.device,
                        out.device), 2)
  end
  if be ~= self._checked then self:_check_device(be, 2); self._checked = be end
  local o = ob == be and out or self:_buffer("out", { d }, be)
  local info
  if gb ~= be then
    -- a host G for a device rule: page-locked once (through its storage; a failure only makes
    -- the copies synchronous), uploaded in chunks; a lone per-coordinate rule runs on each
    -- chunk as it arrives, so its time hides under the copy
    G:pin()
    local Gd = self:_buffer("G", { n, d }, be)
    local el = self.elements[1]
    local kernel, p
    if #self.elements == 1 and el.def.coordinate then kernel, p = el.def.coordinate(el) end
    if kernel then
      be.upload(G:pointer(), n, d, Gd:pointer(), kernel, p, o:pointer())
      info = {}
    else
      be.upload(G:pointer(), n, d, Gd:pointer(), nil, 0, nil)
      info = self:_run(Gd, o, d, ctx, be)
    end
  else
    info = self:_run(G, o, d, ctx, be)
  end
  if o ~= out then out:copy(o) end
  if fresh then return out, info end
  return info
end

-- State of every element that has one, as one string ("" parts for stateless ones).
function Rule:state()
  local parts, any = {}, false
  for i, el in ipairs(self.elements) do
    local s = el.def.state and el.def.state(el) or nil
    if s then any = true end
    parts[i] = s and (#s .. ":" .. s) or "-"
  end
  if not any then return nil end
  return "agt-rule-state/1;" .. #parts .. ";" .. table.concat(parts, ";")
end

-- nil puts every element back to its state before the first step (what state() said then).
function Rule:set_state(s)
  if s == nil then
    for _, el in ipairs(self.elements) do
      if el.def.reset then el.def.reset(el) end
    end
    return
  end
  local head, count, rest = s:match("^(agt%-rule%-state/1);(%d+);(.*)$")
  if not head or tonumber(count) ~= #self.elements then
    error(self.name .. ": state is not a saved state of this rule", 2)
  end
  local pos = 1
  for i, el in ipairs(self.elements) do
    if rest:sub(pos, pos) == "-" then
      pos = pos + 2
    else
      local len = rest:match("^(%d+):", pos)
      if not len then error(self.name .. ": corrupt saved state", 2) end
      local start = pos + #len + 1
      local piece = rest:sub(start, start + tonumber(len) - 1)
      if not el.def.set_state then error(self.name .. ": element " .. el.name .. " takes no state", 2) end
      el.def.set_state(el, piece)
      pos = start + tonumber(len) + 1
    end
  end
end

function Rule:free()
  for _, b in pairs(self.buffers) do b:free() end
  self.buffers = {}
end

-- ---- help -------------------------------------------------------------------------------
function A.help()
  local lines = {
    "Aggregation rules (--aggregator NAME, a chain 'step,...,rule', or a path to a rule file;",
    "arguments as key:value words, 'step.key:value' for one element of a chain).",
    "Non-finite values: in every ordering NaN and ±inf count as +inf; a distance or norm",
    "that is not finite is +inf. Ties go to the lower row index (or the smaller value).",
    "",
  }
  local idx = get_index()
  for _, kind in ipairs({ "rule", "pre" }) do
    lines[#lines + 1] = kind == "rule" and "Rules:" or "Pre-aggregation steps (chain them before a rule):"
    for _, name in ipairs(A.list()) do
      local def = idx[name].def
      if (def.kind or "rule") == kind then
        local al = def.aliases and #def.aliases > 0 and (" (aliases: " .. table.concat(def.aliases, ", ") .. ")") or ""
        lines[#lines + 1] = string.format("  %s%s — needs %s", name, al, def.requires and def.requires.text or "n >= 1")
        for l in (def.doc or def.summary or ""):gmatch("[^\n]+") do lines[#lines + 1] = "      " .. l end
        if def.args and #def.args > 0 then lines[#lines + 1] = kv.help(def.args, "      ") end
      end
    end
    lines[#lines + 1] = ""
  end
  lines[#lines + 1] = "A rule of your own: see examples/custom_rule.lua and docs/aggregators.md."
  return table.concat(lines, "\n")
end

return A
