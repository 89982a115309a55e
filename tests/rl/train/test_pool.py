"""The training pool: a failure or an interrupt stops the jobs behind it, in a pool and inline alike."""

from __future__ import annotations

import time
from concurrent.futures.process import BrokenProcessPool

import pytest

from phoenix_rl.train.pool import job_result, training_pool


def test_inline_jobs_run_when_asked_in_order_and_a_failure_stops_the_rest() -> None:
    ran: list[int] = []
    with pytest.raises(ValueError, match="invalid literal") as failed, training_pool(1) as pool:
        jobs = [pool.submit(ran.append, 1), pool.submit(int, "x"), pool.submit(ran.append, 3)]
        assert ran == []  # nothing runs at submit
        for k, job in enumerate(jobs):
            job_result(job, f"job {k}")
    assert ran == [1] and failed.value.__notes__ == ["in job 1"]


def test_an_inline_interrupt_is_not_held_back() -> None:
    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), training_pool(1) as pool:
        pool.submit(interrupted).result()


def test_a_failed_job_terminates_the_running_workers_instead_of_waiting() -> None:
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="invalid literal") as failed, training_pool(2) as pool:
        sleeper = pool.submit(time.sleep, 300)
        job_result(pool.submit(int, "x"), "the bad job")
    assert time.perf_counter() - t0 < 120  # spawn + imports, not the sleeper's 300 s
    assert failed.value.__notes__ == ["in the bad job"]
    assert isinstance(sleeper.exception(timeout=60), BrokenProcessPool)  # its worker was terminated


def test_a_pool_returns_results_and_refuses_no_workers() -> None:
    with training_pool(2) as pool:
        assert [job_result(pool.submit(pow, 2, k), "pow") for k in range(4)] == [1, 2, 4, 8]
    with pytest.raises(ValueError), training_pool(0):
        pass
