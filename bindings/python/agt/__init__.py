"""agt — Byzantine-resilient gradient aggregation rules and attacks, from Python.

    import agt, torch
    G = torch.randn(11, 1000)              # n rows (one per worker) x d: float32, C-contiguous
    g = agt.aggregate("krum", G, f=2)      # (d,), G's type and device; G is read in place
    g, info = agt.aggregate("nnm,krum", G, f=2, byzantine=[9, 10], return_info=True)
    # info = {"selected": [rows the rule kept], "admitted": [Byzantine rows among them]}
    rule = agt.Rule("centered-clipping", n=11, f=2, tau=1.0)   # state kept across calls
    g = rule(G)
    B = agt.attack("lie", G[:9], f=2)      # (2, d): what 2 Byzantine workers send

G is a NumPy array or a torch tensor (CPU, or CUDA where agt was built with CUDA), passed to
the engine as a pointer: no copy. Rules, aliases, chains ("nnm,bucketing,krum"), arguments,
requirements on n and f and their messages are those of agt's CLI (`agt help aggregators`,
`agt help attacks`), run by the same Lua files. A rule's arguments are keywords: '_' stands for
'-' (max_iter=) and '__' for '.' (bucketing__s=2 is the CLI's bucketing.s:2).

Errors: ValueError for what the CLI refuses (unknown rule, n and f a rule does not accept,
bad arguments); TypeError for an array of the wrong dtype, layout or device, naming what was
expected (no silent copy); agt.EngineError for a failure inside the engine.
"""
from ._engine import EngineError, engine

engine()  # libagt.so and the Lua library load at import: ImportError here says what is missing

__all__ = ["aggregate", "Rule", "attack", "rules", "attacks", "gpu_available", "info",
           "set_num_threads", "num_threads", "EngineError"]


def info():
    """The engine: version, build features, GPU availability, rule and attack names."""
    return engine().call("info", {})


def rules():
    return info()["rules"]


def attacks():
    return info()["attacks"]


def gpu_available():
    return bool(info()["gpu"])


def set_num_threads(n):
    """Threads of agt's CPU rules (0: back to the default: the machine's cores or AGT_NUM_THREADS)."""
    if engine().lib.agt_pool_set_threads(int(n)) != 0:
        raise ValueError(engine()._last_error())


def num_threads():
    return engine().lib.agt_pool_threads()


# ---- arrays -------------------------------------------------------------------------------
class _Array:
    """What the engine needs of an array: its address, shape and device (checked, not copied)."""

    def __init__(self, x, what, ndim):
        mod = type(x).__module__.split(".")[0]
        if mod == "numpy":
            import numpy as np
            if x.dtype != np.float32:
                raise TypeError("%s must be float32, got numpy %s: pass %s.astype(numpy.float32)"
                                % (what, x.dtype, what))
            if x.ndim != ndim:
                raise TypeError("%s must have %d dimension%s, got shape %s"
                                % (what, ndim, "s" if ndim > 1 else "", tuple(x.shape)))
            if not x.flags.c_contiguous:
                raise TypeError("%s must be C-contiguous (row-major): pass numpy.ascontiguousarray(%s)"
                                % (what, what))
            self.kind, self.device, self.index = "numpy", "cpu", None
            self.address, self.shape = x.ctypes.data, tuple(x.shape)
        elif mod == "torch":
            import torch
            if x.dtype != torch.float32:
                raise TypeError("%s must be torch.float32, got %s: pass %s.float()" % (what, x.dtype, what))
            if x.dim() != ndim:
                raise TypeError("%s must have %d dimension%s, got shape %s"
                                % (what, ndim, "s" if ndim > 1 else "", tuple(x.shape)))
            if not x.is_contiguous():
                raise TypeError("%s must be contiguous (row-major): pass %s.contiguous()" % (what, what))
            if x.device.type not in ("cpu", "cuda"):
                raise TypeError("%s is on %s: agt takes cpu or cuda tensors" % (what, x.device))
            self.kind, self.device = "torch", x.device.type
            self.index = x.device.index if self.device == "cuda" else None
            self.address, self.shape = x.data_ptr(), tuple(x.shape)
        else:
            raise TypeError("%s must be a numpy.ndarray or a torch.Tensor (float32), got %s"
                            % (what, type(x).__name__))
        self.x = x

    def new(self, shape):
        """An uninitialised float32 array of this one's kind and device."""
        if self.kind == "numpy":
            import numpy as np
            return np.empty(shape, dtype=np.float32)
        import torch
        return torch.empty(shape, dtype=torch.float32, device=self.x.device)

    def same_place(self, other, what):
        if (other.kind, other.device, other.index) != (self.kind, self.device, self.index):
            raise TypeError("%s must be a %s on %s like G, got a %s on %s" % (
                what, self._name(), self._where(), other._name(), other._where()))

    def _name(self):
        return "numpy.ndarray" if self.kind == "numpy" else "torch.Tensor"

    def _where(self):
        return self.device if self.index is None else "%s:%d" % (self.device, self.index)


class _OnStream:
    """The engine's CUDA entries run on the legacy default stream and return once done: make
    that stream wait for PyTorch's current one before, and the current one wait for it after,
    so the call is ordered like any op on the current stream."""

    def __init__(self, a):
        self.a = a

    def __enter__(self):
        import torch
        engine().use_device(self.a.index if self.a.index is not None else torch.cuda.current_device())
        self.cur = torch.cuda.current_stream(self.a.x.device)
        self.default = torch.cuda.default_stream(self.a.x.device)
        self.other = self.cur.cuda_stream != self.default.cuda_stream
        if self.other:
            self.default.wait_stream(self.cur)

    def __exit__(self, *exc):
        if self.other:
            self.cur.wait_stream(self.default)
        return False


def _words(args):
    out = {}
    for k, v in args.items():
        key = k.replace("__", ".").replace("_", "-")
        if isinstance(v, bool):
            v = "true" if v else "false"
        out[key] = v if isinstance(v, str) else repr(v) if isinstance(v, float) else str(v)
    return out


def _device_name(device):
    name = str(device).split(":")[0]
    if name not in ("cpu", "cuda"):
        raise TypeError("device must be 'cpu' or 'cuda', got %r" % (device,))
    return name


# ---- rules --------------------------------------------------------------------------------
class Rule:
    """A rule (or a chain "step,...,rule") for n rows of which f may be Byzantine.

    Checked at construction (ValueError with the CLI's message). Keeps its buffers and its
    state (centered clipping's previous output, bucketing's stream) across calls;
    reset() puts the state back to the start. device: "cpu" or "cuda" (the arrays it takes)."""

    def __init__(self, spec, n, f, device="cpu", **args):
        self.spec, self.n, self.f = spec, int(n), int(f)
        self.device = _device_name(device)
        self._id = None
        self._id = engine().call("rule_new", {"spec": spec, "n": self.n, "f": self.f,
                                              "args": _words(args), "device": self.device})["id"]
        self.info = {}

    def __call__(self, G, out=None, byzantine=None, return_info=False):
        """The aggregate of G (n, d) into out (d,) (a new array of G's kind and device by
        default). byzantine: the rows that are Byzantine, to count how many the rule kept.
        return_info: also return {"selected": rows kept, "admitted": Byzantine rows kept}
        (rules that keep rows; the same is in self.info after each call)."""
        if self._id is None:
            raise ValueError("agt.Rule %s is closed" % self.spec)
        a = _Array(G, "G", 2)
        if a.device != self.device:
            raise TypeError("this rule was made for %s arrays (agt.Rule(..., device=%r)), got G on %s"
                            % (self.device, self.device, a._where()))
        n, d = a.shape
        if n != self.n:
            raise ValueError("%s: G has %d rows, the rule was made for n=%d" % (self.spec, n, self.n))
        if d < 1:
            raise ValueError("%s: G has no columns (d=0)" % self.spec)
        if out is None:
            out = a.new((d,))
        o = _Array(out, "out", 1)
        a.same_place(o, "out")
        if o.shape != (d,):
            raise ValueError("out must have shape (%d,), got %s" % (d, o.shape))
        req = {"id": self._id, "G": a.address, "d": d, "out": o.address}
        if byzantine is not None:
            req["byzantine"] = sorted(int(i) for i in byzantine)
        if a.device == "cuda":
            with _OnStream(a):
                self.info = engine().call("rule_aggregate", req)
        else:
            self.info = engine().call("rule_aggregate", req)
        return (out, self.info) if return_info else out

    aggregate = __call__

    def reset(self):
        engine().call("rule_reset", {"id": self._id})

    def close(self):
        if self._id is not None:
            engine().call("rule_free", {"id": self._id})
            self._id = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        return "agt.Rule(%r, n=%d, f=%d, device=%r)" % (self.spec, self.n, self.f, self.device)


def aggregate(spec, G, f, out=None, byzantine=None, return_info=False, **args):
    """The aggregate of G (n, d), float32, C-contiguous, by rule or chain `spec` with f
    Byzantine rows at most: an array of shape (d,), of G's type and on G's device.
    See Rule.__call__ for out, byzantine and return_info; args are the rule's arguments."""
    a = _Array(G, "G", 2)
    rule = Rule(spec, a.shape[0], f, device=a.device, **args)
    try:
        return rule(G, out=out, byzantine=byzantine, return_info=return_info)
    finally:
        rule.close()


# ---- attacks ------------------------------------------------------------------------------
def attack(name, honest, f, seed=0, step=0, rule=None, rule_args=None, return_info=False, **args):
    """What f Byzantine workers send, given the honest rows (h, d): an array (f, d) of the
    same type. The attack sees the honest rows as an omniscient attacker does; the Byzantine
    rows are rows h..h+f-1 of the n = h+f matrix (what `byzantine=` of aggregate takes).
    rule: the spec of the rule an attack searches against (optimal-lie, optimal-empire, fang),
    with rule_args; seed and step fix the attack's random draws as in a run. Attacks run on
    the CPU: a CUDA tensor is refused (pass honest.cpu())."""
    a = _Array(honest, "honest", 2)
    if a.device != "cpu":
        raise TypeError("attacks run on the CPU: honest must be a CPU array, got one on %s "
                        "(pass honest.cpu())" % a._where())
    h, d = a.shape
    f = int(f)
    if f < 0:
        raise ValueError("attack %s needs f >= 0, got f=%d" % (name, f))
    out = a.new((f, d))
    if f == 0 or d == 0:
        return (out, {}) if return_info else out
    req = {"name": name, "H": a.address, "h": h, "d": d, "f": f, "out": _Array(out, "out", 2).address,
           "args": _words(args), "seed": int(seed), "step": int(step)}
    if rule is not None:
        req["rule"] = rule
        req["rule_args"] = _words(rule_args or {})
    ans = engine().call("attack", req)
    return (out, ans["info"]) if return_info else out
