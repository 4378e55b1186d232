#!/usr/bin/env python3
"""bench/gar_gpu_torch.py — the usual PyTorch way of writing some rules, timed on the same card
as `agt bench gar_gpu`, for comparison (python3 with torch and a CUDA device).

    python3 bench/gar_gpu_torch.py [n=25] [f=5] [d=25000000] [reps=5]

Prints JSON lines: each rule's median ms over reps (CUDA events, after a warm-up) and its ratio
to torch's own mean over the rows, on a device-resident G of normal values.
"""
import json
import sys

import torch


def arg(name, default):
    for a in sys.argv[1:]:
        if a.startswith(name + "="):
            return type(default)(float(a.split("=", 1)[1]))
    return default


def timed(fn, reps):
    fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    ts.sort()
    return ts[len(ts) // 2]


def krum_index(G, f):
    n = G.shape[0]
    D = torch.cdist(G, G) ** 2
    scores = D.topk(n - f - 1, dim=1, largest=False).values.sum(1)  # includes the 0 to itself
    return int(scores.argmin())


def bulyan(G, f):
    n = G.shape[0]
    theta = n - 2 * f
    rest = list(range(n))
    chosen = []
    for _ in range(theta):
        sub = G[rest]
        k = krum_index(sub, f) if len(rest) > f + 2 else 0
        chosen.append(rest.pop(k))
    S = G[chosen]
    med = S.median(0).values
    beta = theta - 2 * f
    idx = (S - med).abs().topk(beta, dim=0, largest=False).indices
    return S.gather(0, idx).mean(0)


def main():
    n, f, d, reps = arg("n", 25), arg("f", 5), arg("d", 25000000), arg("reps", 5)
    dev = torch.device("cuda")
    G = torch.randn(n, d, device=dev)
    name = torch.cuda.get_device_name(0)
    cases = [
        ("average", lambda: G.mean(0)),
        ("median", lambda: G.median(0).values),
        ("trimmed-mean", lambda: G.sort(0).values[f:n - f].mean(0)),
        ("krum", lambda: G[krum_index(G, f)].clone()),
        ("bulyan", lambda: bulyan(G, f)),
    ]
    t_avg = None
    for rule, fn in cases:
        t = timed(fn, reps)
        if rule == "average":
            t_avg = t
        print(json.dumps({"bench": "gar_gpu_torch", "device": name, "torch": torch.__version__,
                          "rule": rule, "n": n, "f": f, "d": d, "ms": t, "ratio": t / t_avg}),
              flush=True)


if __name__ == "__main__":
    main()
