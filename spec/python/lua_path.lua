-- lua_path.lua — agt's Lua path for the Python tests: ./agt spec/python/lua_path.lua MANIFEST.json
-- runs every case of the manifest the way a run of ./agt does (agt.aggregators' A.new and
-- rule:aggregate; agt.attacks' K.new and attack:apply with the last f of n workers Byzantine)
-- on G read from a raw float32 file, and writes the outputs as raw float32 files (the error
-- message in OUT.err when the rule or attack refuses), for the tests to compare bit for bit.
--   rule case:   {rule = spec, n, f, d, args = {"k:v"...}, input, output, calls}
--   attack case: {attack = name, n, f, d, args, rule?, rule_args?, seed, step, input, output}
local ffi = require("ffi")
local cjson = require("cjson")
local A = require("agt.aggregators")
local K = require("agt.attacks")
local T = require("agt.tensor")
local U = require("agt.util")

local function write(path, s)
  local fh = assert(io.open(path, "wb"))
  fh:write(s)
  fh:close()
end

local function load(path, count)
  local s = U.read_file(path)
  assert(#s == 4 * count, path .. ": expected " .. count .. " floats")
  local t = T.new({ count })
  ffi.copy(t.ptr, s, #s)
  return t
end

local function run_rule(c)
  local rule = A.new(c.rule, c.n, c.f, c.args)
  local G = load(c.input, c.n * c.d)
  local out = T.new({ c.d })
  local parts = {}
  for _ = 1, c.calls or 1 do
    rule:aggregate(G, out)
    parts[#parts + 1] = ffi.string(out.ptr, 4 * c.d)
  end
  return table.concat(parts)
end

local function run_attack(c)
  local rule = c.rule and A.new(c.rule, c.n, c.f, c.rule_args) or nil
  local atk = K.new(c.attack, c.args, { n = c.n, f = c.f, rule = rule, seed = c.seed,
                                        warn = function() end })
  local G = T.new({ c.n, c.d })
  local h = c.n - c.f
  local H = load(c.input, h * c.d)
  ffi.copy(G.ptr, H.ptr, 4 * h * c.d)
  atk:apply({ G = G, step = c.step })
  return ffi.string(G.ptr + h * c.d, 4 * c.f * c.d)
end

local cases = cjson.decode(U.read_file(arg[1]))
for _, c in ipairs(cases) do
  local ok, r = pcall(c.rule and not c.attack and run_rule or run_attack, c)
  if ok then write(c.output, r) else write(c.output .. ".err", tostring(r)) end
end
