"""`stt-flywheel schedule`: Vertex AI schedules through the aiplatform SDK, and Cloud Scheduler HTTP
jobs through google-cloud-scheduler, each against a local stand-in of its REST API. A Cloud
Scheduler job, run, creates the PipelineJob on the Vertex stand-in with its service account's token."""

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fakes.scheduler import SchedulerFake, running_scheduler
from fakes.vertex import VertexFake, running_fake
from typer.testing import CliRunner

from flywheel_pipelines.cli import app
from flywheel_pipelines.compile import compile_pipeline

BASE = "us-docker.pkg.dev/p/stt/base@sha256:" + "ab" * 32
TRAINER = "us-docker.pkg.dev/p/stt/trainer@sha256:" + "cd" * 32
RUNNER = "flywheel-runner@p.iam.gserviceaccount.com"
CALLER = "flywheel-scheduler@p.iam.gserviceaccount.com"


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[tuple[VertexFake, SchedulerFake, Path, Path]]:
    with running_fake() as (vertex, vertex_url), running_scheduler() as (scheduler, scheduler_url):
        config = tmp_path / "flywheel.yaml"
        settings = {
            "project": vertex.project,
            "location": vertex.location,
            "api_endpoint": vertex_url,
            "scheduler_api_endpoint": scheduler_url,
            "pipeline_service_account": RUNNER,
        }
        config.write_text(yaml.safe_dump({"vertex": settings}))
        template = compile_pipeline(tmp_path / "t.yaml", BASE, TRAINER, require_digests=True)
        yield vertex, scheduler, config, template


def _cli(*args: str) -> str:
    out = CliRunner().invoke(app, list(args))
    assert out.exit_code == 0, f"{out.output}\n{out.exception!r}"
    return out.output


def _create(config: Path, template: Path, mode: str, *extra: str) -> str:
    return _cli(
        "schedule", "create", "--config", str(config), "--mode", mode, "--name", "nightly",
        "--cron", "0 3 * * *", "--time-zone", "Europe/London",
        "--config-uri", "gs://flywheel/flywheel.yaml", "--pipeline-root", "gs://flywheel/pipeline-root",
        "--template", str(template), "--param", "max_steps=200", "--label", "trigger=schedule", *extra,
    )  # fmt: skip


def test_vertex_schedule_lifecycle(cloud: tuple) -> None:
    vertex, _, config, template = cloud
    _create(config, template, "vertex")
    (schedule,) = vertex.schedules.values()
    assert schedule["displayName"] == "nightly"
    assert schedule["cron"] == "TZ=Europe/London 0 3 * * *"
    assert int(schedule["maxConcurrentRunCount"]) == 1
    assert not schedule.get("allowQueueing")
    job = schedule["createPipelineJobRequest"]["pipelineJob"]
    assert job["serviceAccount"] == RUNNER
    assert job["labels"] == {"app": "stt-flywheel", "trigger": "schedule"}
    runtime = job["runtimeConfig"]
    assert runtime["gcsOutputDirectory"] == "gs://flywheel/pipeline-root"
    assert runtime["parameterValues"]["config_uri"] == "gs://flywheel/flywheel.yaml"
    assert runtime["parameterValues"]["max_steps"] == 200

    listed = _cli("schedule", "list", "--config", str(config))
    assert "nightly" in listed
    assert "ACTIVE" in listed
    _cli("schedule", "pause", "nightly", "--config", str(config))
    assert schedule["state"] == "PAUSED"
    _cli("schedule", "resume", "nightly", "--config", str(config))
    assert schedule["state"] == "ACTIVE"

    # A second create of the same name is refused; --replace swaps it (a new template version).
    again = CliRunner().invoke(app, ["schedule", "create", "--config", str(config), "--name", "nightly",
                                     "--cron", "0 4 * * *", "--config-uri", "gs://flywheel/flywheel.yaml",
                                     "--pipeline-root", "gs://flywheel/pipeline-root", "--template", str(template)])  # fmt: skip
    assert again.exit_code != 0
    assert "use --replace" in str(again.exception)
    _create(config, template, "vertex", "--replace")
    assert len(vertex.schedules) == 1
    assert next(iter(vertex.schedules.values())) is not schedule

    _cli("schedule", "delete", "nightly", "--config", str(config))
    assert vertex.schedules == {}
    run_now = CliRunner().invoke(
        app, ["schedule", "run", "nightly", "--config", str(config), "--mode", "vertex"]
    )
    assert run_now.exit_code != 0


def test_cloud_scheduler_job_creates_the_pipeline_job(cloud: tuple) -> None:
    vertex, scheduler, config, template = cloud
    _create(config, template, "scheduler", "--scheduler-service-account", CALLER)
    (job,) = scheduler.jobs.values()
    assert job["name"] == f"projects/{vertex.project}/locations/{vertex.location}/jobs/nightly"
    assert job["schedule"] == "0 3 * * *"
    assert job["timeZone"] == "Europe/London"
    target = job["httpTarget"]
    assert target["uri"].endswith(f"/v1/projects/{vertex.project}/locations/{vertex.location}/pipelineJobs")
    assert target["oauthToken"]["serviceAccountEmail"] == CALLER
    body = json.loads(base64.b64decode(target["body"]))
    assert body["serviceAccount"] == RUNNER
    assert body["labels"]["trigger"] == "schedule"

    _cli("schedule", "run", "nightly", "--config", str(config))  # what a tick does
    (delivery,) = scheduler.deliveries
    assert delivery["status"] == 200, delivery["response"]
    (created,) = vertex.pipeline_jobs.values()
    assert created["serviceAccount"] == RUNNER
    assert created["runtimeConfig"]["parameterValues"]["config_uri"] == "gs://flywheel/flywheel.yaml"
    assert {
        e["container"]["image"] for e in created["pipelineSpec"]["deploymentSpec"]["executors"].values()
    } == {
        BASE,
        TRAINER,
    }
    assert f"Bearer oauth-token-of:{CALLER}" in vertex.authorizations

    listed = _cli("schedule", "list", "--config", str(config), "--mode", "scheduler")
    assert "nightly" in listed
    assert "ENABLED" in listed
    _cli("schedule", "pause", "nightly", "--config", str(config), "--mode", "scheduler")
    assert job["state"] == "PAUSED"
    _cli("schedule", "resume", "nightly", "--config", str(config), "--mode", "scheduler")
    assert job["state"] == "ENABLED"
    _cli("schedule", "delete", "nightly", "--config", str(config), "--mode", "scheduler")
    assert scheduler.jobs == {}


def test_schedule_refuses_what_vertex_cannot_run_and_keeps_the_old_one(cloud: tuple) -> None:
    _, scheduler, config, template = cloud
    _create(config, template, "scheduler")
    before = dict(scheduler.jobs)
    out = CliRunner().invoke(app, ["schedule", "create", "--config", str(config), "--mode", "scheduler",
                                   "--name", "nightly", "--cron", "0 3 * * *", "--template", str(template),
                                   "--config-uri", "/local/flywheel.yaml", "--pipeline-root", "gs://b/root",
                                   "--replace"])  # fmt: skip
    assert out.exit_code != 0
    assert "readable by the pipeline" in str(out.exception)
    assert scheduler.jobs == before  # a replacement that cannot run never removes the schedule in place


@pytest.mark.parametrize(
    ("pipeline", "cron", "task"),
    [("monitor", "0 * * * *", "monitor-deployment"), ("retention", "30 2 * * *", "retain-store")],
)
def test_the_monitor_and_retention_are_scheduled_from_the_base_image_alone(
    cloud: tuple, pipeline: str, cron: str, task: str
) -> None:
    vertex, _, config, _ = cloud
    _cli(
        "schedule", "create", "--config", str(config), "--pipeline", pipeline, "--name", f"{pipeline}-job",
        "--cron", cron, "--config-uri", "gs://flywheel/flywheel.yaml",
        "--pipeline-root", "gs://flywheel/pipeline-root", "--base-image", BASE,
    )  # fmt: skip
    (schedule,) = vertex.schedules.values()
    assert schedule["cron"] == f"TZ=Etc/UTC {cron}" and int(schedule["maxConcurrentRunCount"]) == 1
    job = schedule["createPipelineJobRequest"]["pipelineJob"]
    assert job["pipelineSpec"]["pipelineInfo"]["name"] == f"stt-flywheel-{pipeline}"
    assert set(job["pipelineSpec"]["deploymentSpec"]["executors"]) == {f"exec-{task}"}
    assert job["runtimeConfig"]["parameterValues"]["config_uri"] == "gs://flywheel/flywheel.yaml"
    # the flywheel still needs its trainer image to compile now
    refused = CliRunner().invoke(
        app,
        ["schedule", "create", "--config", str(config), "--name", "x", "--cron", "0 3 * * *",
         "--config-uri", "gs://f/f.yaml", "--pipeline-root", "gs://f/r", "--base-image", BASE],
    )  # fmt: skip
    assert refused.exit_code != 0 and "--trainer-image" in str(refused.exception)
