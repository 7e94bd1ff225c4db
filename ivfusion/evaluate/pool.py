"""Scoring pairs in parallel: a process pool (forkserver), or inline for a few jobs."""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import sys
from typing import Optional

POOL_MIN_JOBS = 16
"""Fewer jobs than this are scored in this process: starting the pool (a fresh forkserver
imports numpy, OpenCV and the ivfusion package, torch included) costs more than it saves."""


def _worker_init() -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core; no thread oversubscription


class Inline:
    """Executor stand-in that runs jobs at submission (workers <= 1 or few jobs)."""

    def submit(self, fn, *args):
        f: cf.Future = cf.Future()
        try:
            f.set_result(fn(*args))
        except BaseException as e:  # re-raised by result(), as a pool would
            f.set_exception(e)
        return f

    def shutdown(self, wait=True, cancel_futures=False):
        pass


def _mp_context():
    """forkserver where available (Python 3.14's default on Linux), else spawn.

    Not fork: the calling process may hold OpenCV / OpenMP / torch thread-pool locks, and a
    forked child that touches them deadlocks (observed with OpenCV). The forkserver is a
    clean single-threaded process that preloads this package once; workers fork from it.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["ivfusion.evaluate"])
        return ctx
    return multiprocessing.get_context("spawn")


def make_pool(workers: Optional[int], jobs: int):
    """A process pool of up to ``workers`` processes (default: all cores) for ``jobs`` jobs,
    or :class:`Inline` when one process is asked for or there are fewer than POOL_MIN_JOBS."""
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    workers = min(workers, jobs)
    if workers <= 1 or jobs < POOL_MIN_JOBS:
        return Inline()
    return cf.ProcessPoolExecutor(max_workers=workers, mp_context=_mp_context(),
                                  initializer=_worker_init)


def progress(total: int, desc: str, enabled: bool):
    """A tqdm bar on stderr (disabled: a no-op bar)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="pair", disable=not enabled, file=sys.stderr,
                dynamic_ncols=True)
