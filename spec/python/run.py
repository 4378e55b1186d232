"""Runs the Python package's tests (spec/python/test_*.py, or the files named) with unittest and
ends with one line "N passed, N failed (python; N pending)" that make test adds to its total.
A test counts once (its subtests are its assertions); a skipped test is pending, with its
reason printed. Without PyTorch the run fails, saying so; without NumPy the files that use it
fail to load (test_gpu.py needs only PyTorch).

    python3 spec/python/run.py [spec/python/test_x.py ...]
"""
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


class Result(unittest.TextTestResult):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.failed_tests = set()
        self.passed = 0

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self.failed_tests.add(test.id())

    def addSuccess(self, test):
        super().addSuccess(test)
        if test.id() not in self.failed_tests:
            self.passed += 1


def main(argv):
    for mod in ("torch",):
        try:
            __import__(mod)
        except ImportError as e:
            print("python tests need %s (Debian: python3-%s; make setup installs it): %s"
                  % (mod, mod, e))
            print("0 passed, 1 failed (python; 0 pending)")
            return 1
    loader = unittest.TestLoader()
    files = argv or sorted(os.path.join(HERE, f) for f in os.listdir(HERE)
                           if f.startswith("test_") and f.endswith(".py"))
    suite = unittest.TestSuite()
    broken = 0
    for path in files:
        name = os.path.splitext(os.path.basename(path))[0]
        try:
            suite.addTests(loader.loadTestsFromName(name))
        except Exception as e:  # a file that does not load is one failure, named
            print("cannot load %s: %s: %s" % (path, type(e).__name__, e))
            broken += 1
    runner = unittest.TextTestRunner(resultclass=Result, verbosity=2, stream=sys.stdout)
    r = runner.run(suite)
    for test, why in r.skipped:
        print("pending: %s: %s" % (test.id(), why))
    failed_ids = {getattr(t, "test_case", t).id() for t, _ in r.failures + r.errors}
    failed = len(failed_ids | r.failed_tests) + len(r.unexpectedSuccesses) + broken
    print("%d passed, %d failed (python; %d pending)" % (r.passed, failed, len(r.skipped)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
