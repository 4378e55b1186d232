"""Shared by the Python tests: the package from this tree, the ./agt binary, random matrices
with NaN and +-inf, and the cases (every rule and some chains) with their arguments."""
import os
import subprocess
import sys
import tempfile
import json

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "bindings", "python"))

import ctypes  # noqa: E402

import torch  # noqa: E402

import agt  # noqa: E402

# ./agt, or in the bundle of `make gpu-bundle` its run.sh (which puts the bundled Lua modules
# on the paths)
AGT = os.path.join(ROOT, "run.sh") if os.path.exists(os.path.join(ROOT, "run.sh")) \
    else os.path.join(ROOT, "agt")

# (spec, n, f, args): every rule, with defaults and with arguments, and chains of steps.
RULE_CASES = [
    ("average", 11, 2, {}), ("average-nan", 11, 2, {}), ("median", 11, 2, {}),
    ("median", 10, 2, {}), ("trimmed-mean", 11, 3, {}), ("averaged-median", 11, 2, {}),
    ("averaged-median", 11, 2, {"beta": 5}), ("phocas", 11, 2, {}), ("krum", 11, 2, {}),
    ("multi-krum", 11, 2, {}), ("multi-krum", 11, 2, {"m": 3}), ("bulyan", 11, 2, {}),
    ("bulyan", 25, 5, {}), ("cge", 11, 2, {}), ("mda", 9, 3, {}),
    ("geometric-median", 11, 2, {}), ("geometric-median", 11, 2, {"max_iter": 5, "nu": 0.01}),
    ("centered-clipping", 11, 2, {}), ("centered-clipping", 11, 2, {"tau": 0.5, "iters": 5}),
    ("nnm,krum", 11, 2, {}), ("nnm,average", 11, 2, {}), ("clipping,average", 11, 2, {"c": 1.0}),
    ("arc,median", 11, 2, {}), ("bucketing,median", 12, 2, {"s": 2}),
    ("nnm,bucketing,krum", 25, 2, {"bucketing__s": 2}), ("krum", 25, 5, {}),
]

ATTACK_CASES = [
    ("random", {}), ("gaussian", {}), ("zero", {}), ("nan", {}), ("inf", {}), ("reverse", {}),
    ("drop", {}), ("lie", {}), ("lie", {"z": 1.5, "ddof": 1}), ("empire", {}), ("mimic", {}),
    ("minmax", {}), ("minsum", {"perturbation": "sign"}), ("fang", {}),
    ("optimal-lie", {}), ("optimal-empire", {}),
]
ATTACK_RULE = ("krum", {})   # what the attacks that search a rule search against


def words(args):
    """The CLI's key:value words for Python keyword arguments (as the package maps them)."""
    out = []
    for k, v in sorted(args.items()):
        key = k.replace("__", ".").replace("_", "-")
        out.append("%s:%s" % (key, repr(v) if isinstance(v, float) else v))
    return out


def matrix_t(n, d, seed, nonfinite=False):
    """float32 (n, d) torch tensor: honest rows around a common mean; with nonfinite, a row of
    NaN, a row with +inf, and scattered NaN, +inf and -inf entries in the others."""
    g = torch.Generator().manual_seed(seed)
    G = torch.randn(d, generator=g) + 0.5 * torch.randn(n, d, generator=g)
    if nonfinite:
        G[n - 1, :] = float("nan")
        G[n - 2, d // 2] = float("inf")
        for v in (float("nan"), float("inf"), float("-inf")):
            i = int(torch.randint(0, max(n - 2, 1), (1,), generator=g))
            j = int(torch.randint(0, d, (1,), generator=g))
            G[i, j] = v
    return G.contiguous()


def matrix(n, d, seed, nonfinite=False):
    """matrix_t as a NumPy array."""
    return matrix_t(n, d, seed, nonfinite).numpy()


def raw(x):
    """The bytes of a contiguous CPU float32 tensor or array."""
    if isinstance(x, torch.Tensor):
        return ctypes.string_at(x.data_ptr(), 4 * x.numel())
    return x.tobytes()


def run_lua_path(cases):
    """Runs the cases through ./agt (spec/python/lua_path.lua); fills case["lua"] with the raw
    output bytes, or case["lua_error"] with the message."""
    with tempfile.TemporaryDirectory() as tmp:
        for k, c in enumerate(cases):
            c["input"] = os.path.join(tmp, "in%d.f32" % k)
            c["output"] = os.path.join(tmp, "out%d.f32" % k)
            with open(c["input"], "wb") as fh:
                fh.write(raw(c.pop("G")))
        manifest = os.path.join(tmp, "cases.json")
        with open(manifest, "w") as fh:
            json.dump(cases, fh)
        subprocess.run([AGT, os.path.join(ROOT, "spec", "python", "lua_path.lua"), manifest],
                       check=True)
        for c in cases:
            if os.path.exists(c["output"]):
                with open(c["output"], "rb") as fh:
                    c["lua"] = fh.read()
            else:
                with open(c["output"] + ".err") as fh:
                    c["lua_error"] = fh.read()
    return cases
