"""Plain PyTorch versions of agt's rules, written from their definitions (`agt help
aggregators`) the way Byzantine-ML code usually writes them, in float64, for the tests to hold
agt to within 1e-5. Non-finite values order as +inf and a non-finite distance or norm is +inf,
as agt defines every rule; ties go to the lower row. G: (n, d) float32 tensor."""
import math

import torch

INF = float("inf")


def key(G):
    """Values as every ordering sees them: non-finite -> +inf."""
    G = G.double()
    return torch.where(torch.isfinite(G), G, torch.full_like(G, INF))


def average(G, f):
    return G.double().mean(0)


def average_nan(G, f):
    G = G.double()
    ok = torch.isfinite(G)
    s = torch.where(ok, G, torch.zeros_like(G)).sum(0)
    c = ok.sum(0)
    return torch.where(c > 0, s / c.clamp(min=1), torch.zeros_like(s))


def _median_sorted(S):
    n = S.shape[0]
    return S[n // 2] if n % 2 else (S[n // 2 - 1] + S[n // 2]) / 2


def median(G, f):
    return _median_sorted(torch.sort(key(G), dim=0).values)


def trimmed_mean(G, f):
    S = torch.sort(key(G), dim=0).values
    return S[f:G.shape[0] - f].mean(0)


def _closest_mean(S, m, beta):
    """Mean of the beta values of each column of S (sorted) closest to m (ties: smaller)."""
    dist = (S - m).abs()
    dist = torch.where(S == m, torch.zeros_like(dist), dist)
    # stable sort by distance keeps the smaller value first on ties (S is sorted)
    idx = torch.sort(dist, dim=0, stable=True).indices[:beta]
    return torch.gather(S, 0, idx).mean(0)


def averaged_median(G, f, beta=None):
    beta = G.shape[0] - f if beta is None else beta
    S = torch.sort(key(G), dim=0).values
    return _closest_mean(S, _median_sorted(S), beta)


def phocas(G, f):
    S = torch.sort(key(G), dim=0).values
    return _closest_mean(S, S[f:G.shape[0] - f].mean(0), G.shape[0] - f)


def sqdist(G):
    """(n, n) squared distances, +inf where not finite."""
    X = G.double()
    D = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    return torch.where(torch.isfinite(D), D, torch.full_like(D, INF))


def _order(keys):
    return sorted(range(len(keys)), key=lambda i: (keys[i], i))


def _krum_scores(D, rows, k):
    out = []
    for i in rows:
        ds = sorted(float(D[i, j]) for j in rows if j != i)
        out.append(sum(ds[:k]))
    return out


def multi_krum(G, f, m=None):
    n = G.shape[0]
    m = n - f if m is None else m
    sel = _order(_krum_scores(sqdist(G), range(n), n - f - 2))[:m]
    return G.double()[sorted(sel)].mean(0), sel


def krum(G, f):
    return multi_krum(G, f, 1)


def bulyan(G, f):
    n = G.shape[0]
    D = sqdist(G)
    theta, rem, sel = n - 2 * f, list(range(n)), []
    for _ in range(theta):
        sc = _krum_scores(D, rem, max(len(rem) - f - 2, 0))
        best = min(range(len(rem)), key=lambda q: (sc[q], q))
        sel.append(rem.pop(best))
    return averaged_median(G[sel], f, beta=theta - 2 * f), sel


def cge(G, f):
    X = G.double()
    sq = (X * X).sum(1)
    sq = torch.where(torch.isfinite(sq), sq, torch.full_like(sq, INF))
    sel = _order([float(v) for v in sq])[:G.shape[0] - f]
    return X[sorted(sel)].mean(0), sel


def mda(G, f):
    import itertools
    n = G.shape[0]
    D = sqdist(G)
    best, best_set = None, None
    for s in itertools.combinations(range(n), n - f):
        diam = max((float(D[a, b]) for a in s for b in s if a < b), default=0.0)
        if best is None or diam < best:
            best, best_set = diam, s
    return G.double()[list(best_set)].mean(0), list(best_set)


def geometric_median(G, f, nu=1e-6, max_iter=100, tol=1e-7):
    X = G.double()
    z = median(G, f)
    for _ in range(max_iter):
        r = ((X - z) ** 2).sum(1).sqrt()
        ok = torch.isfinite(r)
        w = torch.where(ok, 1 / torch.clamp(r, min=nu), torch.zeros_like(r))
        W = w.sum()
        if not W > 0:
            break
        Xf = torch.where(ok[:, None], X, torch.zeros_like(X))
        nz = (w[:, None] / W * Xf).sum(0)
        dz = ((nz - z) ** 2).sum().sqrt()
        zn = (z * z).sum().sqrt()
        z = nz
        if dz <= tol * zn:
            break
    return z


def centered_clipping(G, f, tau=10.0, iters=3, v=None):
    X = G.double()
    n = X.shape[0]
    v = torch.zeros(X.shape[1], dtype=torch.float64) if v is None else v.double()
    for _ in range(iters):
        r = ((X - v) ** 2).sum(1).sqrt()
        c = torch.where(torch.isfinite(r), torch.clamp(tau / r, max=1.0), torch.zeros_like(r))
        diff = torch.where(c[:, None] > 0, X - v, torch.zeros_like(X))
        v = v + (c[:, None] / n * diff).sum(0)
    return v


def nnm(G, f):
    n = G.shape[0]
    D = sqdist(G)
    X = G.double()
    rows = []
    for i in range(n):
        keys = [-1.0 if j == i else float(D[i, j]) for j in range(n)]
        rows.append(X[sorted(_order(keys)[:n - f])].mean(0))
    return torch.stack(rows)


def _norms(X):
    nr = (X * X).sum(1).sqrt()
    return torch.where(torch.isfinite(nr), nr, torch.full_like(nr, INF))


def _scale(x, nr, c):
    if not math.isfinite(nr) or not math.isfinite(c) or nr <= c:
        return x
    return x * (c / nr)


def clipping(G, f, c=2.0):
    X = G.double()
    nr = _norms(X)
    return torch.stack([_scale(X[i], float(nr[i]), c) for i in range(X.shape[0])])


def arc(G, f):
    X = G.double()
    n = X.shape[0]
    k = (2 * f * (n - f)) // n
    nr = _norms(X)
    ord_ = _order([-float(v) for v in nr])
    out = [X[i] for i in range(n)]
    if k < n:
        thr = float(nr[ord_[k]])
        for i in ord_[:k]:
            out[i] = _scale(X[i], float(nr[i]), thr)
    return torch.stack(out)


RULES = {
    "average": average, "average-nan": average_nan, "median": median,
    "trimmed-mean": trimmed_mean, "averaged-median": averaged_median, "phocas": phocas,
    "krum": lambda G, f: krum(G, f)[0], "multi-krum": lambda G, f: multi_krum(G, f)[0],
    "bulyan": lambda G, f: bulyan(G, f)[0], "cge": lambda G, f: cge(G, f)[0],
    "mda": lambda G, f: mda(G, f)[0], "geometric-median": geometric_median,
    "centered-clipping": centered_clipping,
}

STEPS = {
    "nnm": (nnm, lambda n, f: (n, f)),
    "clipping": (clipping, lambda n, f: (n, f)),
    "arc": (arc, lambda n, f: (n, f)),
}


def reference(spec, G, f):
    """The plain PyTorch output of a rule or a chain of steps (float64), as agt defines it."""
    parts = spec.split(",")
    X = G
    for p in parts[:-1]:
        X = STEPS[p][0](X, f).float()   # agt keeps a step's output as float32
    return RULES[parts[-1]](X, f)
