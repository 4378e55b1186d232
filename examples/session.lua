-- session.lua — drive a training run from a script, the way `agt run` does, and look inside it.
--
--   ./agt examples/session.lua                 # 300 steps of bulyan under 2 'lie' attackers
--   ./agt examples/session.lua steps:1000 rule:median attack:empire
--
-- It builds an agt.session (the same options as the `agt run` flags, '_' for '-'), runs a few
-- single steps by hand to print the robustness telemetry of each (which rows the rule kept, how
-- many attackers got through, norms, cosine to the honest mean), then lets run() do the rest
-- with evaluations and checkpoints in runs/example/ and draws the plot. Run it twice: the
-- second run restores the newest checkpoint and continues from it.
local agt = require("agt")
local kv = require("agt.kv")

local o = kv.parse({ ... }, {
  { name = "steps", default = 300, doc = "training steps (added to a restored run)" },
  { name = "rule", default = "bulyan", doc = "aggregation rule" },
  { name = "attack", default = "lie", doc = "attack of the r = 2 Byzantine workers" },
  { name = "dir", default = "runs/example", doc = "checkpoints, evaluation file, summaries" },
}, "examples/session.lua")

local s = agt.session{
  experiment = "fashion-mnist",
  aggregator = o.rule,
  nb_workers = 11, nb_decl_byz_workers = 2, nb_real_byz_workers = 2, attack = o.attack,
  learning_rate_args = { "initial-rate:0.1" },
  checkpoint_dir = o.dir, checkpoint_delta = 100,
  evaluation_delta = 100, evaluation_period = -1,
  max_step = o.steps,
}

print(string.format("%d parameters, %d workers (%d attacking with %s), rule %s, at step %d",
                    s.d, s.n, s.r, o.attack, o.rule, s.global_step))
for _ = 1, 3 do
  local t = s:step()
  print(string.format("step %d: loss %.4f, kept rows %s, Byzantine rows kept %s, |honest| %.3f, "
    .. "|byzantine| %.3f, cos(aggregate, honest mean) %.3f, aggregation %.1f ms",
    t.step, t.loss, t.selected_rows and table.concat(t.selected_rows, ",") or "-",
    tostring(t.byz_selected or "-"), t.honest_norm, t.byz_norm or 0, t.cosine,
    t.t_aggregate * 1e3))
end

local rep = s:run(o.steps - 3)
s:close()
print(string.format("stopped (%s) at step %d; %.1f steps/s", rep.stopped, rep.step,
                    rep.throughput.excluding_first or 0))
local svg, png = require("agt.plot").plot({ o.dir .. "/eval" })
print("Plot: " .. png .. " (and " .. svg .. ")")
