"""Each run that trains, in Vertex AI Experiments (`vertex.experiment`), so the console compares
runs side by side: its parameters (the trigger's evidence, the dataset, the training settings),
its metrics (validation's and every suite's, each stage logging its own), and the dataset and
model as artifacts joined by the training execution.

Validation and the regression suites run side by side: whichever comes first creates the
experiment run, the other resumes it. The SDK reads the run, merges metrics on the client and
writes them whole, so two stages writing at once lose one's (the test that runs them at once saw
it): each writes under a lease on the experiment run (`paths.state`), one at a time, reading the
other's write first. A record that cannot be written is logged and the stage goes on: the ledger,
not the console, is what decides.
"""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from stt_flywheel.config import FlywheelConfig
from stt_flywheel.run.entries import DatasetEntry, TrainEntry, TriggerEntry
from stt_flywheel.run.ledger import read_ledger
from stt_flywheel.storage.leases import LeaseHeld, acquire_lease, release_lease
from stt_flywheel.storage.objectstore import PreconditionFailed, join_uri, open_store

__all__ = ["record_in_experiment", "run_params"]

log = logging.getLogger("stt_flywheel.experiments")


def run_params(config: FlywheelConfig, run_id: str) -> dict[str, str | float | int]:
    """What the run was given and chose, as Experiments' parameters (numbers and strings only)."""
    trigger = read_ledger(config, run_id, TriggerEntry)
    dataset = read_ledger(config, run_id, DatasetEntry)
    train = read_ledger(config, run_id, TrainEntry)
    params: dict[str, str | float | int] = {"run_id": run_id}
    if trigger is not None:
        params |= {
            "new_corrected_cases": trigger.stats.new_corrected_cases,
            "new_error_cases": trigger.stats.new_error_cases,
            "forced": str(trigger.forced),
        }
    if dataset is not None:
        params |= {
            "dataset_version": dataset.version,
            **{f"{k}_examples": v for k, v in dataset.splits.items()},
        }
    if train is not None:
        params |= {
            "started_from": train.started_from,
            "steps": int(train.steps),
            "seed": train.seed,
            "device": train.device,
            **{k: v for k, v in train.hyperparameters.items() if isinstance(v, int | float | str)},
        }
    return params


def _start_or_resume(aiplatform: Any, run: str) -> None:
    from google.api_core import exceptions

    try:
        aiplatform.start_run(run)
    except (exceptions.AlreadyExists, exceptions.Conflict, ValueError):
        aiplatform.start_run(run, resume=True)  # the stage beside this one made it first


def _artifacts(aiplatform: Any, config: FlywheelConfig, run_id: str) -> None:
    dataset = read_ledger(config, run_id, DatasetEntry)
    train = read_ledger(config, run_id, TrainEntry)
    if dataset is None or train is None:
        return
    with aiplatform.start_execution(
        schema_title="system.ContainerExecution", display_name=f"train {run_id}"
    ) as ex:
        ex.assign_input_artifacts(
            [
                aiplatform.Artifact.create(
                    schema_title="system.Dataset",
                    uri=join_uri(config.paths.datasets, dataset.version),
                    display_name=dataset.version,
                )
            ]
        )
        ex.assign_output_artifacts(
            [
                aiplatform.Artifact.create(
                    schema_title="system.Model", uri=train.model_dir, display_name=f"candidate of {run_id}"
                )
            ]
        )


def record_in_experiment(
    config: FlywheelConfig, run_id: str, metrics: dict[str, float], *, artifacts: bool
) -> bool:
    """Log the run's parameters and these metrics (and, with `artifacts`, its dataset and model)
    to `vertex.experiment`; False when it is not configured or the API refused."""
    name = config.vertex.experiment
    if not name or not config.vertex.project:
        return False
    from google.api_core import exceptions
    from google.cloud import aiplatform

    for attempt in range(3):
        try:
            _record(aiplatform, config, name, run_id, metrics, artifacts)
            return True
        except (exceptions.AlreadyExists, exceptions.Conflict) as exc:  # the stage beside made it first
            if attempt == 2:
                log.warning("experiments: run %s not recorded in %s (%s)", run_id, name, exc)
        except Exception as exc:  # noqa: BLE001 -- the console's record, never the run's outcome
            log.warning(
                "experiments: run %s not recorded in %s (%s: %s)", run_id, name, type(exc).__name__, exc
            )
            return False
    return False


@contextmanager
def _one_writer(config: FlywheelConfig, run_id: str, wait_s: float = 120.0) -> Iterator[None]:
    """Hold the experiment run's lease while the SDK reads, merges and writes it."""
    store = open_store(config.paths.state)
    name, holder = f"experiment-{run_id}", f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + wait_s
    while True:
        try:
            acquire_lease(store, name, holder, timedelta(minutes=5))
            break
        except (LeaseHeld, PreconditionFailed):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    try:
        yield
    finally:
        release_lease(store, name, holder)


def _record(
    aiplatform: Any,
    config: FlywheelConfig,
    name: str,
    run_id: str,
    metrics: dict[str, float],
    artifacts: bool,
) -> None:
    from stt_flywheel.deployment.vertex.client import init_vertex

    init_vertex(config.vertex)
    aiplatform.init(experiment=name, experiment_tensorboard=False)
    finite: dict[str, float | int | str] = {k: float(v) for k, v in metrics.items() if math.isfinite(v)}
    with _one_writer(config, run_id):
        _start_or_resume(aiplatform, run_id)  # reads what the other stage wrote
        aiplatform.log_params(run_params(config, run_id))
        aiplatform.log_metrics(finite)
        if artifacts:
            _artifacts(aiplatform, config, run_id)
        aiplatform.end_run()
