"""What a run, a proposal and a month cost: each stage's machine × its measured time × the price."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from stt_flywheel.config import ConfigError, FlywheelConfig, load_config
from stt_flywheel.run.costs import (
    HOURS_PER_MONTH,
    monthly_cost,
    record_stage_time,
    run_cost,
    timed,
    typical_run_cost,
)
from stt_flywheel.storage.objectstore import open_store

NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)


def _config(tmp_path: Path, **extra: object) -> FlywheelConfig:
    return FlywheelConfig.model_validate({"paths": {"root": str(tmp_path / "state")}, **extra})


def _run(config: FlywheelConfig, when: datetime, times: list[tuple[str, float]]) -> str:
    run_id = f"stt-flywheel-{when:%Y-%m-%d-%H-%M-%S-%f}"
    open_store(config.paths.reports).write(f"{run_id}/trigger.json", b"{}")  # a run as `list_runs` sees one
    for stage, seconds in times:
        record_stage_time(config, run_id, stage, seconds)
    return run_id


def test_a_runs_cost_is_each_stages_machine_times_its_measured_time(tmp_path: Path) -> None:
    config = _config(tmp_path)
    # the trainer retried once: both attempts were paid for
    run_id = _run(config, NOW, [("trigger", 36.0), ("dataset", 360.0), ("train", 1800.0), ("train", 1800.0)])
    cost = run_cost(config, run_id)
    assert cost is not None
    by_stage = {s.stage: s for s in cost.stages}
    assert [s.stage for s in cost.stages] == ["trigger", "dataset", "train"]
    assert by_stage["train"].seconds == 3600.0 and by_stage["train"].machine == "g2-standard-8"
    assert by_stage["train"].cost == pytest.approx(0.985)
    assert by_stage["dataset"].cost == pytest.approx(0.154 / 10)
    assert cost.total == pytest.approx(0.985 + 0.0154 + 0.154 / 100 + 0.03)
    assert "estimate" in cost.line() and "2025-06" in cost.line()
    assert run_cost(config, "a-run-that-measured-nothing") is None


def test_an_accelerator_on_an_n1_machine_is_priced_on_top(tmp_path: Path) -> None:
    machines = {"train": {"machine": "n1-standard-8", "accelerator": "NVIDIA_TESLA_T4", "accelerators": 2}}
    config = _config(tmp_path, costs={"stage_machines": machines})
    cost = run_cost(config, _run(config, NOW, [("train", 3600.0)]))
    assert cost is not None and cost.stages[0].hourly == pytest.approx(0.437 + 2 * 0.403)


def test_a_stage_that_fails_is_still_timed(tmp_path: Path) -> None:
    config = _config(tmp_path)

    @timed("dataset")
    def stage(config: FlywheelConfig, run_id: str) -> None:
        raise RuntimeError("the store went away")

    with pytest.raises(RuntimeError):
        stage(config, "r-1")
    cost = run_cost(config, "r-1")
    assert cost is not None and [s.stage for s in cost.stages] == ["dataset"]


def test_a_month_is_serving_at_its_floor_the_last_30_days_of_runs_and_the_stores(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        deploy={"backend": "vertex"},
        vertex={"machine_type": "g2-standard-8", "min_replica_count": 2, "max_replica_count": 4},
    )
    _run(config, NOW - timedelta(days=3), [("train", 3600.0)])
    _run(config, NOW - timedelta(days=45), [("train", 3600.0)])  # before the month
    models = Path(config.paths.models)
    models.mkdir(parents=True)
    (models / "weights.bin").write_bytes(b"\0" * 5_000_000)
    reports = open_store(config.paths.reports)
    for hour in range(3):  # the monitor's looks, each as long as it measured
        reports.write(f"monitor/2026-12-07T0{hour}0000Z-monitor-{hour}.json", b'{"seconds": 360.0}')
    month = monthly_cost(config, NOW)
    assert month.monitor_looks == 3
    assert month.monitor == pytest.approx(3 * (0.03 + 0.154 / 10))
    assert month.serving == pytest.approx(2 * 0.985 * HOURS_PER_MONTH)
    assert month.serving_basis == "2 × g2-standard-8"
    assert (month.runs_counted, month.runs) == (1, pytest.approx(0.985 + 0.03))
    assert month.store_gb == pytest.approx(0.005, abs=0.001)
    assert month.total == pytest.approx(month.serving + month.runs + month.monitor + month.store)
    embedded = monthly_cost(_config(tmp_path / "e"), NOW)
    assert embedded.serving is None and "embedded" in embedded.serving_basis


def test_the_latest_run_that_trained_is_what_a_proposal_quotes(tmp_path: Path) -> None:
    config = _config(tmp_path)
    assert typical_run_cost(config) is None
    trained = _run(config, NOW - timedelta(days=1), [("trigger", 10.0), ("train", 600.0)])
    _run(config, NOW, [("trigger", 10.0)])  # the trigger did not fire: no training to quote
    quoted = typical_run_cost(config)
    assert quoted is not None and quoted.run_id == trained


def test_a_machine_without_a_price_is_refused_with_its_name(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("costs:\n  stage_machines:\n    train: {machine: z9-mega-64}\n")
    with pytest.raises(ConfigError, match="z9-mega-64"):
        load_config(path)
