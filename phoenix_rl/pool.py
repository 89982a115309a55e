"""Worker processes for trainings: `training_pool(workers)`, shared by the walk-forward and the HPO study.

Two trainings at once on 2 cores each run at 0.94-1.01x a solo one with one torch thread each
(benchmarks/bench_training.py), against one training with 2 threads at ~1.05x: on a small machine, parallel
trainings are the way to use the cores. The workers are spawned, not forked (polars and torch are not fork-safe).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any

__all__ = ["InlineExecutor", "job_result", "training_pool"]


class InlineExecutor(Executor):
    """`workers=1`: each job runs at `submit`, in this process (no spawn, the same code path as a pool)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # delivered by .result(), as a pool would
            future.set_exception(exc)
        return future


def _worker_init() -> None:
    """A worker: one torch thread, denormals flushed as in `train` (backtests run there match in-process ones)."""
    from phoenix_rl.train import tune_process

    tune_process(1)


@contextmanager
def training_pool(workers: int) -> Iterator[Executor]:
    """`workers` spawned processes, or `InlineExecutor` for 1. On an error the queued jobs are cancelled, not run."""
    if workers == 1:
        yield InlineExecutor()
        return
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init)
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def job_result(future: Future, where: str) -> Any:
    """The job's result; its exception keeps its own type and gets the note "in <where>" (which job raised)."""
    try:
        return future.result()
    except Exception as exc:
        exc.add_note(f"in {where}")
        raise
