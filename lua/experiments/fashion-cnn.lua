-- fashion-cnn — a small convolutional network on Fashion-MNIST (offline): two 5×5 SAME
-- convolutions (32 and 64 channels) each followed by ReLU and 2×2 max-pooling, then dense
-- 3136→128 (ReLU) and 128→10. About 455k parameters. Convolutions train on real data with
-- no network access.
return {
  name = "fashion-cnn",
  doc = "conv5x5(32)-pool-conv5x5(64)-pool-dense(128)-dense(10) CNN on Fashion-MNIST, offline",
  shape = { 1, 28, 28 },
  classes = 10,
  defaults = { ["eval-batch-size"] = 100 },
  data = function(args, D)
    local dir = args["data-dir"] ~= "" and args["data-dir"] or "/usr/share/datasets/fashion-mnist"
    return D.fashion_mnist({ dir = dir })
  end,
  model = function(nn)
    return nn.sequential({ 1, 28, 28 }, {
      nn.conv2d(32, { kernel = 5, padding = "SAME" }), nn.relu(),
      nn.maxpool({ kernel = 2, stride = 2, padding = "SAME" }),
      nn.conv2d(64, { kernel = 5, padding = "SAME" }), nn.relu(),
      nn.maxpool({ kernel = 2, stride = 2, padding = "SAME" }),
      nn.flatten(),
      nn.linear(128, { bias_init = nn.init.constant(0.1) }), nn.relu(),
      nn.linear(10),
    })
  end,
}
