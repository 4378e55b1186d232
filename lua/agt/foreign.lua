-- agt.foreign — agt's rules and attacks for a program in another language (the Python package
-- in bindings/python), over memory that program owns.
--
-- Reached through libagt.so's agt_lua_call (bindings/embed.h): call(fn, request) runs M[fn] on
-- one JSON object and answers one JSON object. The rules and attacks are the same Lua files as
-- under ./agt, built by agt.aggregators and agt.attacks: names, aliases, argument parsing,
-- the requirements on n and f and their messages are theirs, not copies.
--
--   info {}                                   -> {version, features, gpu, gpu_why, rules, attacks}
--   rule_new {spec, n, f, args = {k = "v"}, device = "cpu"|"cuda"}   -> {id}
--   rule_aggregate {id, G, d, out [, byzantine = {0-based rows}]}
--                                             -> {selected?, admitted?} (0-based rows)
--   rule_reset {id}   rule_free {id}
--   attack {name, H, h, d, f, out, args, seed, step [, rule, rule_args]} -> {info, warnings}
--
-- G, out and H are addresses (float32, row-major, contiguous; device addresses for "cuda"),
-- used in place: G (n x d) is read where it is, out (d) written where it is. An attack reads
-- the h honest rows H (h x d) and writes the f Byzantine rows into out (f x d).
-- Misuse the caller can fix (an unknown rule, n and f that a rule refuses, a bad argument)
-- answers {error = message, kind = "value"}; a failure while computing {error, kind = "runtime"}.
local ffi = require("ffi")
local cjson = require("cjson")
local F = require("agt.ffi")
local A = require("agt.aggregators")
local K = require("agt.attacks")
local T = require("agt.tensor")
local B = require("agt.backend")
local C = F.C

local M = {}

-- ---- answers ----------------------------------------------------------------------------
-- A small JSON writer: numbers with all their digits (cjson keeps 14), Lua lists as arrays
-- (empty ones too, marked with list()), other tables as objects.
local LIST = {}
local function list(t) return setmetatable(t or {}, LIST) end

local encode
local function encode_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    local esc = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\t"] = "\\t", ["\r"] = "\\r" }
    return esc[c] or string.format("\\u%04x", c:byte())
  end) .. '"'
end
function encode(v)
  local ty = type(v)
  if ty == "nil" then return "null" end
  if ty == "boolean" then return tostring(v) end
  if ty == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return "null" end
    if v == math.floor(v) and math.abs(v) < 2 ^ 53 then return string.format("%d", v) end
    return string.format("%.17g", v)
  end
  if ty == "string" then return encode_string(v) end
  if ty == "table" then
    local parts = {}
    if getmetatable(v) == LIST or #v > 0 then
      for i = 1, #v do parts[i] = encode(v[i]) end
      return "[" .. table.concat(parts, ",") .. "]"
    end
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = tostring(k) end
    table.sort(keys)
    for i, k in ipairs(keys) do parts[i] = encode_string(k) .. ":" .. encode(v[k]) end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  return encode_string(tostring(v))
end

-- Errors the caller can fix carry kind "value"; the message loses Lua's "file:line: " prefix.
local function fail(kind, msg)
  error({ kind = kind, msg = tostring(msg):gsub("^[^:\n]*%.lua:%d+: ", "") }, 0)
end
local function guarded(kind, fn, ...)
  local ok, r = pcall(fn, ...)
  if not ok then
    if type(r) == "table" and r.kind then error(r, 0) end
    fail(kind, r)
  end
  return r
end

local function int(v, what)
  if type(v) ~= "number" or v ~= math.floor(v) then fail("value", what .. " must be an integer, got " .. tostring(v)) end
  return v
end
local function address(v, what)
  if type(v) ~= "number" or v <= 0 or v ~= math.floor(v) then fail("value", what .. ": not an address") end
  return ffi.cast("float *", ffi.cast("uintptr_t", v))
end

-- Rule names as the CLI spells them; a Python user may write '_' for '-' (not in paths).
local function canon_spec(spec)
  if type(spec) ~= "string" or spec == "" then fail("value", "spec must be a rule name or a chain 'step,...,rule'") end
  local parts = {}
  for p in spec:gmatch("[^,]+") do
    p = p:match("^%s*(.-)%s*$")
    if not (p:match("%.lua$") or p:find("/", 1, true)) then p = p:gsub("_", "-") end
    parts[#parts + 1] = p
  end
  return table.concat(parts, ",")
end

-- Argument words as the CLI passes them ("key:value"), so that casts and checks are the CLI's.
local function words(args)
  local w = {}
  for k, v in pairs(args or {}) do w[#w + 1] = tostring(k) .. ":" .. tostring(v) end
  table.sort(w)
  return w
end

-- ---- memory the caller owns, as the rules take it ------------------------------------------
-- A tensor over the caller's address (agt_tensor_wrap: never freed by agt), on its device.
local function view(device, p, shape)
  return T.wrap(p, shape, "f32", device)
end

-- ---- requests ---------------------------------------------------------------------------
function M.info()
  local ok, why = true, nil
  if C.agt_gpu_available() == 0 then
    local buf = ffi.new("char[256]")
    ok = C.agt_gpu_describe(buf, 256) == 0
    why = not ok and F.errmsg() or nil
  end
  return {
    version = ffi.string(C.agt_version()), features = ffi.string(C.agt_build_features()),
    gpu = ok, gpu_why = why, rules = list(A.list()), attacks = list(K.list()),
  }
end

local rules, next_id = {}, 1

function M.rule_new(q)
  local spec, n, f = canon_spec(q.spec), int(q.n, "n"), int(q.f, "f")
  local device = q.device or "cpu"
  local r
  if device == "cpu" then
    r = guarded("value", A.new, spec, n, f, words(q.args))
  elseif device == "cuda" then
    local ok, why = B.get("cuda"):available()
    if not ok then fail("runtime", why) end
    r = guarded("value", A.new, spec, n, f, words(q.args), { backend = "cuda" })
  else
    fail("value", "device must be 'cpu' or 'cuda', got " .. tostring(device))
  end
  local id = next_id
  next_id = next_id + 1
  rules[id] = { rule = r, device = device, n = n }
  return { id = id }
end

local function get(q)
  local e = rules[q.id]
  if not e then fail("value", "no rule " .. tostring(q.id) .. " (freed?)") end
  return e
end

function M.rule_aggregate(q)
  local e = get(q)
  local d = int(q.d, "d")
  local G = view(e.device, address(q.G, "G"), { e.n, d })
  local out = view(e.device, address(q.out, "out"), { d })
  local info = guarded("runtime", e.rule.aggregate, e.rule, G, out)
  local ans = {}
  if info.selected then
    local byz = {}
    for _, i in ipairs(q.byzantine or {}) do byz[i + 1] = true end
    local sel, adm = list(), list()
    for _, i in ipairs(info.selected) do
      sel[#sel + 1] = i - 1
      if byz[i] then adm[#adm + 1] = i - 1 end
    end
    ans.selected = sel
    if q.byzantine then ans.admitted = adm end
  end
  return ans
end

function M.rule_reset(q) get(q).rule:set_state(nil); return {} end

function M.rule_free(q)
  local e = rules[q.id]
  if e then
    e.rule:free()
    rules[q.id] = nil
  end
  return {}
end

function M.attack(q)
  local h, d, f = int(q.h, "h"), int(q.d, "d"), int(q.f, "f")
  local n = h + f
  local H, out = address(q.H, "H"), address(q.out, "out")
  local rule
  if q.rule then rule = guarded("value", A.new, canon_spec(q.rule), n, f, words(q.rule_args)) end
  local warnings = list()
  local atk = guarded("value", K.new, tostring(q.name):gsub("_", "-"), words(q.args),
    { n = n, f = f, r = f, rule = rule, seed = q.seed or 0,
      warn = function(m) warnings[#warnings + 1] = m end })
  if atk.kind ~= "gradient" then
    fail("value", "attack " .. atk.name .. " poisons the training data, not the gradients: "
         .. "it is not a function of the honest rows")
  end
  local G = T.new({ n, d })
  ffi.copy(G.raw, H, 4 * h * d)
  local byz, honest = {}, {}
  for i = 1, h do honest[i] = i end
  for i = h + 1, n do byz[#byz + 1] = i end
  local info = guarded("runtime", atk.apply, atk,
    { G = G, byz = byz, honest = honest, step = q.step or 0 })
  ffi.copy(out, G.raw + h * d, 4 * f * d)
  G:free()
  if rule then rule:free() end
  local plain = {}
  for k, v in pairs(info) do
    if type(v) == "number" or type(v) == "string" or type(v) == "boolean" then plain[k] = v end
  end
  return { info = plain, warnings = warnings }
end

-- The one entry of agt_lua_call.
function M.call(fn, request)
  local handler = M[fn]
  if type(handler) ~= "function" or fn == "call" then
    return encode({ error = "agt: no request '" .. tostring(fn) .. "'", kind = "value" })
  end
  local ok, q = pcall(cjson.decode, request)
  if not ok or type(q) ~= "table" then
    return encode({ error = "agt: request is not a JSON object: " .. tostring(q), kind = "value" })
  end
  local ok2, ans = pcall(handler, q)
  if not ok2 then
    if type(ans) == "table" and ans.kind then return encode({ error = ans.msg, kind = ans.kind }) end
    error(ans, 0) -- a bug of agt's own: the caller reports it with the traceback
  end
  return encode(ans)
end

return M
