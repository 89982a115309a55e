"""SageMaker launch mode of `mamba_sac_model`: one managed-spot training job per materialization, Pipes via S3.

The asset exports the same two files as for the local subprocess (features.parquet, the TrainConfig JSON);
`SageMakerResource.launch` then

1. uploads them as the training channels `features` and `config` (s3://<bucket>/<prefix>/<job>/input/<channel>/),
2. opens a Dagster Pipes session whose context and messages travel through S3 (`PipesS3ContextInjector`,
   `PipesS3MessageReader`, under <prefix>/<job>/pipes/): the Environment of a training job holds values of at
   most 512 characters, too few for the whole context, but enough for its S3 location,
3. calls `create_training_job` (the image runs `python -m phoenix_rl.train.sagemaker_entry`; managed spot with
   MaxWaitTimeInSeconds, checkpoints synced to <prefix>/<job>/checkpoints/ so an interrupted job resumes),
4. polls `describe_training_job` until Completed / Failed / Stopped while the Pipes reader streams the
   container's log lines and metrics into the step's logs,
5. unpacks <prefix>/<job>/output/model.tar.gz (model.zip, config.json, metrics.jsonl) into the local `out`
   folder, exactly where the local subprocess leaves them, so the rest of the asset does not change.

dagster-aws (0.29) has Pipes clients for ECS, EMR, Glue and Lambda but none for SageMaker, hence
`dg.open_pipes_session` around the boto3 calls here. Settings left empty resolve from the environment when a
run starts (never at import), so the definitions load and the local mode runs without any AWS configuration.
"""

import datetime as dt
import os
import re
import tarfile
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from phoenix_assets.defs.resources import _setting
from phoenix_rl.train import sagemaker_entry

__all__ = ["SageMakerConfigError", "SageMakerJobError", "SageMakerResource", "SageMakerSettings", "job_name"]

TERMINAL_STATUSES = ("Completed", "Failed", "Stopped")
ENTRYPOINT = ["python", "-m", sagemaker_entry.__name__]
# the file uploaded into each training channel: named as the container entry point looks for it
CHANNEL_FILES = {channel: f"{channel}{suffix}" for channel, suffix in sagemaker_entry.CHANNELS.items()}
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
MODEL_FILES = ("model.zip", "config.json", "metrics.jsonl")
ENV_VALUE_MAX = 512  # CreateTrainingJob: Environment values are at most 512 characters
_TAG_VALUE_BAD = re.compile(r"[^\w.:/=+\-@ ]")


class SageMakerConfigError(ValueError):
    """The SageMaker launch is not configured (found before any AWS call)."""


class SageMakerJobError(RuntimeError):
    """The training job ended Failed / Stopped, or left no model artifact."""


@dataclass(frozen=True)
class SageMakerSettings:
    """`SageMakerResource` with every value resolved and checked."""

    role_arn: str
    image_uri: str
    bucket: str
    prefix: str
    region: str
    instance_type: str
    instance_count: int
    use_spot: bool
    max_run_s: int
    max_wait_s: int
    volume_gb: int
    poll_interval_s: float
    checkpoint_every: int

    def uri(self, *parts: str) -> str:
        return "s3://" + "/".join([self.bucket, *[p for p in (self.prefix, *parts) if p]])

    def key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)


def job_name(prefix: str, run_id: str, now: dt.datetime | None = None) -> str:
    """A valid, unique-per-run training job name: <=63 characters of [a-zA-Z0-9-], alphanumeric at both ends."""
    stamp = f"{now or dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}"
    tail = f"-{stamp}-{re.sub(r'[^a-zA-Z0-9]', '', run_id)[:8]}".rstrip("-")
    head = re.sub(r"[^a-zA-Z0-9-]+", "-", prefix).strip("-")[: 63 - len(tail)].strip("-") or "phoenix"
    return head + tail


def _pipes_over_s3(s: SageMakerSettings, job: str, s3: Any) -> tuple[Any, Any]:
    """The context injector and message reader of the job's Pipes session, both under <prefix>/<job>/pipes/
    (dagster-aws puts message chunks at the bucket root; imported here so loading the definitions stays fast)."""
    from dagster_aws.pipes import PipesS3ContextInjector, PipesS3MessageReader

    class JobS3MessageReader(PipesS3MessageReader):
        @contextmanager
        def get_params(self) -> Iterator[dict[str, Any]]:
            with super().get_params() as params:
                yield {**params, "key_prefix": f"{s.key(job, 'pipes', 'messages')}/{params['key_prefix']}"}

    injector = PipesS3ContextInjector(bucket=s.bucket, client=s3, key_prefix=s.key(job, "pipes") + "/context-")
    return injector, JobS3MessageReader(bucket=s.bucket, client=s3, interval=s.poll_interval_s)


class SageMakerResource(dg.ConfigurableResource):
    """Where and how `mamba_sac_model` trains when `launch="sagemaker"`: a SageMaker training job on managed
    spot capacity with S3 checkpoints. Empty settings resolve at run time from $PHOENIX_SAGEMAKER_* (region:
    then AWS_REGION / AWS_DEFAULT_REGION / the AWS config); credentials come from boto3's usual chain."""

    role_arn: str | None = Field(default=None, description="Job execution role; empty -> $PHOENIX_SAGEMAKER_ROLE_ARN")
    image_uri: str | None = Field(
        default=None,
        description="PyTorch training image with this project installed; empty -> $PHOENIX_SAGEMAKER_IMAGE_URI",
    )
    bucket: str | None = Field(default=None, description="S3 bucket (bare name); empty -> $PHOENIX_SAGEMAKER_BUCKET")
    prefix: str | None = Field(
        default=None, description="Key prefix in the bucket; empty -> $PHOENIX_SAGEMAKER_PREFIX -> phoenix/sagemaker"
    )
    region: str | None = Field(default=None, description="AWS region; empty -> $PHOENIX_SAGEMAKER_REGION -> AWS config")
    instance_type: str = Field(default="ml.g4dn.xlarge", description="Training instance (g4dn.xlarge: one T4 GPU)")
    instance_count: int = 1
    use_spot: bool = Field(default=True, description="Managed spot training (needs max_wait_s >= max_run_s)")
    max_run_s: int = Field(default=4 * 3600, description="MaxRuntimeInSeconds: training time limit")
    max_wait_s: int = Field(default=8 * 3600, description="MaxWaitTimeInSeconds: training + waiting for spot capacity")
    volume_gb: int = Field(default=30, description="ML storage volume (GB)")
    poll_interval_s: float = Field(default=30.0, description="Seconds between job status polls and Pipes reads")
    checkpoint_every: int = Field(default=1_000, description="SB3 checkpoint every N environment steps (0: none)")
    job_name_prefix: str = Field(default="phoenix-sac", description="Training job names: <prefix>-<UTC time>-<run>")

    def settings(self) -> SageMakerSettings:
        """Every value resolved from config or environment and checked: raises `SageMakerConfigError` naming all
        missing or inconsistent settings, before any AWS call."""
        import boto3

        values = {
            "role_arn": _setting(self.role_arn, "PHOENIX_SAGEMAKER_ROLE_ARN", None),
            "image_uri": _setting(self.image_uri, "PHOENIX_SAGEMAKER_IMAGE_URI", None),
            "bucket": _setting(self.bucket, "PHOENIX_SAGEMAKER_BUCKET", None),
            "region": _setting(self.region, "PHOENIX_SAGEMAKER_REGION", None)
            or os.environ.get("AWS_REGION")
            or boto3.session.Session().region_name,
        }
        problems = [
            f"{name} (set the sagemaker resource's {name} or ${env})"
            for name, env in (
                ("role_arn", "PHOENIX_SAGEMAKER_ROLE_ARN"),
                ("image_uri", "PHOENIX_SAGEMAKER_IMAGE_URI"),
                ("bucket", "PHOENIX_SAGEMAKER_BUCKET"),
                ("region", "PHOENIX_SAGEMAKER_REGION or AWS_REGION"),
            )
            if not values[name]
        ]
        if values["bucket"] and values["bucket"].startswith("s3://"):
            problems.append(f"bucket {values['bucket']!r} must be a bare bucket name (the key prefix goes in prefix)")
        if self.use_spot and self.max_wait_s < self.max_run_s:
            problems.append(
                f"max_wait_s={self.max_wait_s} < max_run_s={self.max_run_s} (managed spot needs max_wait_s >= "
                "max_run_s)"
            )
        if self.instance_count < 1 or self.max_run_s < 1 or self.volume_gb < 1:
            problems.append("instance_count, max_run_s and volume_gb must be positive")
        if problems:
            raise SageMakerConfigError(
                "mamba_sac_model launch='sagemaker' is not configured: " + "; ".join(problems) + ". Nothing was sent "
                "to AWS; use launch='local' to train in a subprocess instead."
            )
        prefix = _setting(self.prefix, "PHOENIX_SAGEMAKER_PREFIX", "phoenix/sagemaker") or ""
        return SageMakerSettings(
            **{k: str(v) for k, v in values.items()},
            prefix=prefix.strip("/"),
            instance_type=self.instance_type,
            instance_count=self.instance_count,
            use_spot=self.use_spot,
            max_run_s=self.max_run_s,
            max_wait_s=self.max_wait_s,
            volume_gb=self.volume_gb,
            poll_interval_s=self.poll_interval_s,
            checkpoint_every=self.checkpoint_every,
        )

    def client(self, service: str, region: str) -> Any:
        """A boto3 client (AWS_ENDPOINT_URL and the credential chain apply); tests wrap it to observe calls."""
        import boto3

        return boto3.client(service, region_name=region)

    def training_job_request(
        self, s: SageMakerSettings, job: str, environment: Mapping[str, str], tags: Mapping[str, str]
    ) -> dict[str, Any]:
        """The `create_training_job` arguments (pure: no AWS call)."""
        too_long = sorted(k for k, v in environment.items() if len(v) > ENV_VALUE_MAX)
        if too_long:
            raise SageMakerConfigError(
                f"training job {job}: Environment values {too_long} exceed SageMaker's {ENV_VALUE_MAX} characters"
            )
        stopping: dict[str, int] = {"MaxRuntimeInSeconds": s.max_run_s}
        if s.use_spot:
            stopping["MaxWaitTimeInSeconds"] = s.max_wait_s
        arguments = ["--checkpoint-every", str(s.checkpoint_every), "--pipes-interval", f"{s.poll_interval_s:g}"]
        return {
            "TrainingJobName": job,
            "AlgorithmSpecification": {
                "TrainingImage": s.image_uri,
                "TrainingInputMode": "File",
                "ContainerEntrypoint": list(ENTRYPOINT),
                "ContainerArguments": arguments,
            },
            "RoleArn": s.role_arn,
            "InputDataConfig": [
                {
                    "ChannelName": channel,
                    "DataSource": {
                        "S3DataSource": {
                            "S3DataType": "S3Prefix",
                            "S3Uri": s.uri(job, "input", channel) + "/",
                            "S3DataDistributionType": "FullyReplicated",
                        }
                    },
                    "InputMode": "File",
                }
                for channel in CHANNEL_FILES
            ],
            "OutputDataConfig": {"S3OutputPath": s.uri()},  # SageMaker writes <job>/output/model.tar.gz under it
            "ResourceConfig": {
                "InstanceType": s.instance_type,
                "InstanceCount": s.instance_count,
                "VolumeSizeInGB": s.volume_gb,
            },
            "StoppingCondition": stopping,
            "EnableManagedSpotTraining": s.use_spot,
            "CheckpointConfig": {"S3Uri": s.uri(job, "checkpoints") + "/", "LocalPath": CHECKPOINT_LOCAL_PATH},
            "Environment": {**environment, "AWS_DEFAULT_REGION": s.region},
            "Tags": [{"Key": k, "Value": _TAG_VALUE_BAD.sub("_", v)[:256]} for k, v in tags.items()],
        }

    def launch(
        self, context: dg.AssetExecutionContext, features: Path, train_config: Path, out: Path
    ) -> dg.PipesClientCompletedInvocation:
        """Run the training as a SageMaker job (module doc) and leave its model files in `out`."""
        from botocore.exceptions import ClientError

        s = self.settings()
        job = job_name(self.job_name_prefix, context.run.run_id)
        s3, sagemaker = self.client("s3", s.region), self.client("sagemaker", s.region)
        for channel, path in (("features", features), ("config", train_config)):
            s3.upload_file(str(path), s.bucket, s.key(job, "input", channel, CHANNEL_FILES[channel]))
        context.log.info(f"uploaded {features.name} and {train_config.name} to {s.uri(job, 'input')}/")
        injector, reader = _pipes_over_s3(s, job, s3)
        with dg.open_pipes_session(context=context, context_injector=injector, message_reader=reader) as session:
            tags = {
                **session.default_remote_invocation_info,
                "phoenix/training": "true",
                "phoenix/asset": context.asset_key.to_user_string(),
            }
            request = self.training_job_request(s, job, session.get_bootstrap_env_vars(), tags)
            try:
                arn = sagemaker.create_training_job(**request)["TrainingJobArn"]
            except ClientError as exc:
                raise SageMakerJobError(
                    f"SageMaker refused training job {job}: {exc}. Check role_arn, image_uri and the account's "
                    f"{s.instance_type} {'spot ' if s.use_spot else ''}training quota in {s.region}"
                ) from exc
            context.log.info(
                f"created SageMaker training job {job} ({s.instance_type} x{s.instance_count}, "
                f"spot={s.use_spot}, max run {s.max_run_s} s, max wait {s.max_wait_s} s): {arn}"
            )
            try:
                described = self._wait(context, sagemaker, job, s.poll_interval_s)
            except dg.DagsterExecutionInterruptedError:
                context.log.warning(f"run interrupted: stopping SageMaker training job {job}")
                sagemaker.stop_training_job(TrainingJobName=job)
                raise
            status = described["TrainingJobStatus"]
            if status != "Completed":
                raise SageMakerJobError(
                    f"SageMaker training job {job} ended {status}: "
                    f"{described.get('FailureReason') or 'no FailureReason given'}. Container logs: CloudWatch "
                    f"/aws/sagemaker/TrainingJobs, stream {job}/algo-1-*; inputs under {s.uri(job, 'input')}/"
                )
            artifact = described.get("ModelArtifacts", {}).get("S3ModelArtifacts") or s.uri(job, "output/model.tar.gz")
            _unpack_model(s3, artifact, out, job)
        context.log.info(f"SageMaker training job {job} completed; model files from {artifact} in {out}")
        return dg.PipesClientCompletedInvocation(
            session,
            metadata={
                "sagemaker_training_job": job,
                "sagemaker_model_artifacts": dg.MetadataValue.path(artifact),
                "sagemaker_console": dg.MetadataValue.url(
                    f"https://{s.region}.console.aws.amazon.com/sagemaker/home?region={s.region}#/jobs/{job}"
                ),
                "sagemaker_billable_s": int(described.get("BillableTimeInSeconds") or 0),
            },
        )

    def _wait(self, context: dg.AssetExecutionContext, sagemaker: Any, job: str, interval: float) -> dict[str, Any]:
        """`describe_training_job` until a terminal status; each status change goes to the step's log."""
        seen: tuple[str, str] | None = None
        while True:
            described = sagemaker.describe_training_job(TrainingJobName=job)
            now = (described["TrainingJobStatus"], described.get("SecondaryStatus", ""))
            if now != seen:
                context.log.info(f"SageMaker training job {job}: {now[0]} ({now[1]})")
                seen = now
            if now[0] in TERMINAL_STATUSES:
                return described
            time.sleep(interval)


def _unpack_model(s3: Any, artifact: str, out: Path, job: str) -> None:
    """model.tar.gz at `artifact` (s3://bucket/key) -> MODEL_FILES in `out`."""
    from botocore.exceptions import ClientError

    bucket, _, key = artifact.removeprefix("s3://").partition("/")
    with tempfile.TemporaryDirectory(prefix="phoenix-sagemaker-") as tmp:
        archive = Path(tmp) / "model.tar.gz"
        try:
            s3.download_file(bucket, key, str(archive))
        except ClientError as exc:
            raise SageMakerJobError(
                f"SageMaker training job {job} completed but its model artifact {artifact} cannot be read: {exc}"
            ) from exc
        out.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(out, filter="data")
    missing = [f for f in MODEL_FILES if not (out / f).is_file()]
    if missing:
        raise SageMakerJobError(f"SageMaker training job {job}: {artifact} lacks {missing} (has {os.listdir(out)})")
