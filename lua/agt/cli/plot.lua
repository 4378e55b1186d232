-- agt plot — draws runs (a metric against step and wall time, or several metrics and summary
-- tags in panels; runs overlaid and labelled by experiment, rule and attack) to SVG and PNG,
-- or the formats --format or the output's extension names (PNG, SVG, PDF).
--   agt plot runs/a runs/b/eval=krum-under-lie --metric top1-X-acc --output runs/compare
--   agt plot runs/a --metric top1-X-acc --metric loss --metric robust/byzantine_selected
local P = require("agt.plot")
local fs = require("agt.fs")

local usage = [[
Usage: agt plot [--metric NAME]... [--output PREFIX] [--format LIST] [--title TEXT] FILE[=LABEL]...

Draws the evaluation files written by 'agt run' (lines '<wall s>\t<step>\t<name>:<value>...';
a run's folder stands for its 'eval' file) as curves of one metric against the step and
against the wall time, every file overlaid, and writes PREFIX.svg and PREFIX.png (drawn with
cairo; --format adds PDF). A curve is labelled by LABEL, else by the experiment, rule and
attack names recorded beside the file (FILE.info), else by its path. Runs of one setting over
several seeds (a sweep's) are drawn as their mean with a band from the lowest to the highest.
Values that are not finite (a diverged run) are left out, with a warning.
  --metric NAME    metric to draw (default: the first one of the first file): an evaluation
                   metric, or a summary tag of the run's summary.csv (loss, learning_rate,
                   robust/byzantine_selected, robust/honest_norm, time/step, ...). Given
                   several times, each metric gets its panel against the step
  --output PREFIX  output path without extension (default: <directory of the first file>/plot);
                   with one (.png, .svg or .pdf), the one file of that format
  --format LIST    formats to write, comma-separated: png, svg, pdf (default: svg,png)
  --title TEXT     title (default: the metric's name)]]

return function(args)
  local files, opts = {}, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--help" or a == "-h" then
      io.stdout:write(usage, "\n")
      return 0
    end
    local name, val = a:match("^%-%-([^=]+)=(.*)$")
    if not name then name = a:match("^%-%-(.+)$") end
    if name then
      if name ~= "metric" and name ~= "output" and name ~= "title" and name ~= "format" then
        io.stderr:write("agt plot: unknown flag --", name, " (see agt plot --help)\n")
        return 2
      end
      if not val then
        val = args[i + 1]
        i = i + 1
        if not val then
          io.stderr:write("agt plot: --", name, ": expects a value\n")
          return 2
        end
      end
      if name == "metric" then
        opts.metrics = opts.metrics or {}
        opts.metrics[#opts.metrics + 1] = val
      elseif name == "format" then
        opts.formats = val
      else
        opts[name] = val
      end
    else
      -- an existing path is a path (a sweep's run folders have '=' in their names); else
      -- FILE=LABEL splits at the last '='
      local path, label
      if not fs.kind(a) then path, label = a:match("^(.*)=([^=]+)$") end
      files[#files + 1] = { path = path or a, label = label }
    end
    i = i + 1
  end
  if #files == 0 then
    io.stderr:write("agt plot: no evaluation file given\n", usage, "\n")
    return 2
  end
  local written = { pcall(P.plot, files, opts) }
  if not written[1] then
    io.stderr:write("agt plot: ", tostring(written[2]), "\n")
    return 1
  end
  for k = 2, #written do io.stdout:write("Plot: ", written[k], "\n") end
  return 0
end
