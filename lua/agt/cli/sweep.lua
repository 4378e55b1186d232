-- agt sweep — a grid of `agt run`s: a flag given several times is an axis; runs in parallel,
-- resumable, one results.csv, mean ± std over seeds and a rule × attack heat map.
local sweep = require("agt.sweep")

local usage = [[
Usage: agt sweep --out DIR [--jobs N] [--metric NAME] <agt run flags>

Runs every combination of the values of the agt run flags given more than once (the axes), the
other flags passed to every run as they are. Each run is a child 'agt run' in its own folder
DIR/<axis=value_...> (its evaluation file, checkpoints, summaries, log and command), N at a
time (default: one per core), each with cores/N threads. A finished run is not run again: the
same command after an interruption runs what is left. Then it writes
  DIR/results.csv   one row per run: its axis values, status (done, diverged, failed), the
                    final and best value of the metric, the last step, steps/s, its folder
  DIR/summary.csv   one row per setting of the axes but --seed: mean and std over the seeds
  DIR/table.txt     attacks (rows) x rules (columns), mean ± std, as printed at the end
  DIR/heatmap.svg, DIR/heatmap.png   the same table as a heat map

  --out DIR      the sweep's folder (required)
  --jobs N       runs at once (default: the number of cores)
  --metric NAME  the evaluation metric reported (default: the run's first, the top-1 accuracy)

An axis value of --experiment, --aggregator, --attack, --optimizer or --learning-rate may carry
key:value words after its name: '--attack reverse factor:100' runs reverse with --attack-args
factor:100. '--attack none' is the attack-free cell: run without --attack and with
--nb-real-byz-workers 0. --checkpoint-dir, --evaluation-file, --summary-dir, --stdout-to,
--stderr-to, --quiet and --progress are the sweep's own. Example (2 x 3 x 2 = 12 runs):

  agt sweep --out runs/sweep --experiment fashion-mnist --nb-workers 11 \
            --nb-decl-byz-workers 2 --nb-real-byz-workers 2 --max-step 300 \
            --learning-rate-args initial-rate:0.05 --evaluation-period -1 \
            --aggregator average --aggregator krum \
            --attack none --attack lie --attack reverse factor:100 --seed 1 --seed 2

From Lua: require("agt.sweep").run{ out = DIR, flags = {...}, axes = {flag = {values}} }.]]

return function(args)
  for _, a in ipairs(args) do
    if a == "--help" or a == "-h" then
      print(usage)
      return 0
    end
  end
  local ok, spec = pcall(sweep.parse, args)
  if not ok then
    io.stderr:write("agt sweep: ", tostring(spec), "\n")
    return 2
  end
  local res
  ok, res = pcall(sweep.run, spec)
  if not ok then
    io.stderr:write("agt sweep: ", tostring(res), "\n")
    return 2
  end
  for _, c in ipairs(res.cells) do
    if not c.result or c.result.status == "failed" then return 1 end
  end
  return 0
end
