"""Trainings as Ray tasks on a real 2-node Ray cluster on 127.0.0.1 (`ray start --head` + `ray start --address`):
the walk-forward there equals the local pool's, a failing training names its run, fold and seed, HPO workers
share a PostgreSQL study (a journal file is refused on 2 nodes), and killing the second node mid-run still gives
the local result. Each node is a `ray start --block` in its own session, so a node is all of one process group:
the lost node is a SIGKILL of its group, and the teardown ends both groups and checks that no Ray process of
ours is left (never a `ray stop`, which would end every Ray process of this user on the machine)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import psutil
import pytest

from feature_specs import load_feature_set
from phoenix_rl.research.walk_forward import WalkForwardResult, monthly_folds, run_walk_forward, run_walk_forwards
from phoenix_rl.testing import synthetic_features
from phoenix_rl.train.ray_pool import RAY_ADDRESS_ENV
from tests.rl.research.test_walk_forward import BUSINESS_DAYS, TINY, _market

pytestmark = pytest.mark.slow

RAY = Path(__file__).resolve().parents[3] / ".venv" / "bin" / "ray"
NODE_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",  # no network here
    # the GCS declares a silent node dead after ~3 s (default ~15-30 s), so the lost node's tasks move on sooner
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}
STORE = "100000000"  # 100 MB object store per node (the default takes 30% of the machine's memory)


@dataclass
class Cluster:
    address: str
    head: subprocess.Popen
    node2: subprocess.Popen
    temp_dir: str

    def processes(self, group: int) -> list[psutil.Process]:
        """The node's processes: its `ray start` session (raylet, GCS, agents) and their children (Ray's
        workers run in sessions of their own, under the raylet)."""
        found: dict[int, psutil.Process] = {}
        for p in psutil.process_iter():
            with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
                if os.getpgid(p.pid) == group:
                    found[p.pid] = p
                    found |= {c.pid: c for c in p.children(recursive=True)}
        return [p for p in found.values() if _alive(p)]

    def kill(self, group: int) -> None:
        """SIGKILL the node at once (a lost machine): its workers first, then its session."""
        for p in self.processes(group):
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)


def _alive(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive_nodes(address: str) -> int:
    import ray

    ray.init(address=address, logging_level="ERROR", configure_logging=False)
    try:
        return sum(1 for n in ray.nodes() if n["Alive"])
    finally:
        ray.shutdown()


def _end_group(proc: subprocess.Popen, grace_s: float = 3.0) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # the raylet, GCS, agents and workers of that node
    proc.wait(timeout=30)


@contextlib.contextmanager
def local_ray_cluster(nodes: int = 2, cpus_per_node: int = 1) -> Iterator[Cluster]:
    """`nodes` Ray nodes on 127.0.0.1 (a head, then `ray start --address` nodes with a resource "node<k>"); on
    exit every process of theirs is ended and checked gone. Also used by benchmarks/bench_ray_fanout.py."""
    if not RAY.exists():
        raise FileNotFoundError(f"{RAY} missing: pip install -e . (ray is a dependency)")
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's Unix socket paths live under it
    port = _free_port()
    address = f"127.0.0.1:{port}"
    env = {**os.environ, **NODE_ENV}
    env.pop(RAY_ADDRESS_ENV, None)
    common = ["--block", "--node-ip-address", "127.0.0.1", "--num-cpus", str(cpus_per_node)]
    common += ["--object-store-memory", STORE]
    log_path = Path(temp_dir) / "nodes.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed on exit
    head_args = ["--head", "--port", str(port), "--include-dashboard", "false", "--disable-usage-stats"]
    # fixed default ports (Ray Client 10001, dashboard 8265) would collide with another cluster on this machine
    head_args += ["--ray-client-server-port", str(_free_port()), "--dashboard-port", str(_free_port())]
    spawn = {"env": env, "start_new_session": True, "stdout": log, "stderr": subprocess.STDOUT}
    started = [subprocess.Popen([str(RAY), "start", *head_args, "--temp-dir", temp_dir, *common], **spawn)]
    try:
        for _ in range(120):  # the GCS answers after a few seconds
            time.sleep(0.5)
            if started[0].poll() is not None:
                raise RuntimeError(f"ray start --head exited: {log_path.read_text()[-2000:]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
        for k in range(2, nodes + 1):
            resources = json.dumps({f"node{k}": 1})
            started.append(
                subprocess.Popen([str(RAY), "start", "--address", address, "--resources", resources, *common], **spawn)
            )
        deadline = time.monotonic() + 60
        while _alive_nodes(address) < nodes:
            if time.monotonic() > deadline or any(p.poll() is not None for p in started):
                raise RuntimeError(f"{nodes} Ray nodes not up: {log_path.read_text()[-2000:]}")
            time.sleep(0.5)
        yield Cluster(address, started[0], started[-1], temp_dir)
    finally:
        probe = Cluster(address, started[0], started[-1], temp_dir)
        ours = [p for node in started for p in probe.processes(node.pid)]
        for proc in reversed(started):
            _end_group(proc)
        log.close()
        deadline = time.monotonic() + 15  # workers exit by themselves once their raylet is gone
        while (left := [p for p in ours if _alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.2)
        for p in left:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        assert not left, f"Ray processes left behind: {left}"
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with local_ray_cluster(nodes=2) as started:
        yield started


def _same(a: WalkForwardResult, b: WalkForwardResult) -> None:
    assert [f.val_scores for f in a.folds] == [f.val_scores for f in b.folds]
    assert [f.chosen_seed for f in a.folds] == [f.chosen_seed for f in b.folds]
    assert a.fold_table().equals(b.fold_table())
    for fa, fb in zip(a.folds, b.folds, strict=True):
        for strategy in fa.test:
            assert fa.test[strategy].equity.equals(fb.test[strategy].equity), strategy
    assert all(a.stitched[s].equals(b.stitched[s]) for s in a.stitched)


FOLDS = monthly_folds(BUSINESS_DAYS, train_months=1, n_folds=2)
MARKET = _market(BUSINESS_DAYS)


@pytest.fixture(scope="module")
def local_result(tmp_path_factory: pytest.TempPathFactory) -> WalkForwardResult:
    out = tmp_path_factory.mktemp("local")
    return run_walk_forward(lambda f: MARKET, FOLDS, TINY, [1, 2], out, workers=2, log=lambda _: None)


def test_walk_forward_on_two_ray_nodes_equals_the_local_pool(
    cluster: Cluster, local_result: WalkForwardResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray

    monkeypatch.setenv(RAY_ADDRESS_ENV, cluster.address)  # the address setting: $RAY_ADDRESS
    lines: list[str] = []
    result = run_walk_forward(lambda f: MARKET, FOLDS, TINY, [1, 2], tmp_path, workers=2, log=lines.append)
    _same(local_result, result)
    assert any(line.startswith(f"Ray cluster {cluster.address}: 2 node(s), 2 CPU(s), 0 GPU(s)") for line in lines)
    assert any("on Ray tasks" in line for line in lines), lines
    assert (tmp_path / "fold1" / "seed2" / "model.zip").exists()
    assert not ray.is_initialized()  # disconnected after the run


def test_a_failing_training_on_ray_names_its_run_fold_and_seed(cluster: Cluster, tmp_path: Path) -> None:
    no_features = _market(BUSINESS_DAYS[:3]).drop(load_feature_set("phase2_ofi").columns[0])
    with pytest.raises(ValueError, match="lacks columns") as failed:
        run_walk_forwards(
            lambda f: no_features, FOLDS, {"arm": (TINY, [1])}, tmp_path, log=lambda _: None,
            ray_address=cluster.address,
        )  # fmt: skip
    assert "in walk-forward training arm fold 0 seed 1" in (failed.value.__notes__ or [])


def test_hpo_workers_on_two_ray_nodes_share_a_postgresql_study(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import optuna

    from phoenix_rl.research import hpo
    from tests.rl.research.test_hpo import _postgres_url, _settings

    cols = load_feature_set("phase2_ofi").columns
    frame = synthetic_features(cols, n_sessions=12, bars_per_session=40, first_trade_date=dt.date(2024, 3, 4))
    frame = frame.with_columns(pl.col("warm").alias("warm_phase2_ofi"))  # test_hpo's `features`
    url = _postgres_url()  # before the journal check: skipped (or failed in CI) without PostgreSQL
    monkeypatch.delenv(hpo.STORAGE_ENV, raising=False)
    with pytest.raises(ValueError, match="a file on this machine, but its workers would run on a 2-node Ray"):
        hpo.run_study_workers(_settings(), frame, "journal", str(tmp_path), 2, workers=2, ray_address=cluster.address)
    monkeypatch.setenv(hpo.STORAGE_ENV, url)
    name = f"ray_{uuid.uuid4().hex[:8]}"
    study = hpo.run_study_workers(_settings(), frame, name, None, n_trials=3, workers=2, ray_address=cluster.address)
    assert 3 <= len(study.get_trials(states=hpo.FINISHED)) <= 4
    assert not study.get_trials(states=(optuna.trial.TrialState.FAIL,))
    ran_in = {tuple(t.user_attrs["worker"].split("/")[1:]) for t in study.trials}  # host/pid/worker index
    assert {k for _, k in ran_in} == {"0", "1"} and len({pid for pid, _ in ran_in}) == 2  # two tasks at once


def test_a_lost_node_is_retried_and_the_walk_forward_still_gives_the_local_result(
    cluster: Cluster, local_result: WalkForwardResult, tmp_path: Path
) -> None:
    """The second node is SIGKILLed (raylet, agents, its busy worker) while it runs a training."""
    killed: list[str] = []
    seen: set[str] = set()

    def kill_node2_when_busy() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            titles = []
            for p in cluster.processes(cluster.node2.pid):
                with contextlib.suppress(psutil.NoSuchProcess):
                    titles.append(" ".join(p.cmdline()))
            seen.update(titles)
            busy = [t for t in titles if t.startswith("ray::_run_job")]  # a worker's title while it runs a job
            if busy:
                time.sleep(0.3)  # mid-training
                killed.extend(busy)
                cluster.kill(cluster.node2.pid)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_node2_when_busy, daemon=True)
    killer.start()
    result = run_walk_forward(
        lambda f: MARKET, FOLDS, TINY, [1, 2], tmp_path, log=lambda _: None, ray_address=cluster.address
    )
    killer.join(timeout=5)
    assert killed, f"the second node never ran a training: {sorted(seen)}"
    _same(local_result, result)
    cluster.node2.wait(timeout=30)
    assert not cluster.processes(cluster.node2.pid)
    assert _alive_nodes(cluster.address) == 1
