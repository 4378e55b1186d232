"""agt from PyTorch CUDA tensors: the GPU kernels on the tensor's memory, ordered with PyTorch's
current stream; against the CPU path and the plain PyTorch references. Pending (skipped, with
the reason) where agt has no CUDA device or PyTorch was built without CUDA."""
import unittest

import torch

from common import agt, matrix_t, raw, RULE_CASES
import reference

WHY = None
if not torch.cuda.is_available():
    WHY = "PyTorch sees no CUDA device (torch %s)" % torch.__version__
elif not agt.gpu_available():
    WHY = "agt has no CUDA device: " + str(agt.info().get("gpu_why"))

D = 1037


def cpu_tolerance(spec):
    """As spec/gpu_spec.lua holds the GPU to the CPU: the iterative rules to 1e-4, clipping and
    ARC to 1e-6 (a scale factor may differ in its last bit), everything else bit for bit."""
    if spec.split(",")[-1] in ("geometric-median", "centered-clipping"):
        return 1e-4
    if "clipping" in spec.split(",") or "arc" in spec.split(","):
        return 1e-6
    return 0.0


@unittest.skipIf(WHY is not None, WHY or "")
class Gpu(unittest.TestCase):
    def test_every_rule_on_cuda_tensors_against_cpu_and_pytorch(self):
        for spec, n, f, args in RULE_CASES:
            for nonfinite in (False, True):
                with self.subTest(spec=spec, n=n, f=f, args=args, nonfinite=nonfinite):
                    G = matrix_t(n, D, 11 + n, nonfinite)
                    cpu, ci = agt.aggregate(spec, G, f, return_info=True, **args)
                    Gd = G.cuda()
                    gpu, gi = agt.aggregate(spec, Gd, f, return_info=True, **args)
                    self.assertEqual(gpu.device, Gd.device)
                    self.assertEqual(gi.get("selected"), ci.get("selected"))
                    back = gpu.cpu()
                    t = cpu_tolerance(spec)
                    torch.testing.assert_close(back, cpu, rtol=t, atol=t, equal_nan=True)
                    tol = max(t, 1e-5)
                    if not args and "bucketing" not in spec:
                        want = reference.reference(spec, G, f)
                        fin = torch.isfinite(want)
                        torch.testing.assert_close(back.double()[fin], want[fin], rtol=tol, atol=tol)

    def test_on_a_side_stream(self):
        G = matrix_t(25, 1 << 20, 3).cuda()
        want = agt.aggregate("median", G, 5).cpu()
        s = torch.cuda.Stream()
        with torch.cuda.stream(s):
            X = G * 1.0        # queued on s: agt must wait for it
            g = agt.aggregate("median", X, 5)
            h = g + 0          # queued on s after agt's result
        s.synchronize()
        self.assertEqual(raw(h.cpu()), raw(want))

    def test_cuda_refusals(self):
        G = matrix_t(11, 8, 2)
        with self.assertRaisesRegex(TypeError, "this rule was made for cuda arrays"):
            agt.Rule("median", 11, 2, device="cuda")(G)
        with self.assertRaisesRegex(TypeError, "this rule was made for cpu arrays"):
            agt.Rule("median", 11, 2)(G.cuda())
        with self.assertRaisesRegex(TypeError, "out must be a torch.Tensor on cuda:0 like G"):
            agt.aggregate("median", G.cuda(), 2, out=torch.zeros(8))
        with self.assertRaisesRegex(TypeError, r"attacks run on the CPU.*honest.cpu\(\)"):
            agt.attack("lie", G.cuda(), 2)


if __name__ == "__main__":
    unittest.main()
