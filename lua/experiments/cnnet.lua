-- cnnet — the original system's CIFAR-10 network, exactly: conv 5×5×3→64 (truncated normal
-- 5e-2, bias 0), ReLU, max-pool 3×3 stride 2 SAME; conv 5×5×64→64 (5e-2, bias 0.1), ReLU,
-- max-pool 3×3 stride 2 SAME; dense 4096→384 (0.04, bias 0.1) ReLU, dense 384→192 (0.04,
-- bias 0.1) ReLU, linear 192→10 (1/192, bias 0). 1,756,426 parameters. CIFAR-10 is
-- downloaded on first use (SHA-256 checked) unless data-dir points at the binary batches.
return {
  name = "cnnet",
  doc = "the original CIFAR-10 CNN (1,756,426 parameters) on CIFAR-10 (downloaded)",
  shape = { 3, 32, 32 },
  classes = 10,
  defaults = { ["eval-batch-size"] = 100 },
  args = {
    { name = "download", default = true, doc = "download the data set when it is missing" },
  },
  data = function(args, D)
    return D.cifar10({ dir = args["data-dir"] ~= "" and args["data-dir"] or nil, download = args.download })
  end,
  model = function(nn)
    local tn, const = nn.init.truncated_normal, nn.init.constant
    local pool = { kernel = 3, stride = 2, padding = "SAME" }
    return nn.sequential({ 3, 32, 32 }, {
      nn.conv2d(64, { kernel = 5, padding = "SAME", weight_init = tn(5e-2), bias_init = const(0) }),
      nn.relu(), nn.maxpool(pool),
      nn.conv2d(64, { kernel = 5, padding = "SAME", weight_init = tn(5e-2), bias_init = const(0.1) }),
      nn.relu(), nn.maxpool(pool),
      nn.flatten(),
      nn.linear(384, { weight_init = tn(0.04), bias_init = const(0.1) }), nn.relu(),
      nn.linear(192, { weight_init = tn(0.04), bias_init = const(0.1) }), nn.relu(),
      nn.linear(10, { weight_init = tn(1 / 192), bias_init = const(0) }),
    })
  end,
}
