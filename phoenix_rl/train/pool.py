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


class _Deferred(Future):
    """A job of `InlineExecutor`: it runs when its result is first asked for."""

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        super().__init__()
        self._call: tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]] | None = (fn, args, kwargs)

    def result(self, timeout: float | None = None) -> Any:
        if self._call is not None:
            fn, args, kwargs = self._call
            self._call = None
            try:
                self.set_result(fn(*args, **kwargs))
            except Exception as exc:  # delivered below, as a pool would; KeyboardInterrupt & co. go through now
                self.set_exception(exc)
        return super().result(timeout)


class InlineExecutor(Executor):
    """`workers=1`: jobs run in this process, one after another, each when its result is asked for, so a
    failure (or an interrupt) stops the jobs behind it as a pool's shutdown does."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        return _Deferred(fn, args, kwargs)


def _worker_init() -> None:
    """A worker: one torch thread, denormals flushed as in `train` (backtests run there match in-process ones)."""
    from phoenix_rl.train.trainer import tune_process

    tune_process(1)


@contextmanager
def training_pool(workers: int) -> Iterator[Executor]:
    """`workers` spawned processes, or `InlineExecutor` for 1. On an error or an interrupt in the block the
    queued jobs are cancelled and the running ones terminated."""
    if workers == 1:
        yield InlineExecutor()
        return
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init)
    try:
        yield pool
    except BaseException:  # a failed job, or the run interrupted: stop the running trainings too, not wait for them
        running = list((pool._processes or {}).values())  # no public terminate before Python 3.14
        pool.shutdown(wait=False, cancel_futures=True)
        for process in running:
            process.terminate()
        raise
    pool.shutdown(wait=True)


def job_result(future: Future, where: str) -> Any:
    """The job's result; its exception keeps its own type and gets the note "in <where>" (which job raised)."""
    try:
        return future.result()
    except Exception as exc:
        exc.add_note(f"in {where}")
        raise
