"""Keep OpenBLAS single-threaded while the local service trains.

A tiny model's matrices are small: with OpenBLAS's own thread pool, concurrent jobs on 2 cores
spend their time contending. Measured on the 2-core box, 4 concurrent quickstart jobs: 2.1 s
with the default pool, 1.2 s with ``openblas_set_num_threads_local`` per worker, 0.6 s with the
process-wide setting. So the service sets it process-wide (the parallelism comes from its
worker threads instead). Where no OpenBLAS symbol or ``/proc/self/maps`` exists, a no-op.
"""

from __future__ import annotations

import ctypes
from functools import cache
from typing import Any

_SYMBOLS = (
    "scipy_openblas_set_num_threads64_",  # numpy >= 2 wheels (scipy-openblas, ILP64)
    "scipy_openblas_set_num_threads",
    "openblas_set_num_threads64_",
    "openblas_set_num_threads",
)


@cache
def _setter() -> Any:
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower()}
    except OSError:
        return None
    for path in sorted(paths):
        for symbol in _SYMBOLS:
            try:
                fn = getattr(ctypes.CDLL(path), symbol)
            except (OSError, AttributeError):
                continue
            fn.argtypes = [ctypes.c_int]
            fn.restype = None
            return fn
    return None


def single_thread_blas() -> bool:
    """Make BLAS single-threaded (best effort); True when it could."""
    import numpy  # noqa: F401 - loads OpenBLAS so /proc/self/maps lists it

    fn = _setter()
    if fn is None:
        return False
    fn(1)
    return True
