-- agt help [TOPIC] — lists the subcommands, or prints a topic's help (a module agt.TOPIC
-- with a help() function, e.g. aggregators, attacks, experiments).
local cli = require("agt.cli")
local P = require("agt.plugins")

local summaries = {
  help = "this list; 'agt help TOPIC' for aggregators, attacks, experiments, ...",
  bench = "benchmarks as JSON lines: 'agt bench NAME' or 'agt bench all'",
  run = "train: AggregaThor's runner.py flags, plus --seed ('agt run --help')",
  plot = "draw evaluation files to SVG and PNG ('agt plot --help')",
}

return function(args)
  local topic = args[1]
  if topic then
    local name = "agt." .. topic
    if package.searchpath(name, package.path) then
      local mod = require(name)
      if type(mod) == "table" and type(mod.help) == "function" then
        io.write(mod.help(), "\n")
        return 0
      end
    end
    if package.searchpath("agt.cli." .. topic, package.path) then
      io.write("see 'agt ", topic, " --help'\n")
      return 0
    end
    io.stderr:write("agt help: no help topic '" .. topic .. "'\n")
    return 1
  end
  io.write("usage: agt [options] [script.lua [args...]] | agt SUBCOMMAND [args...]\n",
           "options: -e CHUNK, -l MODULE, -i (REPL), -v (version), -h (help)\n\nsubcommands:\n")
  for _, name in ipairs(cli.list()) do
    local s = summaries[name]
    if not s then
      local f = io.open(P.find("commands", name))
      local first = f and f:read("*l") or ""
      if f then f:close() end
      s = first:match("^%-%-%s*agt%s+%S+%s*[^—]*—%s*(.*)$") or first:gsub("^%-%-%s*", "")
    end
    io.write(string.format("  %-10s %s\n", name, s))
  end
  return 0
end
