-- mnist — the original system's `mnist` experiment: the 784-100-10 ReLU network (79,510
-- parameters) on MNIST, downloaded on first use into the data cache ($AGT_DATA, else
-- ~/.cache/agt) with its SHA-256 checked; data-dir:DIR reads (or downloads into) DIR instead.
return {
  name = "mnist",
  doc = "784-100-10 ReLU MLP (79,510 parameters) on MNIST (downloaded, SHA-256 checked)",
  shape = { 1, 28, 28 },
  classes = 10,
  args = {
    { name = "download", default = true, doc = "download the data set when it is missing" },
  },
  data = function(args, D)
    return D.mnist({ dir = args["data-dir"] ~= "" and args["data-dir"] or nil, download = args.download })
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
