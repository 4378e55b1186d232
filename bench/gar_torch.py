"""gar_torch.py — the aggregation rules written the usual PyTorch way, for `agt bench gar`.

Reads G (n x d float32, raw bytes) from --file, times each rule (median of --reps runs after
one warm-up, same thread count as agt) and prints one JSON line per rule: {"rule", "ms"}.
These follow common public implementations: torch.median / sort per coordinate, cdist for
distances, a Bulyan loop that calls Krum on the remaining rows, Weiszfeld with torch.norm.
"""
import argparse
import json
import time

import numpy as np
import torch


def krum_scores(G, f):
    n = G.shape[0]
    D = torch.cdist(G, G) ** 2
    return D.sort(dim=1).values[:, 1:n - f - 1].sum(dim=1)


def closest_mean(G, centre, beta):
    idx = (G - centre).abs().topk(beta, dim=0, largest=False).indices
    return G.gather(0, idx).mean(dim=0)


def rules(f):
    def average(G):
        return G.mean(dim=0)

    def average_nan(G):
        return G.nanmean(dim=0)

    def median(G):
        return G.median(dim=0).values

    def trimmed_mean(G):
        n = G.shape[0]
        return G.sort(dim=0).values[f:n - f].mean(dim=0)

    def meamed(G):
        n = G.shape[0]
        return closest_mean(G, G.median(dim=0).values, n - f)

    def phocas(G):
        n = G.shape[0]
        return closest_mean(G, trimmed_mean(G), n - f)

    def krum(G):
        return G[krum_scores(G, f).argmin()]

    def multi_krum(G):
        n = G.shape[0]
        return G[krum_scores(G, f).topk(n - f, largest=False).indices].mean(dim=0)

    def bulyan(G):
        n = G.shape[0]
        theta = n - 2 * f
        remaining = list(range(n))
        chosen = []
        for _ in range(theta):
            sub = G[remaining]
            r = len(remaining)
            D = torch.cdist(sub, sub) ** 2
            k = max(r - f - 2, 0)
            sc = D.sort(dim=1).values[:, 1:1 + k].sum(dim=1)
            best = int(sc.argmin())
            chosen.append(remaining.pop(best))
        S = G[chosen]
        return closest_mean(S, S.median(dim=0).values, theta - 2 * f)

    def geometric_median(G, iters=8, nu=1e-6):
        z = G.median(dim=0).values
        for _ in range(iters):
            w = 1.0 / torch.clamp(torch.norm(G - z, dim=1), min=nu)
            z = (w[:, None] * G).sum(dim=0) / w.sum()
        return z

    def centered_clipping(G, tau=10.0, iters=3):
        v = torch.zeros(G.shape[1])
        for _ in range(iters):
            diff = G - v
            nr = torch.norm(diff, dim=1)
            c = torch.clamp(tau / nr, max=1.0)
            v = v + (c[:, None] * diff).mean(dim=0)
        return v

    def cge(G):
        n = G.shape[0]
        idx = torch.norm(G, dim=1).topk(n - f, largest=False).indices
        return G[idx].mean(dim=0)

    def nnm(G):
        n = G.shape[0]
        idx = torch.cdist(G, G).topk(n - f, dim=1, largest=False).indices
        return torch.stack([G[idx[i]].mean(dim=0) for i in range(n)])

    def clipping(G, c=2.0):
        nr = torch.norm(G, dim=1, keepdim=True)
        return G * torch.clamp(c / nr, max=1.0)

    return {
        "average": average, "average-nan": average_nan, "median": median,
        "trimmed-mean": trimmed_mean, "meamed": meamed, "phocas": phocas, "krum": krum,
        "multi-krum": multi_krum, "bulyan": bulyan, "geometric-median": geometric_median,
        "centered-clipping": centered_clipping, "cge": cge, "nnm": nnm, "clipping": clipping,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--file", required=True)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--f", type=int, required=True)
    ap.add_argument("--d", type=int, required=True)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rules", default="")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    G = torch.from_numpy(np.fromfile(a.file, dtype=np.float32).reshape(a.n, a.d))
    table = rules(a.f)
    wanted = [r for r in a.rules.split(",") if r] or list(table)
    for name in wanted:
        fn = table.get(name)
        if fn is None:
            continue
        with torch.no_grad():
            fn(G)
            times = []
            for _ in range(a.reps):
                t0 = time.perf_counter()
                fn(G)
                times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        print(json.dumps({"rule": name, "ms": round(times[len(times) // 2], 3),
                          "torch": torch.__version__, "torch_threads": a.threads}), flush=True)


if __name__ == "__main__":
    main()
