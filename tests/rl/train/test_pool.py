"""The training pool: a failure or an interrupt stops the jobs behind it, in a pool and inline alike; its
workers die with the process that owns the pool, also on `kill -9`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import psutil
import pytest

from phoenix_assets.lib.process_lifetime import pid_alive
from phoenix_rl.train.pool import job_result, training_pool
from tests.conftest import REPO

GONE_WITHIN_S = 5.0

# a pool owner: two workers each run `hold` (writes its pid, then sleeps) until the test kills the owner
OWNER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from phoenix_rl.train.pool import training_pool

    def hold(marker: str) -> None:
        Path(marker).write_text(str(os.getpid()))
        time.sleep(300)

    if __name__ == "__main__":
        with training_pool(2) as pool:
            for k in range(2):
                pool.submit(hold, os.path.join(sys.argv[1], f"worker{k}"))
            time.sleep(300)
    """
)


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


def test_a_pool_refuses_jobs_from_another_thread() -> None:
    # a worker started from a thread that then ends would be SIGKILLed with that thread (PR_SET_PDEATHSIG)
    refused: list[BaseException] = []
    with training_pool(2) as pool:

        def submit_here() -> None:
            try:
                pool.submit(pow, 2, 3)
            except RuntimeError as exc:
                refused.append(exc)

        thread = threading.Thread(target=submit_here)
        thread.start()
        thread.join()
        assert job_result(pool.submit(pow, 2, 3), "pow") == 8  # the owner's thread still can
    assert len(refused) == 1 and "thread that opened the pool" in str(refused[0])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_kill_9_of_the_pool_owner_kills_its_workers_and_the_resource_tracker(tmp_path: Path) -> None:
    # issue 29: a killed HPO run's workers were re-parented to PID 1 and went on running trials, and
    # multiprocessing's resource tracker (which exits once no process holds its pipe) stayed with them
    script = tmp_path / "owner.py"
    script.write_text(OWNER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    owner = subprocess.Popen([sys.executable, str(script), str(tmp_path)], cwd=REPO, env=env)
    markers = [tmp_path / f"worker{k}" for k in range(2)]
    watched: list[int] = []
    try:
        deadline = time.monotonic() + 120  # spawn + the workers' imports (torch)
        while not all(m.exists() and m.read_text() for m in markers):
            assert owner.poll() is None, f"the pool owner exited ({owner.returncode})"
            assert time.monotonic() < deadline, "the workers never started their jobs"
            time.sleep(0.05)
        workers = [int(m.read_text()) for m in markers]
        children = {p.pid: " ".join(p.cmdline()) for p in psutil.Process(owner.pid).children()}
        trackers = [pid for pid, cmd in children.items() if "resource_tracker" in cmd]
        assert set(workers) < set(children) and len(trackers) == 1, children
        watched = workers + trackers

        owner.kill()
        owner.wait(timeout=10)
        deadline = time.monotonic() + GONE_WITHIN_S
        while any(pid_alive(p) for p in watched) and time.monotonic() < deadline:
            time.sleep(0.05)
        survivors = {p: children[p] for p in watched if pid_alive(p)}
        assert not survivors, f"outlived the killed pool owner: {survivors}"
    finally:
        owner.kill()
        owner.wait(timeout=10)
        for pid in watched:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
