"""`stt-flywheel submit`: the real aiplatform SDK creates the PipelineJob on a local fake of the
Vertex REST API, and `--wait` follows its tasks."""

from pathlib import Path

import pytest
import yaml
from conftest import Cli
from fakes.vertex import running_fake
from typer.testing import CliRunner

from flywheel_pipelines.cli import app
from stt_flywheel.storage.objectstore import open_store

DIGEST = "@sha256:" + "ab" * 32


def test_submit_with_parameters_labels_service_account_and_wait(
    tmp_path: Path, gcs_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before submitting, the SDK checks who owns the pipeline-root bucket through the Resource
    # Manager API, which has no local stand-in; without network it retries for ~45 s and then
    # goes on. Answer that one lookup here instead.
    from google.cloud.aiplatform.utils import resource_manager_utils

    monkeypatch.setattr(resource_manager_utils, "get_project_number", lambda *a, **k: "0")
    with running_fake() as (fake, url):
        config = tmp_path / "flywheel.yaml"
        config.write_text(
            yaml.safe_dump(
                {"vertex": {"project": fake.project, "location": fake.location, "api_endpoint": url}}
            )
        )
        open_store(gcs_bucket).write("flywheel.yaml", config.read_bytes())
        out = CliRunner().invoke(
            app,
            [
                "submit",
                "--config",
                str(config),
                "--config-uri",
                f"{gcs_bucket}/flywheel.yaml",
                "--pipeline-root",
                f"{gcs_bucket}/pipeline-root",
                "--base-image",
                "us-docker.pkg.dev/p/stt/base" + DIGEST,
                "--trainer-image",
                "us-docker.pkg.dev/p/stt/trainer" + DIGEST,
                "--service-account",
                "flywheel-runner@p.iam.gserviceaccount.com",
                "--param",
                "max_steps=50",
                "--param",
                "accelerator_type=NVIDIA_TESLA_A100",
                "--label",
                "team=Speech",
                "--job-id",
                "stt-flywheel-manual-1",
                "--wait",
                "--poll-s",
                "0.01",
            ],
        )
        assert out.exit_code == 0, out.output
        job = fake.pipeline_jobs["stt-flywheel-manual-1"]
    lines = out.output
    assert lines.index("check-trigger: RUNNING") < lines.index("check-trigger: SUCCEEDED")
    assert "build-dataset: SUCCEEDED" in lines
    assert "succeeded:" in lines
    assert job["serviceAccount"] == "flywheel-runner@p.iam.gserviceaccount.com"
    assert job["labels"]["team"] == "speech"
    assert job["labels"]["app"] == "stt-flywheel"
    runtime = job["runtimeConfig"]
    assert runtime["gcsOutputDirectory"] == f"{gcs_bucket}/pipeline-root"
    values = runtime["parameterValues"]
    assert values["config_uri"] == f"{gcs_bucket}/flywheel.yaml"
    assert values["max_steps"] == 50
    assert values["accelerator_type"] == "NVIDIA_TESLA_A100"
    spec = job["pipelineSpec"]
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {"us-docker.pkg.dev/p/stt/base" + DIGEST, "us-docker.pkg.dev/p/stt/trainer" + DIGEST}
    tasks = dict(spec["root"]["dag"]["tasks"])
    for component in spec["components"].values():
        tasks.update(component.get("dag", {}).get("tasks", {}))
    assert all(not t.get("cachingOptions", {}).get("enableCache") for t in tasks.values())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pipeline-root", "/local/root"], "gs:// URI"),
        (["--config-uri", "/local/flywheel.yaml"], "readable by the pipeline"),
        (["--service-account", ""], "service account"),
    ],
)
def test_submit_refuses_what_vertex_cannot_run(
    cli: Cli, tmp_path: Path, args: list[str], message: str
) -> None:
    config = tmp_path / "flywheel.yaml"
    config.write_text(yaml.safe_dump({"vertex": {"project": "p", "api_endpoint": "http://127.0.0.1:9"}}))
    base = {
        "--pipeline-root": "gs://b/root",
        "--config-uri": "gs://b/flywheel.yaml",
        "--service-account": "sa@p.iam.gserviceaccount.com",
    }
    base[args[0]] = args[1]
    flat = [x for kv in base.items() for x in kv]
    status, out, err = cli("submit", "--config", str(config), "--template", "t.yaml", *flat)
    assert status == 1
    assert message in out + err


def test_a_monitor_run_is_named_for_its_pipeline(tmp_path: Path) -> None:
    from flywheel_pipelines.cloud.submit import Submission, pipeline_job
    from flywheel_pipelines.compile import compile_pipeline
    from stt_flywheel.config import FlywheelConfig

    template = compile_pipeline(
        tmp_path / "m.yaml", "us-docker.pkg.dev/p/stt/base" + DIGEST, require_digests=True, pipeline="monitor"
    )
    with running_fake() as (fake, url):
        config = FlywheelConfig.model_validate(
            {"vertex": {"project": fake.project, "location": fake.location, "api_endpoint": url}}
        )
        job = pipeline_job(
            config,
            Submission(
                str(template), "gs://f/flywheel.yaml", "gs://f/root", "sa@p.iam.gserviceaccount.com",
                pipeline="stt-flywheel-monitor",
            ),
        )  # fmt: skip
    body = job.to_dict()  # what `submit` sends
    assert body["displayName"] == "stt-flywheel-monitor"
    assert body["pipelineSpec"]["pipelineInfo"]["name"] == "stt-flywheel-monitor"
    assert job.job_id.startswith("stt-flywheel-monitor-")
    assert body["runtimeConfig"]["parameterValues"]["config_uri"] == "gs://f/flywheel.yaml"
