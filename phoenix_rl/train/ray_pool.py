"""Trainings as Ray tasks: `RayExecutor`, the `concurrent.futures.Executor` that `training_executor` returns when a
Ray address is set (a config field, else `$RAY_ADDRESS`); without one the local pool runs them (pool.py).

Each job (`submit(fn, *args)`) is one Ray task asking for one CPU and, where the cluster has GPUs (or
`gpus_per_job` says so), one GPU: SB3 builds the model with `device="auto"`, so a task that holds a GPU trains on
CUDA and one that holds none (Ray hides the devices: CUDA_VISIBLE_DEVICES="") trains on the CPU. The task runs
the job as a pool worker does (one torch thread, denormals flushed: `tune_process(1)`), so the same seeds give
the same results as the local pool (tests/rl/train/test_ray_cluster.py).

Failures (Ray's task fault tolerance, docs.ray.io/en/latest/ray-core/fault_tolerance/tasks.html): a job that
raises is not retried (`retry_exceptions=False`: a training that fails once fails again) and its exception
keeps its type (Ray raises an instance of both `RayTaskError` and the job's own exception class), so
`job_result` adds its "in walk-forward training <arm> fold F seed S" note as for the local pool. A lost worker
process or node is a system failure: the task is resubmitted on another node up to `max_retries` times, and a
finished job's result lost with its node is rebuilt the same way (lineage reconstruction).

Arguments are put in the object store once per object (the fold's feature frame, shared by its arm x seed
trainings) rather than once per task. Ray ships no code here: the cluster's workers import phoenix from their
own environment (the deploy image on a real cluster, this venv on the 2-node test cluster), and paths in the
jobs (the walk-forward's out_dir) must be on storage every node sees.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Executor, Future
from contextlib import suppress
from typing import Any

__all__ = ["RAY_ADDRESS_ENV", "RayExecutor", "ray_address_from_env"]

RAY_ADDRESS_ENV = "RAY_ADDRESS"
_SMALL = (str, bytes, int, float, bool, type(None))


def ray_address_from_env(address: str | None) -> str | None:
    """The Ray cluster to use: `address`, else $RAY_ADDRESS (read now, never at import), else None (local pool)."""
    return address or os.environ.get(RAY_ADDRESS_ENV) or None


def _run_job(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """The body of every task: the process settings of a pool worker (pool._worker_init), then the job."""
    from phoenix_rl.train.trainer import tune_process

    tune_process(1)
    return fn(*args, **kwargs)


class _RayJob(Future):
    """One task's future: `result()` waits for it with `ray.get` (the job's exception, as its own type)."""

    def __init__(self, ref: Any) -> None:
        super().__init__()
        self.ref = ref

    def result(self, timeout: float | None = None) -> Any:
        import ray

        if not self.done():
            try:
                self.set_result(ray.get(self.ref, timeout=timeout))
            except ray.exceptions.GetTimeoutError:  # a TimeoutError; not done yet: ask again
                raise
            except Exception as exc:
                self.set_exception(exc)
        return super().result(0)

    def cancel(self) -> bool:
        import ray

        if self.done():
            return False
        ray.cancel(self.ref, force=True)  # a queued task is dropped, a running one's worker killed
        return super().cancel()


class RayExecutor(Executor):
    """Jobs as Ray tasks on the cluster `ray.init` connected this process to (module doc).

    `gpus_per_job`: None asks for one GPU per task where the cluster has any GPU, else none; a number asks for
    that many. `max_retries`: resubmissions of a task whose worker or node was lost (not of one that raised)."""

    def __init__(self, gpus_per_job: float | None = None, max_retries: int = 3) -> None:
        import ray

        if not ray.is_initialized():
            raise RuntimeError("RayExecutor: connect first (ray.init), or use training_executor(ray_address=...)")
        if gpus_per_job is None:
            gpus_per_job = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        self.gpus_per_job = gpus_per_job
        self._task = ray.remote(_run_job).options(
            num_cpus=1, num_gpus=gpus_per_job, max_retries=max_retries, retry_exceptions=False
        )
        self._shared: dict[int, tuple[Any, Any]] = {}  # id(argument) -> (argument, its ObjectRef)
        self._jobs: list[_RayJob] = []

    def _ref(self, value: Any) -> Any:
        import ray

        if isinstance(value, _SMALL):
            return value
        if id(value) not in self._shared:  # the argument is held too, so its id is not reused while it is cached
            self._shared[id(value)] = (value, ray.put(value))
        return self._shared[id(value)][1]

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        # top-level ObjectRef arguments reach the task as their values (nested ones would stay references)
        refs = {k: self._ref(v) for k, v in kwargs.items()}
        job = _RayJob(self._task.remote(fn, *(self._ref(a) for a in args), **refs))
        self._jobs.append(job)
        return job

    def alive_nodes(self) -> int:
        import ray

        return sum(1 for node in ray.nodes() if node.get("Alive"))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if cancel_futures:
            for job in self._jobs:
                job.cancel()
        if wait:
            for job in self._jobs:
                if not job.cancelled():
                    with suppress(Exception):  # the caller asks for each job's result (and error) itself
                        job.result()
        self._jobs.clear()
        self._shared.clear()
