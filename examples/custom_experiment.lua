-- custom_experiment.lua — a user's own experiment: one Lua file returning a table of the
-- same form as lua/experiments/*.lua. Run it by path:
--
--   agt run --experiment examples/custom_experiment.lua --experiment-args hidden:256 dropout:0.2
--
-- This one trains a two-hidden-layer tanh network with dropout on Fashion-MNIST (offline).
-- Its own keys (hidden, dropout) sit beside the common ones (batch-size, eval-batch-size,
-- eval-size, data-dir, shard, noniid-alpha); an unknown key is refused with the known list.
return {
  name = "fashion-tanh",
  doc = "784-H-H-10 tanh network with dropout on Fashion-MNIST (a user experiment)",
  shape = { 1, 28, 28 },          -- one example: channels, height, width
  classes = 10,
  args = {
    { name = "hidden", default = 128, doc = "units of each hidden layer" },
    { name = "dropout", default = 0.1, type = "number", doc = "dropout rate after each hidden layer" },
  },
  defaults = { ["batch-size"] = 64 },
  -- D is agt.data; return its data set table (or nil, message).
  data = function(args, D)
    local dir = args["data-dir"] ~= "" and args["data-dir"] or nil
    return D.fashion_mnist({ dir = dir })
  end,
  -- nn is agt.nn; shapes are inferred from the input shape.
  model = function(nn, args)
    local h = args.hidden
    return nn.sequential({ 1, 28, 28 }, {
      nn.flatten(),
      nn.linear(h), nn.tanh(), nn.dropout(args.dropout),
      nn.linear(h), nn.tanh(), nn.dropout(args.dropout),
      nn.linear(10, { weight_init = nn.init.truncated_normal(0.05) }),
    })
  end,
  -- Optional: transform each minibatch in place (x: f32 (B, 1, 28, 28)); also applied to
  -- the test set, chunk by chunk, in evaluation. Here: centre the pixels.
  preprocess = function(x, B)
    local p = x.ptr
    for i = 0, B * 784 - 1 do p[i] = p[i] - 0.5 end
  end,
}
