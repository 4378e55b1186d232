-- attack_sweep.lua — the README's table: rules × attacks on fashion-mnist, n = 11 workers of
-- which r = 2 attack (the rules told f = 2), 300 steps of SGD at 0.05, over three seeds; prints
-- the mean ± std of the final top-1 test accuracy and writes results.csv, summary.csv,
-- table.txt and heatmap.svg/.png into the folder (default runs/attack_sweep). Run again, it
-- only runs what is missing. `agt sweep --help` says how the same grid is written as a command.
--
--   ./agt examples/attack_sweep.lua [OUT]
require("agt.sweep").run{
  out = arg and arg[1] or "runs/attack_sweep",
  flags = { experiment = "fashion-mnist", nb_workers = 11, nb_decl_byz_workers = 2,
            nb_real_byz_workers = 2, max_step = 300, learning_rate_args = "initial-rate:0.05",
            evaluation_period = -1 },
  axes = {
    aggregator = { "average", "krum", "median", "trimmed-mean", "bulyan" },
    attack = { "none", "reverse", "reverse factor:100", "lie", "empire", "optimal-lie", "minmax",
               "fang", "label-flip" },
    seed = { 1, 2, 3 },
  },
}
