#!/usr/bin/env python3
"""pytorch_training.py — agt's robust rule inside a plain PyTorch training loop.

n workers each compute the gradient of a small PyTorch model on their own minibatch; f of them
are Byzantine and send what an agt attack (by default `reverse`, factor 100: minus 100 times
the honest mean) computes from the honest gradients; agt's rule
replaces the average; a torch optimizer applies the result. Prints the test accuracy at the end,
next to what the plain average reaches under the same attack.

    python3 examples/pytorch_training.py [--rule median] [--attack reverse]
        [--attack-args factor=100] [--n 11] [--f 2] [--steps 300]

(with agt built: `make`; the package from the tree: PYTHONPATH=bindings/python, or none after
`make install`.) The data are two interleaved Gaussian blobs per class, made here, so the
example needs nothing but torch.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bindings", "python"))
import agt  # noqa: E402


def data(count, gen):
    """4 classes in 10 dimensions: class c around one of two centres of its own."""
    centres = torch.randn(8, 10, generator=gen) * 2.0
    y = torch.randint(0, 4, (count,), generator=gen)
    which = torch.randint(0, 2, (count,), generator=gen)
    x = centres[2 * y + which] + torch.randn(count, 10, generator=gen)
    return x, y


def train(rule, attack, attack_args, n, f, steps, seed=1):
    gen = torch.Generator().manual_seed(seed)
    x, y = data(6000, gen)
    x_test, y_test = x[5000:], y[5000:]
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=0.1)
    loss_fn = torch.nn.CrossEntropyLoss()
    G = torch.empty(n, sum(p.numel() for p in params))   # one row per worker
    for step in range(steps):
        for i in range(n - f):                            # honest workers, own minibatches
            idx = torch.randint(0, 5000, (32,), generator=gen)
            model.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            G[i] = torch.nn.utils.parameters_to_vector([p.grad for p in params])
        if f > 0:                                         # Byzantine rows, from the honest ones
            G[n - f:] = agt.attack(attack, G[:n - f], f, step=step, **attack_args)
        g = agt.aggregate(rule, G, f) if rule != "average" else G.mean(0)
        torch.nn.utils.vector_to_parameters(g, [p.grad for p in params])
        opt.step()
    with torch.no_grad():
        return (model(x_test).argmax(1) == y_test).float().mean().item()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--rule", default="median")
    ap.add_argument("--attack", default="reverse")
    ap.add_argument("--attack-args", default="factor=100", help="key=value,... for the attack")
    ap.add_argument("--n", type=int, default=11)
    ap.add_argument("--f", type=int, default=2)
    ap.add_argument("--steps", type=int, default=300)
    a = ap.parse_args()
    args = dict(kv.split("=", 1) for kv in a.attack_args.split(",") if kv)
    robust = train(a.rule, a.attack, args, a.n, a.f, a.steps)
    plain = train("average", a.attack, args, a.n, a.f, a.steps)
    print("%s under %s %s (%d of %d workers): test accuracy %.3f (plain average: %.3f)"
          % (a.rule, a.attack, a.attack_args, a.f, a.n, robust, plain))


if __name__ == "__main__":
    main()
