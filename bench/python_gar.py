#!/usr/bin/env python3
"""bench/python_gar.py — agt's rules from Python (agt.aggregate) beside the usual PyTorch
versions of the same rules (bench/gar_torch.py) and beside agt's own time (the rule's C entry
called directly through libagt.so, no Python package, no Lua), on one tensor, in one process.

    python3 bench/python_gar.py [--device cpu|cuda] [--n 25] [--f 5] [--d 1000000] [--reps 9]
                                [--torch-reps 3] [--rules median,krum,...]

First the fixed cost of a call (python-call: microseconds per call on a tiny G, where the rule
costs nothing), then one JSON line per rule: medians over reps (one warm-up; the three in turn, in a rotating order)
of agt_c_ms (agt's own time), agt_python_ms (agt.aggregate, a Rule made and freed per call),
torch_ms (over the first torch-reps only: the PyTorch versions are slow); overhead_pct = how
much the Python call adds to agt's own time; speedup = torch_ms / agt_python_ms. Same thread count for agt and torch; the CPU model is in each line.
On cuda (d = 25M by default), G is a CUDA tensor, the times are wall times around a
synchronised call.
"""
import argparse
import ctypes
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "bindings", "python"))
sys.path.insert(0, HERE)

import torch  # noqa: E402

import agt  # noqa: E402
from agt._engine import engine  # noqa: E402
import gar_torch  # noqa: E402

RULES = ["median", "trimmed-mean", "krum", "multi-krum", "bulyan", "geometric-median"]
# The same work as the PyTorch version: 8 Weiszfeld iterations, no early stop.
ARGS = {"geometric-median": {"max_iter": 8, "tol": 0.0}}


def cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def c_entries(lib, prefix, n, d, f):
    """agt's own call of each rule: the C entry the rule file calls, with the same arguments."""
    sz, dbl = ctypes.c_size_t, ctypes.c_double
    sel = (ctypes.c_int64 * n)()
    iters = ctypes.c_int64()

    def entry(name, before, after=()):
        fn = getattr(lib, prefix + name)
        fn.restype = ctypes.c_int

        def call(G, out):
            if fn(ctypes.c_void_p(G), *before, ctypes.c_void_p(out), *after) != 0:
                raise RuntimeError(lib.agt_last_error().decode())
        return call

    nd = (sz(n), sz(d))
    return {
        "median": entry("median", nd),
        "trimmed-mean": entry("trimmed_mean", nd + (sz(f),)),
        "krum": entry("multi_krum", nd + (sz(f), sz(1)), (sel,)),
        "multi-krum": entry("multi_krum", nd + (sz(f), sz(n - f)), (sel,)),
        "bulyan": entry("bulyan", nd + (sz(f),), (sel,)),
        "geometric-median": entry("geometric_median", nd + (dbl(1e-6), sz(8), dbl(0.0)),
                                  (ctypes.byref(iters),)),
    }


def overhead(lib, a, sync, d=16, calls=2000, batches=5):
    """The fixed cost of a call from Python, on a G so small that the rule costs nothing:
    microseconds per call of agt.aggregate, of a kept agt.Rule, and of the C entry itself."""
    G = torch.randn(a.n, d, device=a.device)
    out = torch.empty(d, device=a.device)
    c = c_entries(lib, "agt_gpu_gar_" if a.device == "cuda" else "agt_gar_", a.n, d, a.f)["median"]
    rule = agt.Rule("median", a.n, a.f, device=a.device)
    runs = {"c": lambda: c(G.data_ptr(), out.data_ptr()),
            "aggregate": lambda: agt.aggregate("median", G, a.f, out=out),
            "rule": lambda: rule(G, out=out)}
    us = {}
    for k, fn in runs.items():
        per = []
        for _ in range(batches):
            sync()
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            sync()
            per.append((time.perf_counter() - t0) * 1e6 / calls)
        us[k] = statistics.median(per)
    print(json.dumps({"bench": "python-call", "device": a.device, "n": a.n, "d": d,
                      "c_us": round(us["c"], 2), "aggregate_us": round(us["aggregate"], 2),
                      "rule_us": round(us["rule"], 2),
                      "aggregate_added_us": round(us["aggregate"] - us["c"], 2),
                      "rule_added_us": round(us["rule"] - us["c"], 2)}), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--n", type=int, default=25)
    ap.add_argument("--f", type=int, default=5)
    ap.add_argument("--d", type=int, default=0)
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--torch-reps", type=int, default=3)
    ap.add_argument("--rules", default=",".join(RULES))
    a = ap.parse_args()
    d = a.d or (25_000_000 if a.device == "cuda" else 1_000_000)
    threads = agt.num_threads()
    torch.set_num_threads(threads)
    cuda = a.device == "cuda"
    if cuda and not (torch.cuda.is_available() and agt.gpu_available()):
        print(json.dumps({"bench": "python-gar", "device": "cuda", "skipped":
                          "no CUDA device for torch or agt: %s" % agt.info().get("gpu_why")}))
        return 0
    torch.manual_seed(1)
    G = torch.randn(a.n, d, device=a.device)
    out = torch.empty(d, device=a.device)
    lib = engine().lib
    if cuda:
        engine().use_device(G.device.index or 0)
    entries = c_entries(lib, "agt_gpu_gar_" if cuda else "agt_gar_", a.n, d, a.f)
    table = gar_torch.rules(a.f)
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def timed(fn):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        return (time.perf_counter() - t0) * 1000

    overhead(lib, a, sync)
    for name in a.rules.split(","):
        ours = entries[name]
        theirs = table[name.replace("averaged-median", "meamed")]
        runs = {
            "agt_c": lambda: ours(G.data_ptr(), out.data_ptr()),
            "agt_python": lambda: agt.aggregate(name, G, a.f, out=out, **ARGS.get(name, {})),
            "torch": lambda: theirs(G),
        }
        times = {k: [] for k in runs}
        with torch.no_grad():
            for k, fn in runs.items():
                fn()  # warm-up
            order = list(runs)
            for rep in range(a.reps):
                # each rep starts with the next one: none always follows torch's threads
                for k in order[rep % 3:] + order[:rep % 3]:
                    if k != "torch" or rep < a.torch_reps:
                        times[k].append(timed(runs[k]))
        med = {k: statistics.median(v) for k, v in times.items()}
        print(json.dumps({
            "bench": "python-gar", "rule": name, "args": ARGS.get(name, {}), "device": a.device, "n": a.n, "f": a.f, "d": d,
            "agt_c_ms": round(med["agt_c"], 3), "agt_python_ms": round(med["agt_python"], 3),
            "torch_ms": round(med["torch"], 3),
            "overhead_pct": round(100 * (med["agt_python"] - med["agt_c"]) / med["agt_c"], 2),
            "speedup": round(med["torch"] / med["agt_python"], 1), "reps": a.reps, "torch_reps": a.torch_reps,
            "threads": threads, "torch": torch.__version__,
            "cpu": cpu_model(), "gpu": torch.cuda.get_device_name() if cuda else None,
        }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
