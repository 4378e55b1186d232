-- agt.repl — how the REPL shows values: tables pretty-printed with a depth and size limit,
-- cycles marked, keys sorted; tensors through their own tostring.
local R = { max_depth = 3, max_items = 40 }

local function key_repr(k)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") then return k end
  return "[" .. (type(k) == "string" and string.format("%q", k) or tostring(k)) .. "]"
end

local function repr(v, depth, seen, indent)
  local t = type(v)
  if t == "string" then return string.format("%q", v) end
  if t ~= "table" then return tostring(v) end
  local mt = getmetatable(v)
  if mt and mt.__tostring then return tostring(v) end
  if seen[v] then return "<cycle>" end
  if depth >= R.max_depth then return "{...}" end
  seen[v] = true
  local keys, n = {}, #v
  for k in pairs(v) do
    if not (type(k) == "number" and k >= 1 and k <= n and k == math.floor(k)) then keys[#keys + 1] = k end
  end
  table.sort(keys, function(a, b)
    local ta, tb = type(a), type(b)
    if ta ~= tb then return ta < tb end
    if ta == "number" or ta == "string" then return a < b end
    return tostring(a) < tostring(b)
  end)
  local parts, count = {}, 0
  local inner = indent .. "  "
  for i = 1, n do
    count = count + 1
    if count > R.max_items then parts[#parts + 1] = "..."; break end
    parts[#parts + 1] = repr(v[i], depth + 1, seen, inner)
  end
  for _, k in ipairs(keys) do
    count = count + 1
    if count > R.max_items then parts[#parts + 1] = "..."; break end
    parts[#parts + 1] = key_repr(k) .. " = " .. repr(v[k], depth + 1, seen, inner)
  end
  seen[v] = nil
  if #parts == 0 then return "{}" end
  local one = "{ " .. table.concat(parts, ", ") .. " }"
  if #one <= 78 and not one:find("\n") then return one end
  return "{\n" .. inner .. table.concat(parts, ",\n" .. inner) .. "\n" .. indent .. "}"
end

function R.format(v) return repr(v, 0, {}, "") end

function R.print(...)
  local n = select("#", ...)
  local out = {}
  for i = 1, n do out[i] = R.format((select(i, ...))) end
  io.write(table.concat(out, "\t"), "\n")
end

return R
