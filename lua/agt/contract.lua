-- agt.contract — what a plugin table (a rule, an attack, an experiment) must look like, checked
-- once when it is loaded, and what a rule's aggregate may return, checked at each call.
--
--   local contract = require("agt.contract")
--   contract.rule(def, "my_rule.lua")          -- raises "my_rule.lua: requires: ..." or returns def
--   contract.attack(def, where)  contract.experiment(def, where, common_keys)
--   contract.rule_info(info, n, "my_rule.lua") -- the table aggregate returned
--
-- Every message names the file (or whatever `where` says) and the field, and says what was
-- expected: an unknown field is refused with the nearest known name ("field 'require' is not
-- part of a rule (did you mean 'requires'?)"), so a typo cannot silently drop a check.
-- Nothing here fills in defaults or changes the table: the loaders do that.
local C = {}

local function fail(where, field, fmt, ...)
  error(string.format("%s: %s: " .. fmt, where, field, ...), 0)
end

-- Levenshtein distance, for "did you mean".
local function distance(a, b)
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = { [0] = i }
    for j = 1, #b do
      local cost = a:sub(i, i) == b:sub(j, j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  return prev[#b]
end

-- The known name nearest to `name` (at most 3 edits away and fewer than its length, or one a
-- prefix of the other).
function C.nearest(name, known)
  local best, bd = nil, math.huge
  for _, k in ipairs(known) do
    local d = distance(name, k)
    if name:sub(1, #k) == k or k:sub(1, #name) == name then d = math.min(d, 1) end
    if d < bd or (d == bd and k < best) then best, bd = k, d end
  end
  if bd <= math.min(3, #name - 1) then return best end
end

local function keys_of(fields)
  local out = {}
  for k in pairs(fields) do out[#out + 1] = k end
  table.sort(out)
  return out
end

-- Refuses a key of t that is not in fields, naming the nearest known one.
local function no_unknown(t, fields, what, where)
  local known = keys_of(fields)
  local bad = {}
  for k in pairs(t) do
    if type(k) ~= "string" or not fields[k] then bad[#bad + 1] = tostring(k) end
  end
  table.sort(bad)
  if bad[1] then
    local near = C.nearest(bad[1], known)
    fail(where, bad[1], "is not a field of %s%s (known: %s)", what,
         near and string.format(" (did you mean '%s'?)", near) or "", table.concat(known, ", "))
  end
end

local function is_list_of(v, ty)
  if type(v) ~= "table" then return false end
  local n = 0
  for _ in pairs(v) do n = n + 1 end
  if n ~= #v then return false end
  for _, x in ipairs(v) do if type(x) ~= ty then return false end end
  return true
end

-- Checks each present field against its type: a Lua type name, or a function(v) -> ok, what.
local function typed(t, fields, where)
  for _, k in ipairs(keys_of(fields)) do
    local want, v = fields[k], t[k]
    if v ~= nil then
      if type(want) == "string" then
        if type(v) ~= want then fail(where, k, "expects a %s, got %s", want, type(v)) end
      else
        local ok, what = want(v)
        if not ok then fail(where, k, "expects %s, got %s", what, type(v) == "table" and "another table" or
          string.format("%s%s", type(v), (type(v) == "string" or type(v) == "number") and (" '" .. tostring(v) .. "'") or "")) end
      end
    end
  end
end

local ARG_FIELDS = { name = "string", default = function() return true end, doc = "string",
  type = function(v) return v == "string" or v == "integer" or v == "number" or v == "boolean",
    "'string', 'integer', 'number' or 'boolean'" end,
  choices = function(v) return is_list_of(v, "string") and #v > 0, "a non-empty list of strings" end,
  auto = "boolean", check = "function", default_text = "string" }

-- An `args` list: each entry {name=, default= | type=, doc=, ...}, names unique.
local function args_list(args, where)
  if type(args) ~= "table" then fail(where, "args", "expects a list of {name=, default=, doc=}, got %s", type(args)) end
  local seen = {}
  for i, a in ipairs(args) do
    local at = string.format("args[%d]", i)
    if type(a) ~= "table" then fail(where, at, "expects a table {name=, default=, doc=}, got %s", type(a)) end
    no_unknown(a, ARG_FIELDS, "an argument", where .. ": " .. at)
    if type(a.name) ~= "string" or a.name == "" then fail(where, at .. ".name", "expects a non-empty string") end
    typed(a, ARG_FIELDS, where .. ": " .. at)
    if a.default == nil and not a.type and not a.choices then
      fail(where, at, "'%s' needs a default or a type", a.name)
    end
    if seen[a.name] then fail(where, at .. ".name", "'%s' is given twice", a.name) end
    seen[a.name] = true
  end
  for k in pairs(args) do
    if type(k) ~= "number" then fail(where, "args", "expects a list, got the key '%s'", tostring(k)) end
  end
end

local function name_field(v) return v ~= "", "a non-empty string" end

C.RULE = {
  name = "string", aliases = function(v) return is_list_of(v, "string"), "a list of strings" end,
  presets = "table", kind = function(v) return v == "rule" or v == "pre", "'rule' or 'pre'" end,
  summary = "string", doc = "string", args = "table", requires = "table", output = "function",
  keeps_rows = "boolean", init = "function", aggregate = "function", state = "function",
  set_state = "function", reset = "function", coordinate = "function",
  devices = function(v) return is_list_of(v, "string"), "a list of device names ({\"cpu\", \"cuda\"})" end,
}

-- A rule file's table (lua/agt/aggregators.lua says what each field means).
function C.rule(def, where)
  where = where or "rule"
  if type(def) ~= "table" then error(string.format("%s: a rule file returns a table, got %s", where, type(def)), 0) end
  no_unknown(def, C.RULE, "a rule", where)
  typed(def, C.RULE, where)
  if def.name ~= nil then local ok, w = name_field(def.name); if not ok then fail(where, "name", "expects %s", w) end end
  if type(def.aggregate) ~= "function" then
    fail(where, "aggregate", "a rule needs aggregate = function(self, G, out, ctx) returning its info table")
  end
  if def.args ~= nil then args_list(def.args, where) end
  if def.requires ~= nil then
    local r = def.requires
    no_unknown(r, { text = true, check = true }, "requires", where .. ": requires")
    if type(r.text) ~= "string" then fail(where, "requires.text", "expects the requirement as text, e.g. \"n >= 2f+3\"") end
    if type(r.check) ~= "function" then fail(where, "requires.check", "expects function(n, f, args) -> ok [, why]") end
  end
  if def.kind == "pre" and type(def.output) ~= "function" then
    fail(where, "output", "a pre-aggregation step needs output = function(n, f, args) -> n2, f2")
  end
  if def.presets ~= nil then
    for k, v in pairs(def.presets) do
      if type(v) ~= "function" then fail(where, "presets." .. tostring(k), "expects function(n, f) -> args, got %s", type(v)) end
    end
  end
  return def
end

-- What aggregate returned: nil or a table; its `selected`, when there, a list of distinct
-- 1-based row indices within 1..n.
function C.rule_info(info, n, where)
  where = where or "rule"
  if info == nil then return info end
  if type(info) ~= "table" then
    fail(where, "aggregate", "returns its info as a table (or nothing), got %s '%s'", type(info), tostring(info))
  end
  local sel = info.selected
  if sel ~= nil then
    if type(sel) ~= "table" then fail(where, "aggregate: selected", "expects a list of row indices, got %s", type(sel)) end
    local seen = {}
    for i, r in ipairs(sel) do
      if type(r) ~= "number" or r ~= math.floor(r) or r < 1 or r > n then
        fail(where, "aggregate: selected", "holds rows 1..%d (1-based), got %s at position %d",
             n, tostring(r), i)
      end
      if seen[r] then fail(where, "aggregate: selected", "holds row %d twice", r) end
      seen[r] = true
    end
  end
  return info
end

C.ATTACK = {
  name = "string", kind = function(v) return v == "gradient" or v == "data", "'gradient' or 'data'" end,
  doc = "string", paper = "string", args = "table", apply = "function", init = "function",
  state = "function", set_state = "function",
  devices = function(v) return is_list_of(v, "string"), "a list of device names ({\"cpu\", \"cuda\"})" end,
  poison = function(v) return v == "label-flip" or v == "poison-data", "'label-flip' or 'poison-data'" end,
  shared = "table",
  needs_honest = function(v) return type(v) == "boolean" or type(v) == "function", "a boolean or function(self) -> boolean" end,
}

-- An attack file's table (lua/agt/attacks.lua says what each field means).
function C.attack(def, where)
  where = where or "attack"
  if type(def) ~= "table" then error(string.format("%s: an attack file returns a table, got %s", where, type(def)), 0) end
  no_unknown(def, C.ATTACK, "an attack", where)
  typed(def, C.ATTACK, where)
  if type(def.name) ~= "string" or def.name == "" then fail(where, "name", "an attack needs a non-empty name") end
  local kind = def.kind or "gradient"
  if kind == "gradient" and type(def.apply) ~= "function" then
    fail(where, "apply", "a gradient attack needs apply = function(self, c) writing the rows c.byz of c.G")
  end
  if kind == "data" and def.poison == nil then
    fail(where, "poison", "a data attack needs poison = 'label-flip' or 'poison-data'")
  end
  if def.args ~= nil then args_list(def.args, where) end
  return def
end

C.EXPERIMENT = {
  name = "string", doc = "string",
  shape = function(v) return is_list_of(v, "number") and #v > 0, "a list of numbers {C, H, W} (one example)" end,
  classes = function(v) return type(v) == "number" and v >= 2 and v == math.floor(v), "an integer number of classes >= 2" end,
  args = "table", defaults = "table", data = "function", model = "function", preprocess = "function",
}

-- An experiment file's table (lua/agt/experiments.lua says what each field means). common:
-- the list of keys every experiment takes, which its `defaults` may change.
function C.experiment(def, where, common)
  where = where or "experiment"
  if type(def) ~= "table" then error(string.format("%s: an experiment file returns a table, got %s", where, type(def)), 0) end
  no_unknown(def, C.EXPERIMENT, "an experiment", where)
  typed(def, C.EXPERIMENT, where)
  if type(def.name) ~= "string" or def.name == "" then fail(where, "name", "an experiment needs a non-empty name") end
  if def.shape == nil then fail(where, "shape", "an experiment needs shape = {C, H, W} (one example)") end
  if def.classes == nil then fail(where, "classes", "an experiment needs classes = its number of classes (>= 2)") end
  if def.data == nil then fail(where, "data", "an experiment needs data = function(args, D) returning the data set") end
  if def.model == nil then fail(where, "model", "an experiment needs model = function(nn, args) returning an nn model") end
  if def.args ~= nil then args_list(def.args, where) end
  if def.defaults ~= nil then
    local known = {}
    for _, k in ipairs(common or {}) do known[k] = true end
    for _, a in ipairs(def.args or {}) do known[a.name] = true end
    if common then no_unknown(def.defaults, known, "the experiment keys", where .. ": defaults") end
  end
  return def
end

return C
