"""Worker processes for trainings: `training_pool(workers)`, shared by the walk-forward and the HPO study.

Two trainings at once on 2 cores each run at 0.94-1.01x a solo one with one torch thread each
(benchmarks/bench_training.py), against one training with 2 threads at ~1.05x: on a small machine, parallel
trainings are the way to use the cores. The workers are spawned, not forked (polars and torch are not fork-safe).

The workers die with the process that owns the pool (`process_lifetime.die_with_parent`, PR_SET_PDEATHSIG): a
`kill -9` of the run used to leave them running trials unsupervised, re-parented to PID 1 (issue 29). The kernel
sends that signal when the *thread* that started a worker exits, and CPython 3.11's ProcessPoolExecutor starts
spawn workers lazily, in `submit`, in the calling thread (its manager thread starts replacements only under
`max_tasks_per_child`, not used here; a pool whose worker died is broken, not refilled). So the pool takes jobs
only from the thread that opened it, which holds the `with` block and so outlives the workers: a worker started
from a short-lived thread would be SIGKILLed when that thread ends. multiprocessing's resource tracker needs
nothing: it exits when the last process holding its pipe (the owner and the workers) is gone.

`training_executor(workers, ray_address)` is what the walk-forward and the HPO study open: this pool, or, with a Ray
address (the argument, else $RAY_ADDRESS), the same jobs as Ray tasks on that cluster (ray_pool.py). The pool
stays the default: it needs no daemon, and its workers die with the run, which a Ray cluster's do not.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any

from phoenix_assets.lib.process_lifetime import die_with_parent

__all__ = ["InlineExecutor", "job_result", "training_executor", "training_pool"]


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


def _worker_init(owner_pid: int) -> None:
    """A worker: dies with the pool's owner `owner_pid` (exits at once if it is already gone); one torch thread,
    denormals flushed as in `train` (backtests run there match in-process ones)."""
    die_with_parent(owner_pid)
    from phoenix_rl.train.trainer import tune_process

    tune_process(1)


class _TrainingProcessPool(ProcessPoolExecutor):
    """Spawned workers that die with this process; jobs are submitted from the thread that created the pool
    only: a worker dies when the thread that started it exits (PR_SET_PDEATHSIG), and CPython starts workers in
    `submit` (module docstring)."""

    def __init__(self, workers: int) -> None:
        super().__init__(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_init,
            initargs=(os.getpid(),),
        )
        self._owner_thread = threading.get_ident()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        if threading.get_ident() != self._owner_thread:
            raise RuntimeError(
                "training_pool: submit jobs from the thread that opened the pool: a worker started from another "
                "thread would be killed when that thread ends (its death signal is tied to it)"
            )
        return super().submit(fn, *args, **kwargs)


@contextmanager
def training_pool(workers: int) -> Iterator[Executor]:
    """`workers` spawned processes that die with this process (also on `kill -9`), or `InlineExecutor` for 1.
    Submit from the thread that opened it. On an error or an interrupt in the block the queued jobs are
    cancelled and the running ones terminated."""
    if workers == 1:
        yield InlineExecutor()
        return
    pool = _TrainingProcessPool(workers)
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


@contextmanager
def training_executor(
    workers: int,
    ray_address: str | None = None,
    *,
    gpus_per_job: float | None = None,
    max_retries: int = 3,
    log: Callable[[str], None] | None = None,
) -> Iterator[Executor]:
    """Where the trainings run: `training_pool(workers)`, or with a Ray address (`ray_address`, else
    $RAY_ADDRESS; "auto" finds a cluster started on this machine) a `RayExecutor` on that cluster, each job a
    task (one CPU; one GPU where the cluster has GPUs or per `gpus_per_job`; retried `max_retries` times when
    its node is lost). On Ray `workers` does not cap the jobs at once: the cluster's free CPUs and GPUs do.
    This process connects for the block and disconnects after it, unless it was connected already; on an error
    the jobs not finished are cancelled, as the pool terminates its workers."""
    from phoenix_rl.train.ray_pool import RayExecutor, ray_address_from_env

    address = ray_address_from_env(ray_address)
    if address is None:
        with training_pool(workers) as pool:
            yield pool
        return
    import ray

    connected_here = not ray.is_initialized()
    if connected_here:
        ray.init(address=address, logging_level="WARNING", configure_logging=False)
    try:
        executor = RayExecutor(gpus_per_job=gpus_per_job, max_retries=max_retries)
        if log is not None:
            resources = ray.cluster_resources()
            log(
                f"Ray cluster {address}: {executor.alive_nodes()} node(s), {resources.get('CPU', 0):g} CPU(s), "
                f"{resources.get('GPU', 0):g} GPU(s); {executor.gpus_per_job:g} GPU(s) per task"
            )
        try:
            yield executor
        except BaseException:
            executor.shutdown(wait=False, cancel_futures=True)
            raise
        executor.shutdown(wait=True)
    finally:
        if connected_here:
            ray.shutdown()
