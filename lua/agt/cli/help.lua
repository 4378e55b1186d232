-- agt help [TOPIC] — lists the subcommands and the help topics, or prints a topic: a module's
-- help (aggregators, attacks, experiments, optim, lr, data, gpu, and their synonyms), a rule,
-- attack or experiment by name, or a subcommand's usage. The REPL's help(x) reads the same texts.
local cli = require("agt.cli")
local P = require("agt.plugins")
local FL = require("agt.cli.run.flags")
local A = require("agt.aggregators")
local K = require("agt.attacks")
local E = require("agt.experiments")

local M = {}

-- Topic -> { module, what it covers }, in the order the list shows them.
M.topics = {
  { "aggregators", "agt.aggregators", "the robust aggregation rules and pre-aggregation steps, exactly defined" },
  { "attacks", "agt.attacks", "the Byzantine attacks, with their sources and arguments" },
  { "experiments", "agt.experiments", "the experiments (model + data set) and their key:value arguments" },
  { "optim", "agt.optim", "the optimizers and their arguments" },
  { "lr", "agt.lr", "the learning-rate schedules and their arguments" },
  { "data", "agt.data", "the data sets: where they are read from, sizes and SHA-256" },
  { "gpu", "agt.gpu", "the GPU rules: what runs on the device and how results compare" },
}

-- Other words for the topics.
M.synonyms = {
  rules = "aggregators", rule = "aggregators", aggregator = "aggregators", gar = "aggregators",
  gars = "aggregators", attack = "attacks", byzantine = "attacks", experiment = "experiments",
  models = "experiments", model = "experiments", optimizers = "optim", optimizer = "optim",
  optimiser = "optim", optimisers = "optim", ["learning-rate"] = "lr", ["learning-rates"] = "lr",
  schedules = "lr", schedule = "lr", datasets = "data", dataset = "data", cuda = "gpu",
}

local summaries = {
  help = "this list; 'agt help TOPIC' prints a topic",
  bench = "benchmarks as JSON lines: 'agt bench NAME' or 'agt bench all'",
  run = "train: AggregaThor's runner.py flags, plus --seed ('agt run --help')",
  keygen = "the CURVE keys of a distributed run's cluster ('agt keygen CLUSTER DIR')",
  plot = "draw evaluation files to SVG and PNG, or PDF ('agt plot --help')",
  sweep = "a grid of agt runs in parallel, resumable; results.csv and a heat map ('agt sweep --help')",
  check = "put a rule, attack or experiment file through its checks ('agt check --help')",
  worker = "a worker process of a distributed run ('agt worker --help', docs/distributed.md)",
  deploy = "start a distributed run's PS and workers over SSH ('agt deploy --help')",
}

local HELP = [[
agt help             the subcommands and the help topics
agt help TOPIC       one topic: aggregators (rules), attacks, experiments, optim (optimizers),
                     lr (learning rates), data (datasets), gpu; a rule, attack or experiment by
                     name (agt help krum); a subcommand (agt help run = agt run --help)
In the REPL, help(x) and ?x print the same texts, and help on values (modules, rules,
tensors, functions).]]

local function doc_of(kind, def, extra)
  local lines = { string.format("%s (%s)%s", def.name, kind, extra or "") }
  if def.summary then lines[#lines + 1] = def.summary end
  if def.doc then lines[#lines + 1] = def.doc end
  if def.paper then lines[#lines + 1] = "source: " .. def.paper end
  return table.concat(lines, "\n")
end

-- The text of a topic, or nil and why.
function M.text(topic)
  topic = M.synonyms[topic] or topic
  if topic == "help" then return HELP end
  for _, t in ipairs(M.topics) do
    if t[1] == topic then return require(t[2]).help() end
  end
  if topic == "run" then return FL.help() end
  if P.find("commands", topic) then return string.format("see 'agt %s --help'", topic) end
  local e = A.find(topic)
  if e then
    local def = e.def
    return doc_of("aggregation rule", def, def.requires and ("; needs " .. def.requires.text) or "")
  end
  local ok, def = pcall(K.load, topic)
  if ok and def then return doc_of(def.kind == "data" and "data attack" or "attack", def) end
  for _, name in ipairs(E.list()) do
    if name == topic then
      local ok2, exp = pcall(E.definition, name)
      if ok2 and exp then return doc_of("experiment", exp) end
    end
  end
  return nil, string.format("no help topic '%s' (agt help lists them)", topic)
end

function M.list()
  local o = { "usage: agt [options] [script.lua [args...]] | agt SUBCOMMAND [args...]",
    "options: -e CHUNK, -l MODULE, -i (REPL), -v (version), -h (help)", "", "subcommands:" }
  for _, name in ipairs(cli.list()) do
    local s = summaries[name]
    if not s then
      local path = P.find("commands", name)
      local f = path and io.open(path, "r")
      local first = f and f:read("*l") or ""
      if f then f:close() end
      s = first:match("^%-%-%s*agt%s+%S+%s*[^—]*—%s*(.*)$") or first:gsub("^%-%-%s*", "")
    end
    o[#o + 1] = string.format("  %-12s %s", name, s)
  end
  o[#o + 1] = ""
  o[#o + 1] = "help topics ('agt help TOPIC'; also a rule, attack or experiment name):"
  for _, t in ipairs(M.topics) do o[#o + 1] = string.format("  %-12s %s", t[1], t[3]) end
  o[#o + 1] = string.format("  %-12s %s", "help", "how agt help and the REPL's help(x) work")
  return table.concat(o, "\n")
end

return setmetatable(M, { __call = function(_, args)
  local topic = args[1]
  if not topic then
    io.write(M.list(), "\n")
    return 0
  end
  local text, why = M.text(topic)
  if not text then
    io.stderr:write("agt help: ", why, "\n")
    return 1
  end
  io.write(text, "\n")
  return 0
end })
