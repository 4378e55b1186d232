-- attack_sweep.lua — a short grid of aggregation rules × attacks, n = 11 workers of which r
-- attack (the rules told f), on the fashion-mnist experiment; prints the final top-1 test
-- accuracy of each run as a table ("diverged" when the model's loss became NaN).
--
--   ./agt examples/attack_sweep.lua                       # the default grid
--   ./agt examples/attack_sweep.lua steps:200 f:3 r:3 rules:average,median \
--         attacks:none,reverse,reverse/factor=100,lie
--
-- An attack is written NAME or NAME/key=value/key=value (its --attack-args); "none" means
-- no worker attacks. Every run uses the same seed, so the honest workers see the same data.
local kv = require("agt.kv")
local S = require("agt.session")

local spec = {
  { name = "experiment", default = "fashion-mnist", doc = "experiment to train" },
  { name = "experiment-args", default = "", doc = "its key=value arguments, '/'-separated" },
  { name = "steps", default = 300, type = "integer", doc = "training steps of each run" },
  { name = "n", default = 11, type = "integer", doc = "workers" },
  { name = "f", default = 2, type = "integer", doc = "Byzantine workers the rules are told about" },
  { name = "r", default = 2, type = "integer", doc = "workers that really attack" },
  { name = "seed", default = 1, type = "integer", doc = "seed of every run" },
  { name = "rules", default = "average,krum,median", doc = "comma-separated rules (or pipelines joined with '+')" },
  { name = "attacks", default = "none,reverse,reverse/factor=100,lie,empire,optimal-lie,minmax,fang",
    doc = "comma-separated attacks, NAME/key=value/..." },
  { name = "optimizer-args", default = "", doc = "key=value arguments of the optimizer, '/'-separated" },
  { name = "learning-rate-args", default = "initial-rate=0.05",
    doc = "key=value arguments of the (fixed) schedule, '/'-separated; 0.05 learns within a few hundred steps" },
}

local words = {}
for i = 1, #(arg or {}) do words[#words + 1] = arg[i] end
if words[1] == "help" or words[1] == "--help" then
  print("usage: agt examples/attack_sweep.lua [key:value ...]")
  for _, s in ipairs(spec) do print(string.format("  %s:%s  %s", s.name, tostring(s.default), s.doc)) end
  return
end
local o = kv.parse(words, spec, "attack_sweep")

local function split(s, sep)
  local out = {}
  for part in s:gmatch("[^" .. sep .. "]+") do out[#out + 1] = part end
  return out
end

-- "a=1/b=2" -> { "a:1", "b:2" }
local function kv_words(s)
  local out = {}
  for _, w in ipairs(split(s, "/")) do out[#out + 1] = (w:gsub("=", ":", 1)) end
  return out
end

local rules = split(o.rules, ",")
local attacks = {}
for _, a in ipairs(split(o.attacks, ",")) do
  local parts = split(a, "/")
  local name = table.remove(parts, 1)
  attacks[#attacks + 1] = { label = a, name = name, args = kv_words(table.concat(parts, "/")) }
end

local function one(rule, atk)
  local opts = {
    experiment = o.experiment, experiment_args = kv_words(o["experiment-args"]),
    aggregator = rule:gsub("%+", ","),
    nb_workers = o.n, nb_decl_byz_workers = o.f, max_step = o.steps, seed = o.seed,
    evaluation_delta = -1, evaluation_period = -1, summary_dir = "-", evaluation_file = "-",
    quiet = true, optimizer_args = kv_words(o["optimizer-args"]),
    learning_rate_args = kv_words(o["learning-rate-args"]),
  }
  if atk.name ~= "none" then
    opts.attack, opts.attack_args, opts.nb_real_byz_workers = atk.name, atk.args, o.r
  end
  local ok, s = pcall(S.new, opts)
  if not ok then return "error", tostring(s) end
  local ran, err = pcall(s.run, s)
  s:close()
  if not ran then
    if tostring(err):find("diverged", 1, true) then return "diverged" end
    return "error", tostring(err)
  end
  local m = s.last_metrics and s.last_metrics[1]
  return m and string.format("%.3f", m[2]) or "?"
end

local col = 8
for _, r in ipairs(rules) do col = math.max(col, #r + 2) end
local first = 24
for _, a in ipairs(attacks) do first = math.max(first, #a.label + 2) end

io.write(string.format("%s, n=%d f=%d r=%d, %d steps, seed %d: final top-1 test accuracy\n",
  o.experiment, o.n, o.f, o.r, o.steps, o.seed))
local header = string.format("%-" .. first .. "s", "attack \\ rule")
for _, r in ipairs(rules) do header = header .. string.format("%" .. col .. "s", r) end
io.write(header, "\n", string.rep("-", #header), "\n")
io.flush()
local errors = {}
for _, a in ipairs(attacks) do
  local line = string.format("%-" .. first .. "s", a.label)
  for _, r in ipairs(rules) do
    local t0 = os.time()
    local cell, err = one(r, a)
    io.stderr:write(string.format("  %s × %s: %s (%d s)\n", r, a.label, cell, os.time() - t0))
    if err then errors[#errors + 1] = string.format("%s × %s: %s", r, a.label, err) end
    line = line .. string.format("%" .. col .. "s", cell)
  end
  io.write(line, "\n")
  io.flush()
end
for _, e in ipairs(errors) do io.stderr:write(e, "\n") end
