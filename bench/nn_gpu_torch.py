#!/usr/bin/python3
"""nn_gpu_torch.py — bench/nn_gpu.lua's pass in PyTorch on the GPU, for comparison: forward, mean
cross-entropy and backward of cnnet (batch 32) and the CIFAR ResNet-18 (basic blocks, batch
norm; batch 128), on random 3x32x32 inputs already on the device, float32 with TF32 off (as agt),
cuDNN on (benchmark mode off: agt picks algorithms by heuristics too). CUDA events, the median
of REPS passes after 3 warm-ups. One JSON line per model.
Usage: nn_gpu_torch.py [REPS]
"""
import json
import sys

import torch
import torch.nn as tnn
import torch.nn.functional as F


class CNNet(tnn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = tnn.Conv2d(3, 64, 5, padding=2)
        self.c2 = tnn.Conv2d(64, 64, 5, padding=2)
        self.f1, self.f2, self.f3 = tnn.Linear(4096, 384), tnn.Linear(384, 192), tnn.Linear(192, 10)

    def forward(self, x):
        # TF SAME 3x3/2 max-pool: pad (0, 1) at the end
        x = F.max_pool2d(F.pad(F.relu(self.c1(x)), (0, 1, 0, 1), value=float("-inf")), 3, 2)
        x = F.max_pool2d(F.pad(F.relu(self.c2(x)), (0, 1, 0, 1), value=float("-inf")), 3, 2)
        x = torch.flatten(x, 1)
        return self.f3(F.relu(self.f2(F.relu(self.f1(x)))))


class Block(tnn.Module):
    def __init__(self, cin, c, stride):
        super().__init__()
        self.c1 = tnn.Conv2d(cin, c, 3, stride, 1, bias=False)
        self.b1 = tnn.BatchNorm2d(c)
        self.c2 = tnn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.b2 = tnn.BatchNorm2d(c)
        self.sc = tnn.Sequential()
        if stride != 1 or cin != c:
            self.sc = tnn.Sequential(tnn.Conv2d(cin, c, 1, stride, bias=False), tnn.BatchNorm2d(c))

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)))
        return F.relu(self.b2(self.c2(y)) + self.sc(x))


class ResNet18(tnn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = tnn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.b1 = tnn.BatchNorm2d(64)
        layers, cin = [], 64
        for c, s in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [Block(cin, c, s), Block(c, c, 1)]
            cin = c
        self.layers = tnn.Sequential(*layers)
        self.fc = tnn.Linear(512, 10)

    def forward(self, x):
        x = self.layers(F.relu(self.b1(self.c1(x))))
        return self.fc(torch.flatten(F.avg_pool2d(x, 4), 1))


def main():
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    math = sys.argv[2] if len(sys.argv) > 2 else "fp32"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = math == "tf32"   # PyTorch's default is True
    dev = torch.device("cuda")
    for name, model, bs in (("cnnet", CNNet(), 32), ("resnet18-cifar10", ResNet18(), 128)):
        model = model.to(dev).train()
        x = torch.rand(bs, 3, 32, 32, device=dev)
        y = torch.arange(bs, device=dev) % 10

        def step():
            model.zero_grad(set_to_none=False)
            F.cross_entropy(model(x), y).backward()

        for _ in range(3):
            step()
        torch.cuda.synchronize()
        ts = []
        for _ in range(reps):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            step()
            b.record()
            b.synchronize()
            ts.append(a.elapsed_time(b))
        ts.sort()
        t = ts[len(ts) // 2]
        print(json.dumps({"bench": "nn_gpu_torch", "device": torch.cuda.get_device_name(),
                          "model": name, "batch": bs, "math": math, "ms": t, "passes_per_s": 1000 / t,
                          "torch": torch.__version__, "cudnn": torch.backends.cudnn.version()}),
              flush=True)


if __name__ == "__main__":
    main()
