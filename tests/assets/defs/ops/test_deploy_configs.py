"""deploy/: every YAML file parses; every dagster.yaml passes Dagster's instance schema, and each class it names
(storage, launcher, compute logs) imports and accepts its config where its package is installed (dagster_docker and
dagster_k8s are not: those entries are skipped, said so); the run queue limits and the training pool are the same in
every deployment; the Dockerfile's two variants are what deploy/README.md says. Nothing here builds an image or
reaches Docker, AWS or a cluster. Also: run_worker_sweep stands aside for launchers that check their workers."""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from phoenix_assets.defs.ops.dagster_internals import dagster_instance_config, resolve_to_config_type, validate_config
from phoenix_assets.defs.ops.run_health import run_worker_sweep
from tests.ui_support import REPO

DEPLOY = REPO / "deploy"
YAML_FILES = sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yaml", ".yml"})
INSTANCES = sorted(p.parent for p in DEPLOY.rglob("dagster.yaml"))
CLASS_KEYS = ("run_coordinator", "run_launcher", "compute_logs", "scheduler", "local_artifact_storage")


def test_every_deploy_yaml_parses() -> None:
    assert {p.relative_to(DEPLOY).as_posix() for p in YAML_FILES} >= {
        "postgres/dagster.yaml",
        "docker/dagster.yaml",
        "docker/docker-compose.yml",
        "docker/workspace.yaml",
        "ecs/dagster.yaml",
        "k8s/values.yaml",
    }
    for path in YAML_FILES:
        assert isinstance(yaml.safe_load(path.read_text()), dict), path


@pytest.mark.parametrize("folder", INSTANCES, ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_instance_config_is_valid_and_its_classes_accept_their_config(folder: Path) -> None:
    config, _ = dagster_instance_config(str(folder))  # the instance schema, concurrency rules included
    assert set(config["storage"]) == {"postgres"}, "deploy/ instances are on PostgreSQL"
    assert importlib.util.find_spec("dagster_postgres") is not None  # pyproject.toml's dagster-postgres
    skipped = []
    for key in CLASS_KEYS:
        entry = config.get(key)
        if not entry:
            continue
        module = entry["module"].replace("dagster.core.", "dagster._core.")
        if importlib.util.find_spec(module.split(".")[0]) is None:
            skipped.append(f"{entry['module']}.{entry['class']}")
            continue
        klass = getattr(importlib.import_module(module), entry["class"])
        result = validate_config(resolve_to_config_type(klass.config_type()), entry.get("config") or {})
        assert result.success, f"{folder.name}/dagster.yaml {key}: {[e.message for e in result.errors]}"
    if folder.name == "docker":  # dagster-docker is not a dependency (docs: deploy/README.md)
        assert skipped == ["dagster_docker.DockerRunLauncher"] or importlib.util.find_spec("dagster_docker")
    else:
        assert not skipped, skipped


def _limits_from_instance(folder: str) -> dict[str, Any]:
    concurrency = yaml.safe_load((DEPLOY / folder / "dagster.yaml").read_text())["concurrency"]
    return {
        "default_limit": concurrency["pools"]["default_limit"],
        "granularity": concurrency["pools"]["granularity"],
        "max_concurrent_runs": concurrency["runs"]["max_concurrent_runs"],
        "tags": concurrency["runs"]["tag_concurrency_limits"],
    }


def test_every_deployment_has_the_same_run_limits_and_training_pool() -> None:
    reference = _limits_from_instance("postgres")
    assert reference["default_limit"] == 1 and {"key": "phoenix/training", "limit": 1} in reference["tags"]
    assert {"key": "dagster/backfill", "limit": 2} in reference["tags"]
    for folder in ("docker", "ecs"):
        assert _limits_from_instance(folder) == reference, folder
    helm = yaml.safe_load((DEPLOY / "k8s" / "values.yaml").read_text())
    pools, runs = helm["concurrency"]["pools"], helm["concurrency"]["runs"]
    assert {
        "default_limit": pools["defaultLimit"],
        "granularity": pools["granularity"],
        "max_concurrent_runs": runs["maxConcurrentRuns"],
        "tags": runs["tagConcurrencyLimits"],
    } == reference
    assert helm["runLauncher"]["type"] == "K8sRunLauncher"
    assert helm["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    (deployment,) = helm["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "phoenix_assets.definitions"]
    assert helm["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"


def test_docker_compose_is_the_deploy_docker_shape() -> None:
    compose = yaml.safe_load((DEPLOY / "docker" / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"phoenix_postgresql", "phoenix_user_code", "phoenix_webserver", "phoenix_daemon"}
    user_code = services["phoenix_user_code"]
    assert user_code["build"]["dockerfile"] == "deploy/Dockerfile"
    assert user_code["environment"]["DAGSTER_CURRENT_IMAGE"] == user_code["image"]
    assert services["phoenix_webserver"]["entrypoint"][0] == "dagster-webserver"
    assert services["phoenix_daemon"]["entrypoint"][:2] == ["dagster-daemon", "run"]
    (entry,) = yaml.safe_load((DEPLOY / "docker" / "workspace.yaml").read_text())["load_from"]
    assert entry["grpc_server"] == {"host": "phoenix_user_code", "port": 4000, "location_name": "phoenix"}
    instance = yaml.safe_load((DEPLOY / "docker" / "dagster.yaml").read_text())
    assert instance["run_launcher"]["config"]["network"] == compose["networks"]["phoenix_network"]["name"]
    assert instance["storage"]["postgres"]["postgres_db"]["hostname"] == "phoenix_postgresql"


def test_dockerfile_has_a_cpu_and_a_cuda_variant_and_the_cuda_one_is_the_sagemaker_image() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    stages = {alias: base for base, alias in re.findall(r"^FROM (\S+) AS (\S+)$", text, flags=re.MULTILINE)}
    assert set(stages) == {"cpu", "cuda-build", "cuda"}
    assert "torch==2.13.0" in text and "download.pytorch.org/whl/cpu" in text
    cuda = text[text.index("AS cuda-build") :]
    assert "mamba-ssm==2.3.2.post1" in cuda and '".[aws,gpu]"' in cuda
    assert 'CMD ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", "4000", "-m", "phoenix_assets.definitions"]' in text
    # SageMaker runs `python -m phoenix_rl.train.sagemaker_entry` (ContainerEntrypoint): python is the venv's
    from phoenix_assets.defs.model.sagemaker import ENTRYPOINT

    assert ENTRYPOINT[0] == "python" and "ENV PATH=/opt/venv/bin:$PATH" in cuda


class HealthCheckingLauncher(dg.DefaultRunLauncher):
    """Stands in for DockerRunLauncher / EcsRunLauncher / K8sRunLauncher: workers elsewhere, health checked."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True


def test_worker_sweep_stands_aside_for_launchers_that_check_worker_health() -> None:
    launcher = {"module": __name__, "class": HealthCheckingLauncher.__name__}
    with dg.instance_for_test(overrides={"run_launcher": launcher}) as instance:
        run = instance.add_run(dg.DagsterRun("model_job", status=dg.DagsterRunStatus.STARTED))
        result = run_worker_sweep(dg.build_sensor_context(instance=instance))
        assert "HealthCheckingLauncher starts run workers elsewhere" in str(result.skip_message)
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED  # type: ignore[union-attr]
