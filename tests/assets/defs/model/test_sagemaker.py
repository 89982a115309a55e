"""mamba_sac_model with launch="sagemaker", end to end against a moto server on 127.0.0.1 (no AWS account needed).

The launcher really talks to moto: S3 uploads of the channels, create_training_job, describe_training_job,
Pipes context and messages through S3, the model.tar.gz download. moto stores and returns the job spec but runs
no container: it reports every job Completed the moment it is created and does not keep `Environment`
(moto/sagemaker/models.py, FakeTrainingJob). `Platform` plays the rest of SageMaker: it reads the job back from
moto, downloads its channels into a temporary /opt/ml tree, runs the real container entry
(`python -m phoenix_rl.train.sagemaker_entry` with the job's Environment and ContainerArguments), syncs the checkpoint
folder to CheckpointConfig.S3Uri, tars the model folder to the job's S3ModelArtifacts, and owns the job's
status (InProgress until the container exits, then Completed, or Failed with SageMaker's
"AlgorithmError: <output/failure>" reason) by overlaying it on moto's describe_training_job answers.
The Environment is taken from the launcher's create_training_job call, as SageMaker would receive it.
"""

import copy
import datetime as dt
import io
import json
import os
import queue
import re
import subprocess
import sys
import tarfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import dagster as dg
import pytest

from phoenix_assets.defs.model.assets import mamba_sac_model
from phoenix_assets.defs.model.sagemaker import SageMakerConfigError, SageMakerResource, job_name
from phoenix_assets.defs.resources import LakeResource
from phoenix_assets.lib.io.lake import Lake
from tests.conftest import REPO, TINY_MODEL_CONFIG

BUCKET = "phoenix-sagemaker"
ROLE = "arn:aws:iam::123456789012:role/phoenix-sagemaker"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/phoenix-train:latest"
TINY = {**TINY_MODEL_CONFIG, "launch": "sagemaker"}
FAST = {"poll_interval_s": 0.5, "checkpoint_every": 32}


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def _keys(s3: Any, uri: str) -> list[str]:
    bucket, prefix = _split(uri)
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]


class Platform:
    """SageMaker's side of a training job, for jobs created on the moto server (module doc)."""

    def __init__(self, endpoint: str, work: Path) -> None:
        self.endpoint, self.work = endpoint, work
        self.created: queue.Queue[str] = queue.Queue()
        self.requests: dict[str, dict[str, Any]] = {}  # what create_training_job received, Environment included
        self.described: dict[str, dict[str, Any]] = {}  # the job as moto stores it
        self.status: dict[str, dict[str, str]] = {}  # the platform's view, overlaid on moto's answers
        self.containers: dict[str, subprocess.CompletedProcess[str]] = {}
        self.errors: list[BaseException] = []
        self.client_calls = 0
        self._thread: threading.Thread | None = None

    # the launcher's sagemaker client: see its requests, answer describe with the platform's status
    def observe(self, client: Any) -> Any:
        client.meta.events.register("provide-client-params.sagemaker.CreateTrainingJob", self._on_create)
        client.meta.events.register("after-call.sagemaker.CreateTrainingJob", self._on_created)
        client.meta.events.register("after-call.sagemaker.DescribeTrainingJob", self._on_describe)
        return client

    def _on_create(self, params: dict[str, Any], **_: Any) -> None:
        name = params["TrainingJobName"]
        self.requests[name] = copy.deepcopy(params)
        self.status[name] = {"TrainingJobStatus": "InProgress", "SecondaryStatus": "Starting"}

    def _on_created(self, http_response: Any, parsed: dict[str, Any], **_: Any) -> None:
        """Only once moto has stored the job (not when the request is built) may the platform describe it."""
        if http_response.status_code == 200:
            self.created.put(parsed["TrainingJobArn"].rsplit("/", 1)[1])

    def _on_describe(self, parsed: dict[str, Any], **_: Any) -> None:
        if parsed.get("TrainingJobName") in self.status:
            parsed.update(self.status[parsed["TrainingJobName"]])

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def join(self) -> None:
        assert self._thread is not None
        self._thread.join(timeout=180)
        if self.errors:
            raise self.errors[0]

    def _serve(self) -> None:
        try:
            name = self.created.get(timeout=120)
        except queue.Empty:
            return
        try:
            self._run_job(name)
        except BaseException as exc:  # surfaced by join(); fail the job so the launcher stops waiting
            self.errors.append(exc)
            self.status[name] = {"TrainingJobStatus": "Failed", "SecondaryStatus": "Failed", "FailureReason": repr(exc)}

    def _run_job(self, name: str) -> None:
        sm = boto3.client("sagemaker", endpoint_url=self.endpoint, region_name="us-east-1")  # moto's own answers
        s3 = boto3.client("s3", endpoint_url=self.endpoint)
        job = self.described[name] = sm.describe_training_job(TrainingJobName=name)
        root = self.work / name / "opt_ml"
        for channel in job["InputDataConfig"]:
            uri = channel["DataSource"]["S3DataSource"]["S3Uri"]
            bucket, prefix = _split(uri)
            for key in _keys(s3, uri):
                dest = root / "input" / "data" / channel["ChannelName"] / key[len(prefix) :].lstrip("/")
                dest.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, key, str(dest))
        self.status[name]["SecondaryStatus"] = "Training"
        spec = job["AlgorithmSpecification"]
        entry = spec["ContainerEntrypoint"]
        command = [sys.executable if entry[0] == "python" else entry[0], *entry[1:], *spec["ContainerArguments"]]
        env = {k: v for k, v in os.environ.items() if k.startswith("AWS_") or k in ("PATH", "HOME", "LANG")}
        env |= self.requests[name]["Environment"] | {"PHOENIX_SM_ROOT": str(root)}
        proc = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=150)
        self.containers[name] = proc
        local_ckpt = root / job["CheckpointConfig"]["LocalPath"].removeprefix("/opt/ml/")
        ckpt_bucket, ckpt_prefix = _split(job["CheckpointConfig"]["S3Uri"])
        for f in sorted(local_ckpt.glob("*")):
            s3.upload_file(str(f), ckpt_bucket, ckpt_prefix.rstrip("/") + "/" + f.name)
        if proc.returncode != 0:
            failure = root / "output" / "failure"
            reason = failure.read_text() if failure.exists() else proc.stderr[-500:]
            self.status[name] = {
                "TrainingJobStatus": "Failed",
                "SecondaryStatus": "Failed",
                "FailureReason": f"AlgorithmError: {reason}, exit code: {proc.returncode}",
            }
            return
        self.status[name]["SecondaryStatus"] = "Uploading"
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w:gz") as tar:
            for f in sorted((root / "model").iterdir()):
                tar.add(f, arcname=f.name)
        bucket, key = _split(job["ModelArtifacts"]["S3ModelArtifacts"])
        s3.put_object(Bucket=bucket, Key=key, Body=archive.getvalue())
        self.status[name] = {"TrainingJobStatus": "Completed", "SecondaryStatus": "Completed"}


@pytest.fixture
def sagemaker_env(s3_env: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The SageMaker settings in the environment (as a deployment would set them); a fresh prefix per test."""
    s3 = boto3.client("s3", endpoint_url=s3_env)
    if BUCKET not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket=BUCKET)
    prefix = f"jobs-{uuid.uuid4().hex[:8]}"
    for key, value in {
        "PHOENIX_SAGEMAKER_ROLE_ARN": ROLE,
        "PHOENIX_SAGEMAKER_IMAGE_URI": IMAGE,
        "PHOENIX_SAGEMAKER_BUCKET": BUCKET,
        "PHOENIX_SAGEMAKER_PREFIX": prefix,
    }.items():
        monkeypatch.setenv(key, value)
    return prefix


@pytest.fixture
def platform(s3_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Platform]:
    plat = Platform(s3_env, tmp_path / "sagemaker")
    original = SageMakerResource.client

    def client(self: SageMakerResource, service: str, region: str) -> Any:
        plat.client_calls += 1
        made = original(self, service, region)
        return plat.observe(made) if service == "sagemaker" else made

    monkeypatch.setattr(SageMakerResource, "client", client)
    yield plat


def _materialize(
    features_lake_root: str,
    instance: dg.DagsterInstance,
    resource_config: dict[str, Any] | None = None,
    **overrides: Any,
) -> dg.ExecuteInProcessResult:
    run_config = dg.RunConfig(ops={"mamba_sac_model": {"config": {**TINY, **overrides}}})
    sagemaker = SageMakerResource(**(FAST if resource_config is None else resource_config))
    return dg.materialize(
        [mamba_sac_model],
        resources={
            "lake": LakeResource(uri=features_lake_root),
            "pipes_subprocess_client": dg.PipesSubprocessClient(),
            "sagemaker": sagemaker,
        },
        run_config=run_config,
        instance=instance,
        raise_on_error=False,
    )


def _failure(result: dg.ExecuteInProcessResult) -> str:
    return str(next(e for e in result.all_events if e.is_step_failure).step_failure_data.error)


@pytest.mark.slow
def test_sagemaker_job_trains_and_the_model_lands_in_the_lake(
    features_lake_root: str, sagemaker_env: str, platform: Platform, instance: dg.DagsterInstance, s3_env: str
) -> None:
    platform.start()
    result = _materialize(features_lake_root, instance)
    platform.join()
    assert result.success, _failure(result)
    [name] = platform.requests
    assert re.fullmatch(r"phoenix-sac-\d{8}-\d{6}-[0-9a-f]{8}", name) and len(name) <= 63
    assert platform.containers[name].returncode == 0, platform.containers[name].stderr[-2000:]

    # the job spec, as moto stored it
    job = platform.described[name]
    assert job["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert job["AlgorithmSpecification"]["TrainingInputMode"] == "File"
    assert job["AlgorithmSpecification"]["ContainerEntrypoint"] == ["python", "-m", "phoenix_rl.train.sagemaker_entry"]
    assert job["AlgorithmSpecification"]["ContainerArguments"] == [
        "--checkpoint-every",
        "32",
        "--pipes-interval",
        "0.5",
    ]
    assert job["RoleArn"] == ROLE
    assert job["ResourceConfig"] == {"InstanceType": "ml.g4dn.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30}
    assert job["EnableManagedSpotTraining"] is True
    stopping = job["StoppingCondition"]
    assert stopping["MaxWaitTimeInSeconds"] >= stopping["MaxRuntimeInSeconds"] > 0
    assert job["CheckpointConfig"] == {
        "S3Uri": f"s3://{BUCKET}/{sagemaker_env}/{name}/checkpoints/",
        "LocalPath": "/opt/ml/checkpoints",
    }
    assert job["OutputDataConfig"]["S3OutputPath"] == f"s3://{BUCKET}/{sagemaker_env}"
    s3 = boto3.client("s3", endpoint_url=s3_env)
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in job["InputDataConfig"]}
    assert channels == {
        "features": f"s3://{BUCKET}/{sagemaker_env}/{name}/input/features/",
        "config": f"s3://{BUCKET}/{sagemaker_env}/{name}/input/config/",
    }
    assert _keys(s3, channels["features"]) == [f"{sagemaker_env}/{name}/input/features/features.parquet"]
    uploaded_cfg = json.loads(s3.get_object(Bucket=BUCKET, Key=_keys(s3, channels["config"])[0])["Body"].read())
    assert uploaded_cfg["total_timesteps"] == 64 and uploaded_cfg["train_end"] == "2024-03-13"

    # what only the create request carries (moto drops it): Pipes bootstrap params within SageMaker's limits
    request = platform.requests[name]
    assert {"DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES"} <= set(request["Environment"])
    assert all(len(v) <= 512 for v in request["Environment"].values())
    tags = {t["Key"]: t["Value"] for t in request["Tags"]}
    assert tags["dagster/run-id"] == result.run_id and tags["phoenix/training"] == "true"

    # checkpoints (synced by the platform) and the Pipes message chunks, all under the job's prefix
    assert any(k.endswith("rl_model_64_steps.zip") for k in _keys(s3, job["CheckpointConfig"]["S3Uri"]))
    assert _keys(s3, f"s3://{BUCKET}/{sagemaker_env}/{name}/pipes/messages/")

    # the materialization: the learning curve came from the container through Pipes-on-S3
    meta = result.asset_materializations_for_node("mamba_sac_model")[0].metadata
    assert meta["launch"].value == "sagemaker"
    assert meta["sagemaker_training_job"].value == name
    assert meta["timesteps"].value == 64 and meta["steps_per_s"].value > 0
    assert "| timesteps |" in meta["learning_curve"].value
    assert "data:image/png;base64" in meta["learning_curve"].value
    logs = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any(m.startswith("training SAC+Mamba on") for m in logs)
    assert any('"step": 64' in m for m in logs)
    assert any(f"SageMaker training job {name}: Completed" in m for m in logs)

    # the artifact from model.tar.gz, versioned in the lake
    lake = Lake(features_lake_root)
    pointer = json.loads(lake.read_artifact("artifacts/mamba_sac_model/latest.json"))
    model_dir = platform.work / name / "opt_ml" / "model"
    assert lake.read_artifact(f"{pointer['path']}/model.zip") == (model_dir / "model.zip").read_bytes()
    saved = json.loads(lake.read_artifact(f"{pointer['path']}/config.json"))
    assert saved["feature_spec_hash"] == "testhash0123" and saved["timesteps"] == 64
    assert saved["data_windows"]["train"] == ["2024-03-13", "2024-03-13"]
    assert lake.read_artifact(f"{pointer['path']}/metrics.jsonl").decode().count("\n") == 4


@pytest.mark.slow
def test_failed_job_names_the_job_and_its_failure_reason(
    features_lake_root: str, sagemaker_env: str, platform: Platform, instance: dg.DagsterInstance
) -> None:
    """An empty train window makes the container raise; SageMaker's FailureReason reaches the step's error."""
    pointer = Path(features_lake_root, "artifacts", "mamba_sac_model", "latest.json")
    before = pointer.read_bytes() if pointer.exists() else None
    platform.start()
    result = _materialize(features_lake_root, instance, train_start="2024-03-04", train_end="2024-03-05")
    platform.join()
    assert not result.success
    [name] = platform.requests
    message = _failure(result)
    assert f"SageMaker training job {name} ended Failed" in message
    assert "AlgorithmError: ValueError: train: only 0 rows in the train window 2024-03-04..2024-03-05" in message
    assert (pointer.read_bytes() if pointer.exists() else None) == before  # nothing published


@pytest.mark.parametrize(
    ("resource_config", "unset", "expected"),
    [
        (FAST, ["PHOENIX_SAGEMAKER_ROLE_ARN", "PHOENIX_SAGEMAKER_BUCKET"], ["role_arn", "bucket"]),
        ({**FAST, "max_run_s": 7200, "max_wait_s": 3600}, [], ["max_wait_s=3600 < max_run_s=7200"]),
    ],
)
def test_missing_or_inconsistent_settings_fail_before_any_aws_call(
    features_lake_root: str,
    sagemaker_env: str,
    platform: Platform,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    resource_config: dict[str, Any],
    unset: list[str],
    expected: list[str],
) -> None:
    for key in unset:
        monkeypatch.delenv(key)
    result = _materialize(features_lake_root, instance, resource_config)
    assert not result.success
    message = _failure(result)
    assert "launch='sagemaker' is not configured" in message
    assert all(e in message for e in expected)
    assert "image_uri" not in message  # set in the environment, so not reported
    assert platform.client_calls == 0 and not platform.requests


def test_settings_job_names_and_request_without_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("PHOENIX_SAGEMAKER_ROLE_ARN", "PHOENIX_SAGEMAKER_IMAGE_URI", "PHOENIX_SAGEMAKER_BUCKET"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(SageMakerConfigError, match=r"role_arn .*PHOENIX_SAGEMAKER_ROLE_ARN.*image_uri.*bucket"):
        SageMakerResource(region="us-east-1").settings()
    monkeypatch.setenv("PHOENIX_SAGEMAKER_BUCKET", "from-env")
    resource = SageMakerResource(role_arn=ROLE, image_uri=IMAGE, region="eu-west-1", use_spot=False, max_wait_s=1)
    s = resource.settings()  # max_wait_s is not checked (nor sent) without spot
    assert (s.bucket, s.prefix, s.region) == ("from-env", "phoenix/sagemaker", "eu-west-1")
    request = resource.training_job_request(s, "j-1", {"A": "x"}, {"dagster/run-id": "r1", "odd": "a,b;c"})
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 4 * 3600}
    assert request["EnableManagedSpotTraining"] is False
    assert request["Environment"] == {"A": "x", "AWS_DEFAULT_REGION": "eu-west-1"}
    assert {t["Key"]: t["Value"] for t in request["Tags"]}["odd"] == "a_b_c"
    with pytest.raises(SageMakerConfigError, match="exceed SageMaker's 512"):
        resource.training_job_request(s, "j-1", {"DAGSTER_PIPES_CONTEXT": "x" * 513}, {})

    now = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert job_name("phoenix-sac", "3b2577a2-8bc5-4a4f", now) == "phoenix-sac-20260102-030405-3b2577a2"
    odd = job_name("--My_Project.v2 " + "x" * 80, "r", now)
    assert re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9])*", odd) and len(odd) <= 63 and odd.startswith("My-Project-v2-x")


def test_container_entry_resumes_from_the_newest_checkpoint(
    features_lake_root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restarted spot job finds its checkpoints restored in /opt/ml/checkpoints and trains only the rest."""
    from phoenix_rl.train import sagemaker_entry

    root = tmp_path / "opt_ml"
    (root / "input" / "data" / "features").mkdir(parents=True)
    (root / "input" / "data" / "config").mkdir(parents=True)
    Lake(features_lake_root).scan("features_1m").collect().write_parquet(root / "input/data/features/features.parquet")
    cfg = {k: v for k, v in TINY.items() if k not in ("total_timesteps", "launch")} | {"learning_starts": 16}
    cfg |= {"train_start": "2024-03-13", "train_end": "2024-03-13", "log_every": 16}
    monkeypatch.setenv("PHOENIX_SM_ROOT", str(root))
    for key in ("DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES"):
        monkeypatch.delenv(key, raising=False)

    (root / "input/data/config/config.json").write_text(json.dumps({**cfg, "total_timesteps": 32}))
    assert sagemaker_entry.main(["--checkpoint-every", "16"]) == 0  # "interrupted" after 32 steps
    assert sorted(p.name for p in (root / "checkpoints").glob("*.zip")) == [
        "rl_model_16_steps.zip",
        "rl_model_32_steps.zip",
    ]
    (root / "input/data/config/config.json").write_text(json.dumps({**cfg, "total_timesteps": 64}))
    assert sagemaker_entry.main(["--checkpoint-every", "16"]) == 0
    steps = [json.loads(line)["step"] for line in (root / "model" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [48, 64]  # resumed at 32, not retrained from 0
    assert (root / "checkpoints" / "rl_model_64_steps.zip").exists()
    assert (root / "model" / "model.zip").stat().st_size > 0
