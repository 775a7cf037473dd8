"""Submit the compiled pipeline to Vertex AI Pipelines and follow it.

The template is a compiled YAML file or a published template URL
(`https://<region>-kfp.pkg.dev/<project>/<repo>/stt-flywheel/<version or tag>`). Every submission
carries a service account and labels; the `gs://` pipeline root is where Vertex keeps artifacts.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stt_flywheel.config import FlywheelConfig
from stt_flywheel.deployment.vertex import init_vertex, label_value
from stt_flywheel.errors import InputError
from stt_flywheel.storage.objectstore import is_remote

__all__ = ["Submission", "parse_params", "pipeline_job", "submit_pipeline"]

TERMINAL = {"PIPELINE_STATE_SUCCEEDED", "PIPELINE_STATE_FAILED", "PIPELINE_STATE_CANCELLED"}


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """`key=value` overrides; values that read as JSON scalars (true, 3, 0.5) are typed."""
    import orjson

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise InputError(f"expected key=value, got {pair!r}")
        try:
            value = orjson.loads(raw)
            out[key] = value if isinstance(value, bool | int | float) else raw
        except orjson.JSONDecodeError:
            out[key] = raw
    return out


@dataclass
class Submission:
    template: str
    config_uri: str
    pipeline_root: str
    service_account: str
    params: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    enable_caching: bool = False
    job_id: str | None = None
    pipeline: str = "stt-flywheel"  # the pipeline's name: display name and job id prefix


def pipeline_job(config: FlywheelConfig, submission: Submission) -> Any:
    """The PipelineJob of a submission, built locally (no API call yet): checked and labelled. The
    service account goes in at `submit`."""
    from google.cloud import aiplatform

    if not is_remote(submission.pipeline_root):
        raise InputError(f"the pipeline root must be a gs:// URI on Vertex, not {submission.pipeline_root}")
    if not submission.config_uri.startswith("gs://"):
        raise InputError(
            f"the config must be readable by the pipeline's tasks (gs://…), not {submission.config_uri}"
        )
    if not submission.service_account:
        raise InputError(
            "a submission needs a service account (vertex.pipeline_service_account or --service-account)"
        )
    init_vertex(config.vertex)
    labels = {"app": "stt-flywheel", **{k: label_value(v) for k, v in submission.labels.items()}}
    job_id = submission.job_id or f"{submission.pipeline}-{time.strftime('%Y%m%d-%H%M%S')}"
    if not re.fullmatch(r"[a-z][a-z0-9-]{0,127}", job_id):
        raise InputError(f"invalid job id {job_id!r}")
    job = aiplatform.PipelineJob(
        display_name=submission.pipeline,
        template_path=submission.template,
        job_id=job_id,
        pipeline_root=submission.pipeline_root,
        parameter_values={"config_uri": submission.config_uri, **submission.params},
        enable_caching=submission.enable_caching,
        labels=labels,
    )
    return job


def submit_pipeline(
    config: FlywheelConfig,
    submission: Submission,
    *,
    wait: bool = False,
    poll_s: float = 15.0,
    report: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Create the PipelineJob; with `wait`, report task states as they change until it ends."""
    from google.cloud import aiplatform

    job = pipeline_job(config, submission)
    job.submit(service_account=submission.service_account)
    report(f"submitted {job.resource_name}")
    if not wait:
        return {"name": job.resource_name, "state": job.gca_resource.state.name}
    seen: dict[str, str] = {}
    while True:
        resource = aiplatform.PipelineJob.get(job.resource_name).gca_resource
        for task in resource.job_detail.task_details:
            state = task.state.name
            if seen.get(task.task_name) != state:
                seen[task.task_name] = state
                report(f"  {task.task_name}: {state}")
        if resource.state.name in TERMINAL:
            report(f"{resource.state.name.removeprefix('PIPELINE_STATE_').lower()}: {job.resource_name}")
            return {"name": job.resource_name, "state": resource.state.name, "tasks": seen}
        time.sleep(poll_s)
