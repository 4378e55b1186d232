#!/usr/bin/env python3
"""bench/gpu_step_torch.py — the synchronous step of bench/gpu_step.lua written the usual PyTorch
way, on the GPU, for comparison (run by `agt bench gpu_step` in the same command).

One step: a loop over the n workers, each drawing its own minibatch (a random gather from a
device-resident training set), forward, cross-entropy, torch.autograd.grad, the gradients
concatenated into row i of G (n x d, on the device); then the rule, G.mean(0) or Krum (squared
cdist, each row's n-f-2 nearest, the row of least score), and p -= lr * g. Models: agt's
fashion-mnist MLP (784-100-10 on the Fashion-MNIST IDX files of DATA_DIR), cnnet (agt's CIFAR-10
CNN) and the CIFAR ResNet-18 (3x3 stem, no max-pool, basic blocks [2, 2, 2, 2], batch norm,
global average pool) on random 3x32x32 images (the cost does not depend on the pixels).

Prints one JSON line: steps_per_s over `steps` timed steps after warm-up, peak_mb = the largest
(total - free) of cudaMemGetInfo after a step (CUDA context included, as agt's figure), and
max_allocated_mb = torch.cuda.max_memory_allocated.
MATH: fp32 (TF32 off everywhere, as agt's default) or tf32 (PyTorch's defaults: TF32 in cuDNN's
convolutions, not in matmuls; agt's --gpu-math tf32 uses it in both).
Usage: gpu_step_torch.py EXPERIMENT RULE WORKERS F BATCH STEPS [DATA_DIR [MATH]]
"""
import gzip
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as tnn
import torch.nn.functional as F


def idx(path, offset):
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


class Block(tnn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = tnn.BatchNorm2d(cout)
        self.c2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = tnn.BatchNorm2d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = tnn.Sequential(tnn.Conv2d(cin, cout, 1, stride, bias=False), tnn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)))
        y = self.b2(self.c2(y))
        return F.relu(y + (x if self.short is None else self.short(x)))


def resnet18():
    layers = [tnn.Conv2d(3, 64, 3, 1, 1, bias=False), tnn.BatchNorm2d(64), tnn.ReLU()]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [Block(cin, cout, stride), Block(cout, cout, 1)]
        cin = cout
    layers += [tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(512, 10)]
    return tnn.Sequential(*layers)


def model_for(name):
    if name == "fashion-mnist":
        return tnn.Sequential(tnn.Flatten(), tnn.Linear(784, 100), tnn.ReLU(), tnn.Linear(100, 10))
    if name == "cnnet":
        return tnn.Sequential(
            tnn.Conv2d(3, 64, 5, padding=2), tnn.ReLU(), tnn.MaxPool2d(3, 2, padding=1),
            tnn.Conv2d(64, 64, 5, padding=2), tnn.ReLU(), tnn.MaxPool2d(3, 2, padding=1),
            tnn.Flatten(), tnn.Linear(4096, 384), tnn.ReLU(), tnn.Linear(384, 192), tnn.ReLU(),
            tnn.Linear(192, 10))
    return resnet18()


def main():
    name, rule = sys.argv[1], sys.argv[2]
    n, f, bs, steps = (int(v) for v in sys.argv[3:7])
    data_dir = sys.argv[7] if len(sys.argv) > 7 else "/usr/share/datasets/fashion-mnist"
    math = sys.argv[8] if len(sys.argv) > 8 else "fp32"
    if math not in ("fp32", "tf32"):
        sys.exit("MATH must be fp32 or tf32, got " + math)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = math == "tf32"
    dev = torch.device("cuda")
    torch.manual_seed(1)
    if name == "fashion-mnist":
        x = torch.from_numpy(idx(os.path.join(data_dir, "train-images-idx3-ubyte.gz"), 16)
                             .astype(np.float32) / 255).view(-1, 1, 28, 28).to(dev)
        y = torch.from_numpy(idx(os.path.join(data_dir, "train-labels-idx1-ubyte.gz"), 8)
                             .astype(np.int64)).to(dev)
    else:
        x = torch.rand(2050, 3, 32, 32, device=dev)
        y = torch.randint(0, 10, (2050,), device=dev)
    model = model_for(name).to(dev)
    model.train()
    params = list(model.parameters())
    d = sum(p.numel() for p in params)
    G = torch.zeros(n, d, device=dev)
    gens = [torch.Generator(device=dev).manual_seed(100 + i) for i in range(n)]
    lr = 0.001

    def aggregate():
        if rule == "average":
            return G.mean(0)
        D = torch.cdist(G, G) ** 2
        scores = D.sort(dim=1).values[:, 1:n - f - 1].sum(1)
        return G[scores.argmin()]

    def step():
        for i in range(n):
            idx_ = torch.randint(0, x.shape[0], (bs,), generator=gens[i], device=dev)
            loss = F.cross_entropy(model(x[idx_]), y[idx_])
            grads = torch.autograd.grad(loss, params)
            torch.cat([g.reshape(-1) for g in grads], out=G[i])
        agg = aggregate()
        with torch.no_grad():
            off = 0
            for p in params:
                k = p.numel()
                p.sub_(agg[off:off + k].view_as(p), alpha=lr)
                off += k

    for _ in range(max(3, steps // 10)):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    rate = steps / (time.perf_counter() - t0)
    peak = 0
    for _ in range(5):
        step()
        torch.cuda.synchronize()
        fr, to = torch.cuda.mem_get_info()
        peak = max(peak, to - fr)
    print(json.dumps({"engine": "torch", "torch": torch.__version__,
                      "cudnn": torch.backends.cudnn.version(), "experiment": name, "rule": rule, "math": math,
                      "workers": n, "batch": bs, "params": d, "steps": steps, "steps_per_s": rate,
                      "peak_mb": peak / 2 ** 20,
                      "max_allocated_mb": torch.cuda.max_memory_allocated() / 2 ** 20}))


if __name__ == "__main__":
    main()
