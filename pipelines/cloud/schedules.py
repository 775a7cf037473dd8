"""Scheduled runs, in two modes.

- `vertex`: a Vertex AI schedule (`PipelineJob.create_schedule`) with `max_concurrent_run_count=1`
  and no queueing, so a tick that finds the last run still going is skipped.
- `scheduler`: a Cloud Scheduler HTTP job that POSTs the PipelineJob to the Vertex AI API with an
  OAuth token of a service account, for projects that keep every cron in Cloud Scheduler.

Either way a schedule is found by its name (the Vertex schedule's display name, or the Cloud
Scheduler job id). Whatever the mode, two runs that overlap never both train: the trigger stage's
run lease stops the second.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from flywheel_pipelines.cloud.submit import Submission, pipeline_job
from stt_flywheel.config import FlywheelConfig, VertexSettings
from stt_flywheel.errors import InputError

__all__ = ["Mode", "ScheduleInfo", "create_schedule", "list_schedules", "set_schedule_state"]

Mode = Literal["vertex", "scheduler"]
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"


@dataclass(frozen=True)
class ScheduleInfo:
    mode: Mode
    name: str
    resource: str
    cron: str
    state: str
    target: str  # the pipeline root (vertex) or the URL the job POSTs to (scheduler)


def _vertex_base(settings: VertexSettings) -> str:
    endpoint = settings.api_endpoint or f"{settings.location}-aiplatform.googleapis.com"
    return endpoint if endpoint.startswith(("http://", "https://")) else f"https://{endpoint}"


def _scheduler_client(settings: VertexSettings) -> Any:
    from google.api_core.client_options import ClientOptions
    from google.cloud import scheduler_v1  # type: ignore[attr-defined]

    if not settings.scheduler_api_endpoint:
        return scheduler_v1.CloudSchedulerClient()
    credentials = None
    if settings.scheduler_api_endpoint.startswith("http://"):
        from google.auth.credentials import AnonymousCredentials

        credentials = AnonymousCredentials()
    return scheduler_v1.CloudSchedulerClient(
        transport="rest",
        credentials=credentials,
        client_options=ClientOptions(api_endpoint=settings.scheduler_api_endpoint),
    )


def _parent(settings: VertexSettings) -> str:
    if not settings.project:
        raise InputError("vertex.project is not set")
    return f"projects/{settings.project}/locations/{settings.location}"


def create_schedule(
    config: FlywheelConfig,
    submission: Submission,
    *,
    name: str,
    cron: str,
    time_zone: str = "Etc/UTC",
    mode: Mode = "vertex",
    replace: bool = False,
    scheduler_service_account: str | None = None,
) -> ScheduleInfo:
    """Create the schedule `name`; with `replace`, an existing one of that name is deleted first
    (how a new template version takes over the schedule)."""
    job = pipeline_job(config, submission)  # checked before anything is deleted
    existing = [s for s in list_schedules(config, mode) if s.name == name]
    if existing and not replace:
        raise InputError(f"a {mode} schedule named {name!r} exists ({existing[0].resource}); use --replace")
    for old in existing:
        _act(config, old, "delete")
    if mode == "vertex":
        schedule = job.create_schedule(
            cron=f"TZ={time_zone} {cron}",
            display_name=name,
            max_concurrent_run_count=1,
            allow_queueing=False,
            service_account=submission.service_account,
        )
        return _vertex_info(schedule)
    return _create_scheduler_job(
        config.vertex, job, submission, name, cron, time_zone, scheduler_service_account
    )


def _create_scheduler_job(
    settings: VertexSettings,
    job: Any,
    submission: Submission,
    name: str,
    cron: str,
    time_zone: str,
    caller: str | None,
) -> ScheduleInfo:
    from google.cloud import scheduler_v1  # type: ignore[attr-defined]

    body = job.to_dict()
    body["serviceAccount"] = submission.service_account
    parent = _parent(settings)
    target = f"{_vertex_base(settings)}/v1/{parent}/pipelineJobs"
    caller = caller or settings.scheduler_service_account or submission.service_account
    created = _scheduler_client(settings).create_job(
        parent=parent,
        job=scheduler_v1.Job(
            name=f"{parent}/jobs/{name}",
            description=f"stt-flywheel: create a PipelineJob from {submission.template}",
            schedule=cron,
            time_zone=time_zone,
            http_target=scheduler_v1.HttpTarget(
                uri=target,
                http_method=scheduler_v1.HttpMethod.POST,
                headers={"Content-Type": "application/json"},
                body=json.dumps(body).encode(),
                oauth_token=scheduler_v1.OAuthToken(service_account_email=caller, scope=CLOUD_PLATFORM),
            ),
        ),
    )
    return _scheduler_info(created)


def _vertex_info(schedule: Any) -> ScheduleInfo:
    resource = schedule.gca_resource
    root = resource.create_pipeline_job_request.pipeline_job.runtime_config.gcs_output_directory
    return ScheduleInfo(
        mode="vertex",
        name=resource.display_name,
        resource=resource.name,
        cron=resource.cron,
        state=resource.state.name,
        target=root,
    )


def _scheduler_info(job: Any) -> ScheduleInfo:
    return ScheduleInfo(
        mode="scheduler",
        name=job.name.rpartition("/")[2],
        resource=job.name,
        cron=f"TZ={job.time_zone} {job.schedule}" if job.time_zone else job.schedule,
        state=job.state.name,
        target=job.http_target.uri,
    )


def list_schedules(config: FlywheelConfig, mode: Mode) -> list[ScheduleInfo]:
    """This project's stt-flywheel schedules: Vertex schedules of stt-flywheel pipeline jobs, or
    Cloud Scheduler jobs that create PipelineJobs."""
    if mode == "vertex":
        from google.cloud import aiplatform

        from stt_flywheel.deployment.vertex import init_vertex

        init_vertex(config.vertex)
        return [
            _vertex_info(s)
            for s in aiplatform.PipelineJobSchedule.list()
            if s.gca_resource.create_pipeline_job_request.pipeline_job.labels.get("app") == "stt-flywheel"
        ]
    jobs = _scheduler_client(config.vertex).list_jobs(parent=_parent(config.vertex))
    return [_scheduler_info(j) for j in jobs if j.http_target.uri.endswith("/pipelineJobs")]


def set_schedule_state(
    config: FlywheelConfig, mode: Mode, name: str, action: Literal["pause", "resume", "delete", "run"]
) -> ScheduleInfo | None:
    """Pause, resume, delete or (Cloud Scheduler only) run now the schedule `name`."""
    matches = [s for s in list_schedules(config, mode) if s.name == name]
    if not matches:
        raise InputError(f"no {mode} schedule named {name!r}")
    return _act(config, matches[0], action)


def _act(config: FlywheelConfig, info: ScheduleInfo, action: str) -> ScheduleInfo | None:
    if info.mode == "vertex":
        from google.cloud import aiplatform

        if action == "run":
            raise InputError("a Vertex schedule cannot be run on demand; use stt-flywheel submit")
        schedule = aiplatform.PipelineJobSchedule.get(info.resource)
        getattr(schedule, action)()
        return None if action == "delete" else _vertex_info(aiplatform.PipelineJobSchedule.get(info.resource))
    client = _scheduler_client(config.vertex)
    if action == "delete":
        client.delete_job(name=info.resource)
        return None
    method = {"pause": client.pause_job, "resume": client.resume_job, "run": client.run_job}[action]
    return _scheduler_info(method(name=info.resource))
