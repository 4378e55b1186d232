"""The Python package's contract: the CLI's messages as ValueError, wrong dtype/layout/device as
TypeError naming what was expected, arrays used in place (no copy), results of G's type."""
import re
import unittest

import numpy as np
import torch

from common import agt, matrix, run_lua_path, words

REFUSED = [  # (spec, n, f, args): what the CLI refuses
    ("krum", 6, 2, {}), ("bulyan", 10, 2, {}), ("median", 4, 2, {}),
    ("bucketing,krum", 11, 2, {"s": 3}), ("nnm,bulyan", 11, 3, {}),
    ("median", 11, 2, {"foo": 1}), ("centered-clipping", 11, 2, {"tau": -1.0}),
    ("geometric-median", 11, 2, {"max_iter": "many"}), ("no-such-rule", 11, 2, {}),
    ("krum,median", 11, 2, {}), ("nnm", 11, 2, {}), ("mda", 40, 15, {}),
]


class Messages(unittest.TestCase):
    def test_refusals_are_value_errors_with_the_lua_message(self):
        cases = [{"rule": s, "n": n, "f": f, "d": 3, "args": words(a), "G": matrix(n, 3, 1)}
                 for s, n, f, a in REFUSED]
        run_lua_path(cases)
        for (spec, n, f, args), c in zip(REFUSED, cases):
            with self.subTest(spec=spec, n=n, f=f, args=args):
                self.assertIn("lua_error", c)
                with self.assertRaises(ValueError) as cm:
                    agt.Rule(spec, n, f, **args)
                self.assertEqual(str(cm.exception), c["lua_error"])
                with self.assertRaises(ValueError):
                    agt.aggregate(spec, matrix(n, 3, 1), f, **args)

    def test_requirement_names_both_numbers(self):
        with self.assertRaisesRegex(ValueError, r"^krum needs n >= 2f\+3, got n=6 f=2$"):
            agt.aggregate("krum", np.zeros((6, 4), np.float32), f=2)

    def test_attack_refusals_are_value_errors_with_the_lua_message(self):
        bad = [("nope", {}), ("lie", {"q": 1}), ("lie", {"ddof": 3}), ("reverse", {"factor": "x"})]
        cases = [{"attack": a, "n": 11, "f": 2, "d": 4, "args": words(k), "seed": 0, "step": 0,
                  "G": matrix(9, 4, 1)} for a, k in bad]
        run_lua_path(cases)
        for (name, args), c in zip(bad, cases):
            with self.subTest(attack=name, args=args):
                self.assertIn("lua_error", c)
                with self.assertRaises(ValueError) as cm:
                    agt.attack(name, matrix(9, 4, 1), f=2, **args)
                # the package drops the Lua source position some messages carry
                self.assertEqual(str(cm.exception),
                                 re.sub(r"^[^:\n]*\.lua:\d+: ", "", c["lua_error"]))
        with self.assertRaisesRegex(ValueError, "poisons the training data"):
            agt.attack("label-flip", matrix(9, 4, 1), f=2)

    def test_wrong_arrays_are_type_errors_naming_what_was_expected(self):
        G = matrix(11, 8, 2)
        bad = [
            (G.astype(np.float64), "G must be float32, got numpy float64"),
            (torch.from_numpy(G).double(), "G must be torch.float32, got torch.float64"),
            (G[:, ::2], r"G must be C-contiguous \(row-major\)"),
            (torch.from_numpy(G).t(), r"G must have 2 dimensions|G must be contiguous"),
            (torch.from_numpy(np.ascontiguousarray(G[:8, :])).t(), "G must be contiguous"),
            (G[0], r"G must have 2 dimensions, got shape \(8,\)"),
            (G.tolist(), "G must be a numpy.ndarray or a torch.Tensor"),
            (torch.from_numpy(G).to(torch.float16), "G must be torch.float32"),
        ]
        for x, msg in bad:
            with self.subTest(msg=msg):
                with self.assertRaisesRegex(TypeError, msg):
                    agt.aggregate("median", x, 2)
        with self.assertRaisesRegex(TypeError, "out must be a numpy.ndarray on cpu like G, got a torch.Tensor"):
            agt.aggregate("median", G, 2, out=torch.zeros(8))
        with self.assertRaisesRegex(ValueError, r"out must have shape \(8,\)"):
            agt.aggregate("median", G, 2, out=np.zeros(7, np.float32))
        with self.assertRaisesRegex(TypeError, "device must be 'cpu' or 'cuda'"):
            agt.Rule("median", 11, 2, device="tpu")
        with self.assertRaisesRegex(ValueError, "G has 10 rows, the rule was made for n=11"):
            agt.Rule("median", 11, 2)(G[:10])


class InPlace(unittest.TestCase):
    def test_out_is_written_where_it_is(self):
        G = matrix(11, 16, 3)
        out = np.full(16, 7.0, np.float32)
        r = agt.aggregate("trimmed-mean", G, 2, out=out)
        self.assertIs(r, out)
        self.assertNotEqual(out[0], 7.0)
        T = torch.from_numpy(G)
        o = torch.full((16,), 7.0)
        ptr = o.data_ptr()
        r = agt.aggregate("trimmed-mean", T, 2, out=o)
        self.assertIs(r, o)
        self.assertEqual(o.data_ptr(), ptr)
        self.assertEqual(o.numpy().tobytes(), out.tobytes())

    def test_g_is_read_in_place_and_not_written(self):
        # a view into a larger buffer (rows 2..12): the rule reads exactly those rows
        big = matrix(15, 16, 4)
        view = big[2:13]
        before = big.copy()
        a = agt.aggregate("median", view, 2)
        b = agt.aggregate("median", np.ascontiguousarray(view), 2)
        self.assertEqual(a.tobytes(), b.tobytes())
        self.assertEqual(big.tobytes(), before.tobytes())

    def test_result_type_and_shape(self):
        G = matrix(11, 5, 5)
        self.assertIsInstance(agt.aggregate("krum", G, 2), np.ndarray)
        t = agt.aggregate("krum", torch.from_numpy(G), 2)
        self.assertIsInstance(t, torch.Tensor)
        self.assertEqual(tuple(t.shape), (5,))
        self.assertEqual(t.dtype, torch.float32)

    def test_the_issue_example(self):
        self.assertEqual(tuple(agt.aggregate("krum", torch.randn(11, 1000), f=2).shape), (1000,))

    def test_the_pytorch_training_example(self):
        import subprocess
        import sys
        from common import ROOT
        r = subprocess.run([sys.executable, ROOT + "/examples/pytorch_training.py", "--steps", "150"],
                           capture_output=True, text=True, check=True)
        m = re.search(r"test accuracy ([0-9.]+) \(plain average: ([0-9.]+)\)", r.stdout)
        self.assertIsNotNone(m, r.stdout + r.stderr)
        self.assertGreater(float(m.group(1)), 0.9)   # median holds under reverse x100
        self.assertLess(float(m.group(2)), 0.5)      # the plain average does not

    def test_listing(self):
        self.assertIn("krum", agt.rules())
        self.assertIn("lie", agt.attacks())
        self.assertIn("trimmed-mean", agt.rules())


class Engine(unittest.TestCase):
    def test_threads_share_the_one_lua_state_safely(self):
        import threading
        G = matrix(11, 64, 9)
        want = agt.aggregate("bulyan", G, 2).tobytes()
        got = []

        def work():
            rule = agt.Rule("nnm,krum", 11, 2)
            for _ in range(20):
                got.append(agt.aggregate("bulyan", G, 2).tobytes())
                rule(G)
            rule.close()
        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(len(got), 80)
        self.assertTrue(all(g == want for g in got))

    def test_a_missing_tree_or_library_is_an_import_error_saying_what_to_set(self):
        import os
        import subprocess
        import sys
        from common import ROOT
        code = "import sys; sys.path.insert(0, %r); import agt" % (ROOT + "/bindings/python")
        lib = ROOT + "/libagt.so"
        for env, msg in (
                ({"AGT_ROOT": "/nonexistent", "AGT_LIB": lib},
                 "ImportError: agt: /nonexistent is not an agt tree (no lua/agt/foreign.lua): set AGT_ROOT"),
                ({"AGT_ROOT": "/nonexistent"},
                 "ImportError: agt: libagt.so not found beside the tree /nonexistent"),
                ({"AGT_LIB": "/nonexistent/libagt.so"},
                 "ImportError: agt: AGT_LIB names /nonexistent/libagt.so, which does not exist")):
            r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               env=dict(os.environ, **env))
            self.assertNotEqual(r.returncode, 0)
            self.assertIn(msg, r.stderr)


if __name__ == "__main__":
    unittest.main()
