"""NumPy's BLAS around fusedrnn's own NumPy work (docs/design.md §8).

After a multi-thread call OpenBLAS's threads spin for about 0.1 s waiting for
the next one, each on a core: a fusedrnn call in that time shares those cores
with them and can run slower on 2 threads than on 1. So the NumPy parts of
fusedrnn's own code (the network's output layer, the reference the command
line times) run on the calling thread alone: `serial()` sets NumPy's BLAS to
one thread inside and gives it back its own count after, through
threadpoolctl; it wakes none of BLAS's threads. Users' own loops: docs/api.md.
"""

from functools import wraps

from threadpoolctl import ThreadpoolController

_controller = None


def _libraries():
    """threadpoolctl's view of the thread pools loaded, taken once: it reads
    the process's libraries, which costs milliseconds."""
    global _controller
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller


def serial():
    """A context in which NumPy's BLAS runs on the calling thread only."""
    return _libraries().limit(limits=1, user_api="blas")


def serially(fn):
    """fn, its calls run under serial()."""
    @wraps(fn)
    def call(*args, **kwargs):
        with serial():
            return fn(*args, **kwargs)
    return call


def info():
    """threadpoolctl's description of each pool (BLAS and OpenMP) loaded."""
    return _libraries().info()
