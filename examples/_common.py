"""Shared by the examples: a progress bar (tqdm when installed, a minimal one
otherwise) and a clock. Import it before NumPy."""

import os
import sys
import time

# One BLAS thread. The examples' NumPy work (the output layer, the loss) is
# small, and OpenBLAS's waiting threads fight the kernel's own thread pool for
# the cores: on 2 cores, leaving both at their defaults made training several
# times slower. Set before NumPy loads OpenBLAS; a value already set wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

try:
    from tqdm import tqdm as progress
except ImportError:  # the examples also run with fusedrnn alone (CI's short mode)
    class progress:
        """The part of tqdm the examples use: iterate, set_postfix_str."""

        def __init__(self, iterable, desc=""):
            self.iterable, self.desc, self.postfix = iterable, desc, ""

        def set_postfix_str(self, s):
            self.postfix = s

        def __iter__(self):
            n = len(self.iterable)
            for i, item in enumerate(self.iterable):
                yield item
                bar = "#" * (20 * (i + 1) // n)
                sys.stderr.write(f"\r{self.desc}: [{bar:<20}] {i + 1}/{n} {self.postfix}")
            sys.stderr.write("\n")


class Clock:
    """Wall time since creation, in seconds."""

    def __init__(self):
        self.start = time.perf_counter()

    def __call__(self):
        return time.perf_counter() - self.start
