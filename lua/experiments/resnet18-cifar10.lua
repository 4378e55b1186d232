-- resnet18-cifar10 — the standard ResNet-18 for 32×32 CIFAR-10 images (He et al. 2016, as in the
-- usual PyTorch CIFAR versions): conv 3×3×3→64 (padding 1, no bias), batch norm, ReLU; four
-- stages of two basic blocks each, 64, 128, 256 and 512 channels, the first block of stages 2-4
-- at stride 2 with a 1×1 stride-2 convolution and batch norm on its shortcut; 4×4 average pool;
-- dense 512→10. A basic block is conv 3×3 (padding 1, no bias), BN, ReLU, conv 3×3, BN, plus the
-- shortcut, then ReLU. Basic blocks, not the bottleneck blocks of AggregaThor's slim
-- resnet_v1_18. Weights He-normal (fan_out, torchvision's), BN weight 1 and bias 0.
-- 11,173,962 parameters. Batch-norm statistics are per worker in training (each worker's own
-- batch); before each evaluation the running statistics are re-estimated at θ from bn-batches
-- training batches (docs/learning.md). CIFAR-10 is downloaded on first use (SHA-256 checked)
-- unless data-dir points at the binary batches (data_batch_1..5.bin, test_batch.bin).
local function block(nn, c, stride, cin)
  local conv = function(oc, s) return nn.conv2d(oc, { kernel = 3, stride = s, padding = 1, bias = false,
                                                      weight_init = nn.init.he_normal("fan_out") }) end
  local shortcut = {}
  if stride ~= 1 or cin ~= c then
    shortcut = { nn.conv2d(c, { kernel = 1, stride = stride, padding = "VALID", bias = false,
                                weight_init = nn.init.he_normal("fan_out") }), nn.batchnorm() }
  end
  return nn.residual({ conv(c, stride), nn.batchnorm(), nn.relu(), conv(c, 1), nn.batchnorm() }, shortcut)
end

return {
  name = "resnet18-cifar10",
  doc = "ResNet-18 (basic blocks, batch norm; 11,173,962 parameters) on CIFAR-10 (downloaded)",
  shape = { 3, 32, 32 },
  classes = 10,
  defaults = { ["batch-size"] = 128, ["eval-batch-size"] = 500 },
  args = {
    { name = "download", default = true, doc = "download the data set when it is missing" },
    { name = "bn-batches", default = 20, type = "integer",
      check = function(v) return v >= 1, "must be >= 1" end,
      doc = "training batches that re-estimate batch norm's running statistics before an evaluation" },
  },
  data = function(args, D)
    return D.cifar10({ dir = args["data-dir"] ~= "" and args["data-dir"] or nil, download = args.download })
  end,
  model = function(nn)
    local layers = {
      nn.conv2d(64, { kernel = 3, padding = 1, bias = false, weight_init = nn.init.he_normal("fan_out") }),
      nn.batchnorm(), nn.relu(),
    }
    local cin = 64
    for _, st in ipairs({ { 64, 1 }, { 128, 2 }, { 256, 2 }, { 512, 2 } }) do
      layers[#layers + 1] = block(nn, st[1], st[2], cin)
      layers[#layers + 1] = block(nn, st[1], 1, st[1])
      cin = st[1]
    end
    layers[#layers + 1] = nn.avgpool({ kernel = 4 })
    layers[#layers + 1] = nn.flatten()
    layers[#layers + 1] = nn.linear(10)
    return nn.sequential({ 3, 32, 32 }, layers)
  end,
}
