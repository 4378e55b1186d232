-- fashion-mnist — the original system's `mnist` network (784-100-10, ReLU, 79,510 parameters)
-- on Fashion-MNIST, read offline from /usr/share/datasets/fashion-mnist (Debian package
-- dataset-fashion-mnist). The default experiment. Weights and biases start Glorot-uniform,
-- as tf.get_variable's default initializer did for both.
return {
  name = "fashion-mnist",
  doc = "784-100-10 ReLU MLP (79,510 parameters) on Fashion-MNIST, offline",
  shape = { 1, 28, 28 },
  classes = 10,
  data = function(args, D)
    local dir = args["data-dir"] ~= "" and args["data-dir"] or "/usr/share/datasets/fashion-mnist"
    return D.fashion_mnist({ dir = dir })
  end,
  model = function(nn)
    local glorot = nn.init.glorot_uniform()
    return nn.sequential({ 1, 28, 28 }, {
      nn.flatten(),
      nn.linear(100, { weight_init = glorot, bias_init = glorot }), nn.relu(),
      nn.linear(10, { weight_init = glorot, bias_init = glorot }),
    })
  end,
}
