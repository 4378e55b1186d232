#!/usr/bin/python3
"""step_torch.py — the training step of bench/step.lua written in PyTorch (CPU), for comparison.

One step: n workers each draw their own minibatch (a random gather from the training set) and
compute the gradient of the mean cross-entropy at the same parameters into row i of an n×d
matrix G; then G is averaged and applied by plain SGD. Same models as agt's experiments:
  fashion-mnist  784-100-10 ReLU MLP on Fashion-MNIST (real data, read from the IDX files)
  cnnet          the CIFAR-10 CNN (conv5x5 64, pool 3/2, conv5x5 64, pool 3/2, 384, 192, 10)
                 on random 3x32x32 images (the step's cost does not depend on the pixels)
Prints one JSON line: {"engine": "torch", "steps_per_s": ..., ...}: the mean rate, the rate of
the median step and of the fastest step.
Usage: step_torch.py EXPERIMENT WORKERS BATCH THREADS STEPS [DATA_DIR]
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


def idx_images(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    n, h, w = (int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(3))
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, 1, h, w)


def idx_labels(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    return np.frombuffer(raw, dtype=np.uint8, offset=8)


def model_for(name):
    if name == "fashion-mnist":
        return tnn.Sequential(tnn.Flatten(), tnn.Linear(784, 100), tnn.ReLU(), tnn.Linear(100, 10))
    return tnn.Sequential(
        tnn.Conv2d(3, 64, 5, padding=2), tnn.ReLU(), tnn.MaxPool2d(3, 2, padding=1),
        tnn.Conv2d(64, 64, 5, padding=2), tnn.ReLU(), tnn.MaxPool2d(3, 2, padding=1),
        tnn.Flatten(), tnn.Linear(4096, 384), tnn.ReLU(), tnn.Linear(384, 192), tnn.ReLU(),
        tnn.Linear(192, 10))


def main():
    name, n, bs, threads, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    data_dir = sys.argv[6] if len(sys.argv) > 6 else "/usr/share/datasets/fashion-mnist"
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    if name == "fashion-mnist":
        x = torch.from_numpy(idx_images(os.path.join(data_dir, "train-images-idx3-ubyte.gz")).astype(np.float32) / 255)
        y = torch.from_numpy(idx_labels(os.path.join(data_dir, "train-labels-idx1-ubyte.gz")).astype(np.int64))
    else:
        x = torch.rand(2048, 3, 32, 32)
        y = torch.randint(0, 10, (2048,))
    model = model_for(name)
    params = list(model.parameters())
    d = sum(p.numel() for p in params)
    G = torch.zeros(n, d)
    gens = [torch.Generator().manual_seed(100 + i) for i in range(n)]
    lr = 0.01

    def step():
        for i in range(n):
            idx = torch.randint(0, x.shape[0], (bs,), generator=gens[i])
            loss = F.cross_entropy(model(x[idx]), y[idx])
            grads = torch.autograd.grad(loss, params)
            torch.cat([g.reshape(-1) for g in grads], out=G[i])
        agg = G.mean(0)
        with torch.no_grad():
            off = 0
            for p in params:
                k = p.numel()
                p.sub_(agg[off:off + k].view_as(p), alpha=lr)
                off += k

    for _ in range(max(2, steps // 10)):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    times.sort()
    print(json.dumps({"engine": "torch", "torch": torch.__version__, "experiment": name, "workers": n,
                      "batch": bs, "threads": threads, "params": d, "steps": steps,
                      "steps_per_s": steps / sum(times), "median_steps_per_s": 1 / times[len(times) // 2],
                      "best_steps_per_s": 1 / times[0]}))


if __name__ == "__main__":
    main()
