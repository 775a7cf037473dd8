"""Runs in Vertex AI Experiments: the real aiplatform SDK against the Vertex stand-in's Metadata API."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import pytest
from fakes.vertex import ApiError, running_fake

from stt_flywheel.config import FlywheelConfig
from stt_flywheel.run.experiments import record_in_experiment


def _config(
    tmp_path: Path, url: str, fake: object, experiment: str | None = "stt-flywheel"
) -> FlywheelConfig:
    return FlywheelConfig.model_validate(
        {
            "paths": {"root": str(tmp_path / "state")},
            "vertex": {
                "project": fake.project,  # type: ignore[attr-defined]
                "location": fake.location,  # type: ignore[attr-defined]
                "api_endpoint": url,
                "experiment": experiment,
            },
        }
    )


def _stage(config: FlywheelConfig, metrics: dict, artifacts: bool, results: Any) -> None:
    results.put(record_in_experiment(config, "run-7", metrics, artifacts=artifacts))


@pytest.mark.parametrize("round_", range(3))
def test_both_evaluating_stages_land_in_one_experiment_run(tmp_path: Path, round_: int) -> None:
    """Validation and the suites at once, as the pipeline runs them: one run, both stages' metrics."""
    with running_fake() as (fake, url):
        config = _config(tmp_path, url, fake)
        stages = [  # validation, and three workers on the suites (more writers, more chances to race)
            ({"wer": 0.21, "production_wer": 0.3, "p_value": 0.01}, True),
            ({"general_wer": 0.12, "general_delta_wer": -0.01}, False),
            ({"critical_wer": 0.05}, False),
            ({"edge_wer": 0.4}, False),
        ]
        ctx = multiprocessing.get_context("fork")  # a process each, as the pipeline runs its tasks
        results = ctx.Queue()
        procs = [ctx.Process(target=_stage, args=(config, m, a, results)) for m, a in stages]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        done = [results.get(timeout=5) for _ in procs]
        run = fake.metadata.run("stt-flywheel", "run-7")
        experiment = fake.metadata.metadata["contexts"]["stt-flywheel"]
    assert done == [True] * 4
    assert run is not None and run["schemaTitle"] == "system.ExperimentRun"
    assert run["metadata"]["_metrics"] == {
        "wer": 0.21,
        "production_wer": 0.3,
        "p_value": 0.01,
        "general_wer": 0.12,
        "general_delta_wer": -0.01,
        "critical_wer": 0.05,
        "edge_wer": 0.4,
    }
    assert run["metadata"]["_params"]["run_id"] == "run-7"
    assert experiment["schemaTitle"] == "system.Experiment"


def test_without_an_experiment_nothing_is_sent_and_a_refusal_is_not_a_failure(tmp_path: Path) -> None:
    with running_fake() as (fake, url):
        assert (
            record_in_experiment(_config(tmp_path, url, fake, None), "run-1", {"wer": 0.2}, artifacts=True)
            is False
        )
        assert not fake.calls
        fake.fail_next("GET", r"metadataStores/default$", ApiError(403, "the caller may not read metadata"))
        assert (
            record_in_experiment(_config(tmp_path, url, fake), "run-1", {"wer": 0.2}, artifacts=True) is False
        )


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_metric_that_is_not_a_number_is_left_out(tmp_path: Path, value: float) -> None:
    with running_fake() as (fake, url):
        assert record_in_experiment(
            _config(tmp_path, url, fake), "run-2", {"wer": value, "cer": 0.1}, artifacts=False
        )
        run = fake.metadata.run("stt-flywheel", "run-2")
    assert run is not None and run["metadata"]["_metrics"] == {"cer": 0.1}
