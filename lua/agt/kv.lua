-- agt.kv — the one parser of key:value arguments (rules, attacks, experiments, optimizers,
-- schedules, scripts) and of typed values (the `agt run` flags).
--
--   local kv = require("agt.kv")
--   local a = kv.parse({ "batch-size:64" }, spec, "--experiment-args (mnist)" [, {n = n, f = f}])
--   kv.words({ "k:v", ... }, what) -> { k = "v" }   (no spec: values stay strings)
--   kv.convert(entry, value) -> value, or nil, "expects an integer, got 'x'"
--   kv.help(spec, indent) -> one "name:default  doc" line per key
--
-- A spec is a list of entries { name =, default =, doc =, type =, choices =, auto =, check = }:
--   type     "string" | "integer" | "number" | "boolean"; when left out: "string" with choices,
--            else that of the default, a whole number being an "integer" (give type = "number"
--            for a real whose default happens to be whole);
--   default  a value, or function(n, f) -> value, evaluated with the env given to parse;
--   choices  the strings accepted; auto = true also accepts the word "auto" for any type;
--   check    function(value) -> ok, why: a refusal reads "<what>: '<key>' <why>, got <value>".
-- Arguments are nil, a list of "key:value" words, or a table key -> value (values of any type,
-- converted the same way). '_' in a key reads as '-'. Unknown keys are refused with the known
-- ones; every error starts with `what`.
local M = {}

local function canon(key) return (tostring(key):gsub("_", "-")) end

-- The type of a spec entry (see above); default: the default's value where it is a function.
function M.type_of(e, default)
  if e.type then return e.type end
  if e.choices then return "string" end
  local d = default
  if d == nil then d = e.default end
  if type(d) == "boolean" then return "boolean" end
  if type(d) == "number" then return d == math.floor(d) and "integer" or "number" end
  return "string"
end

-- "a, b or c"
function M.either(list)
  if #list <= 1 then return tostring(list[1] or "") end
  return table.concat(list, ", ", 1, #list - 1) .. " or " .. list[#list]
end

local TRUE = { ["true"] = true, ["1"] = true, yes = true, on = true }
local FALSE = { ["false"] = true, ["0"] = true, no = true, off = true }

-- value converted to the entry's type; nil, why (without the key or flag name) if it cannot be.
function M.convert(e, value, default)
  local ty = M.type_of(e, default)
  if e.auto and value == "auto" then return "auto" end
  if ty == "integer" or ty == "number" then
    local x = (type(value) == "number" or type(value) == "string") and tonumber(value) or nil
    if x == nil or x ~= x then
      return nil, string.format("expects %s%s, got '%s'", ty == "integer" and "an integer" or "a number",
                                e.auto and " or 'auto'" or "", tostring(value))
    end
    if ty == "integer" and (x ~= math.floor(x) or math.abs(x) == math.huge) then
      return nil, string.format("expects an integer, got '%s'", tostring(value))
    end
    if math.abs(x) == math.huge and not e.inf then   -- (an entry may accept it: inf = true)
      return nil, string.format("expects a finite number, got '%s'", tostring(value))
    end
    return x
  elseif ty == "boolean" then
    if type(value) == "boolean" then return value end
    local v = type(value) == "string" and value:lower() or tostring(value)
    if TRUE[v] then return true end
    if FALSE[v] then return false end
    return nil, string.format("expects true or false, got '%s'", tostring(value))
  elseif ty == "string" then
    if type(value) == "number" then value = tostring(value) end
    if type(value) ~= "string" then return nil, string.format("expects a string, got %s", type(value)) end
    if e.choices then
      for _, c in ipairs(e.choices) do if c == value then return value end end
      return nil, string.format("expects %s, got '%s'", M.either(e.choices), value)
    end
    return value
  end
  error(string.format("key:value spec '%s': unknown type '%s'", tostring(e.name), tostring(ty)), 2)
end

-- A list of key:value words (or a table, returned as it is) as a table key -> string.
function M.words(args, what)
  if args == nil then return {} end
  if type(args) ~= "table" then
    error(string.format("%s: expected a list of key:value words or a table, got %s", what, type(args)), 0)
  end
  if #args == 0 then return args end
  local t = {}
  for _, w in ipairs(args) do
    local k, v = tostring(w):match("^([^:]+):(.*)$")
    if not k then error(string.format("%s: expected key:value, got '%s'", what, tostring(w)), 0) end
    local key = canon(k)
    for prev in pairs(t) do
      if canon(prev) == key then
        error(string.format("%s: '%s' given twice ('%s:%s' and '%s')", what, key, prev, t[prev], w), 0)
      end
    end
    t[k] = v
  end
  return t
end

-- Parses args against spec; returns name -> value with every default filled in.
function M.parse(args, spec, what, env)
  what = what or "arguments"
  env = env or {}
  local by_name, names = {}, {}
  for _, e in ipairs(spec) do by_name[e.name] = e; names[#names + 1] = e.name end
  local defaults = {}
  for _, e in ipairs(spec) do
    local d = e.default
    if type(d) == "function" then d = d(env.n, env.f) end
    defaults[e.name] = d
  end
  local out = {}
  for k, v in pairs(M.words(args, what)) do
    local key = canon(k)
    local e = by_name[key]
    if not e then
      error(string.format("%s: unknown key '%s' (known: %s)", what, key,
                          #names > 0 and table.concat(names, ", ") or "none"), 0)
    end
    local x, why = M.convert(e, v, defaults[key])
    if x == nil then error(string.format("%s: '%s' %s", what, key, why), 0) end
    if e.check then
      local ok, msg = e.check(x)
      if not ok then error(string.format("%s: '%s' %s, got %s", what, key, msg, tostring(x)), 0) end
    end
    out[key] = x
  end
  for _, e in ipairs(spec) do
    if out[e.name] == nil then out[e.name] = defaults[e.name] end
  end
  return out
end

-- One line per key: "<indent>name:default  doc" (a default that depends on n and f shows its
-- default_text, or says so).
function M.help(spec, indent)
  indent = indent or "  "
  local lines = {}
  for _, e in ipairs(spec) do
    local d = e.default
    if type(d) == "function" then d = e.default_text or "depends on n, f" end
    if d == nil then d = "none" end
    lines[#lines + 1] = string.format("%s%s:%s  %s", indent, e.name, tostring(d), e.doc or "")
  end
  return table.concat(lines, "\n")
end

return M
