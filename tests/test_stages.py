"""The stage entry points and the run ledger, in-process: the decisions a run makes at each stage.

The happy path through all six stages runs in `test_components.py` (through the components);
these are the ways a run ends early, and what an operator does with a run afterwards.
"""

import math
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from entries import dataset_entry, trigger_entry
from pydantic import ValidationError

from flywheel_pipelines.cli import main
from stt_flywheel.config import FlywheelConfig
from stt_flywheel.data.error_store import ErrorStore
from stt_flywheel.demo.scenario import simulate_traffic
from stt_flywheel.deployment.backends import open_endpoint, open_registry
from stt_flywheel.models import saved_model_dir
from stt_flywheel.run.entries import DatasetEntry, DeployEntry, RegressionEntry, TrainEntry, ValidationEntry
from stt_flywheel.run.lease import RUN_LEASE
from stt_flywheel.run.ledger import list_runs, read_ledger, write_ledger
from stt_flywheel.run.stages import (
    bootstrap_registry,
    loggable_metrics,
    stage_build_dataset,
    stage_check_trigger,
    stage_deploy_model,
    stage_run_regression_suites,
    stage_train_model,
    stage_validate_model,
)
from stt_flywheel.run.summary import summarize_run
from stt_flywheel.storage.leases import acquire_lease, read_lease
from stt_flywheel.storage.objectstore import open_store


def _lease_released(config: FlywheelConfig, run_id: str) -> bool:
    lease = read_lease(open_store(config.paths.state), RUN_LEASE)
    return lease is None or (lease.holder == run_id and lease.expired(datetime.now(UTC)))


def test_an_overlapping_run_stops_at_the_trigger(flywheel_config: tuple) -> None:
    """A scheduled run holds the run lease; a manual run (even forced) stops and says why."""
    _, config = flywheel_config
    bootstrap_registry(config)
    state = open_store(config.paths.state)
    acquire_lease(state, RUN_LEASE, "stt-flywheel-scheduled-run", timedelta(hours=1))
    forced = stage_check_trigger(config.with_overrides({"trigger.force": True}), "forced-run")
    assert not forced.should_train
    assert forced.blocked_by is not None
    assert "stt-flywheel-scheduled-run" in forced.blocked_by
    s = summarize_run(config, "forced-run")
    assert s.trigger.fired is False
    assert "another run holds the run lease" in (s.trigger.summary or "")
    assert s.dataset is None
    assert s.training is None
    lease = read_lease(state, RUN_LEASE)
    assert lease is not None
    assert lease.holder == "stt-flywheel-scheduled-run"


def test_a_canary_in_flight_stops_the_next_run_until_it_is_decided(flywheel_config: tuple) -> None:
    """A second candidate would serve beside the first canary and spoil the monitor's comparison."""
    from stt_flywheel.deployment.strategies import rollback, start_canary

    _, config = flywheel_config
    v1 = bootstrap_registry(config)
    registry = open_registry(config)
    endpoint = open_endpoint(config, registry)
    v2 = registry.register(v1.uri, source_run="run-2")
    start_canary(registry, endpoint, v2.version, 10, "run-2")
    forced = config.with_overrides({"trigger.force": True})
    blocked = stage_check_trigger(forced, "run-3")
    assert not blocked.should_train
    assert blocked.blocked_by is not None and "canary v2 serves 10 %" in blocked.blocked_by
    assert read_lease(open_store(config.paths.state), RUN_LEASE) is None  # nothing was taken
    rollback(registry, endpoint, "decided")
    assert stage_check_trigger(forced, "run-4").should_train


def test_an_unusable_dataset_ends_the_run_and_frees_the_lease(tmp_path: Path, flywheel_config: tuple) -> None:
    """Every correction is bad input: the dataset quarantines them all and the run stops before training."""
    _, config = flywheel_config
    bootstrap_registry(config)
    rows = [
        {
            "id": f"r{i}",
            "audio_uri": str(tmp_path / f"missing-{i}.wav"),
            "hypothesis": "x",
            "corrected_text": "y",
            "timestamp": "2026-11-01T00:00:00Z",
        }
        for i in range(12)
    ]
    ErrorStore(config.paths.error_store).ingest(rows)
    forced = config.with_overrides({"trigger.force": True})
    decision = stage_check_trigger(forced, "run-bad-data")
    assert decision.should_train
    manifest = stage_build_dataset(forced, decision.watermark.isoformat(), tmp_path / "ds", "run-bad-data")
    usable, reason = manifest.usable
    assert not usable
    assert "no usable examples" in reason
    assert manifest.counts["quarantined"] == 12
    assert _lease_released(config, "run-bad-data")
    s = summarize_run(config, "run-bad-data")
    assert s.dataset is not None and s.dataset.usable is False
    assert s.training is None
    assert open_registry(config).aliases() == {"default": 1}


@pytest.fixture(scope="module")
def rejected_run(
    tmp_path_factory: pytest.TempPathFactory,
    world: dict[str, Path],
    config_factory: Callable[..., tuple[Path, FlywheelConfig]],
) -> tuple[Path, FlywheelConfig, str, Path]:
    """A run whose candidate (5 steps at an absurd learning rate) the validator rejected.

    Shared by the tests below in file order; the one that promotes the candidate comes last.
    """
    tmp_path = tmp_path_factory.mktemp("rejected-run")
    config_path, config = config_factory(
        tmp_path, training={"max_steps": 5, "learning_rate": 5.0, "warmup_steps": 0}
    )
    bootstrap_registry(config)
    simulate_traffic(config, world, tmp_path, flag_share=0.0, silent_share=0.0)
    run_id = "run-rejected"
    decision = stage_check_trigger(config, run_id)
    assert decision.should_train
    stage_build_dataset(config, decision.watermark.isoformat(), tmp_path / "ds", run_id)
    stage_train_model(config, tmp_path / "ds", tmp_path / "model", run_id)
    outcome = stage_validate_model(config, tmp_path / "model", tmp_path / "ds", tmp_path / "val", run_id)
    assert not outcome.passed
    return config_path, config, run_id, tmp_path


def test_a_rejected_run_frees_the_lease_and_keeps_its_candidate(rejected_run: tuple) -> None:
    _, config, run_id, _ = rejected_run
    assert _lease_released(config, run_id)
    train = read_ledger(config, run_id, TrainEntry)
    assert train is not None
    assert (Path(train.model_dir) / "config.json").is_file()
    assert read_ledger(config, run_id, DeployEntry) is None
    assert open_registry(config).aliases() == {"default": 1}
    # the candidate's word confidence was calibrated on the held-out split, saved with it (so in
    # its digest) and shown by the validation report
    assert train.calibration is not None and train.calibration["words"] > 0
    saved = orjson.loads((Path(train.model_dir) / "calibration.json").read_bytes())
    assert saved["temperature"] == train.calibration["temperature"] > 0
    assert 0 <= saved["ece_after"] <= 1 and 0 <= saved["ece_before"] <= 1
    validation = read_ledger(config, run_id, ValidationEntry)
    assert validation is not None and validation.evaluation.calibration == saved
    report = next(p for p in Path(config.paths.reports).rglob("validation.html") if run_id in str(p))
    assert "Word confidence" in report.read_text() and "reliability" in report.read_text()


def test_stage_run_regression_suites_judges_every_suite(rejected_run: tuple) -> None:
    """Stage 5 on the same candidate: one verdict per suite, metrics per suite, the report returned."""
    _, config, run_id, run_dir = rejected_run
    outcome = stage_run_regression_suites(config, run_dir / "model", run_dir / "reg", run_id)
    suites = [s.name for s in config.regression]
    entry = read_ledger(config, run_id, RegressionEntry)
    assert entry is not None
    assert [s.name for s in entry.suites] == suites
    assert entry.passed is outcome.passed
    for name in suites:
        assert f"{name}_wer" in outcome.metrics
        assert f"{name}_p_holm" in outcome.metrics
    assert all(math.isfinite(v) for v in outcome.metrics.values())
    assert "Verdict" in outcome.report_html
    assert sorted(p.name for p in (run_dir / "reg").iterdir()) == ["verdict.json"]


def test_a_rejected_runs_candidate_can_be_promoted_by_force(
    rejected_run: tuple, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path, config, run_id, _ = rejected_run

    def promote(*extra: str) -> tuple[int, str]:
        args = ["registry", "promote", "--run", run_id, "--reason", "hotfix", "--config", str(config_path)]
        monkeypatch.setattr(sys, "argv", ["stt-flywheel", *args, *extra])
        with pytest.raises(SystemExit) as exited:
            main()
        out = capsys.readouterr()
        return int(exited.value.code or 0), out.out + out.err

    status, said = promote()
    assert status == 1
    assert "--force" in said  # the evaluation rejected it: promoting needs the operator to say so
    status, said = promote("--force")
    assert status == 0, said
    registry = open_registry(config)
    assert registry.aliases() == {"default": 2, "previous": 1}
    assert open_endpoint(config, registry).traffic() == {2: 100}
    assert registry.get(2).source_run == run_id
    (forced,) = [e for e in registry.audit_log() if e.action == "forced_promotion"]
    assert forced.detail["overrode"] == 1
    assert forced.detail["reason"] == "hotfix"
    assert forced.detail["failed_gates"]


def test_the_deployer_stops_when_the_run_lost_its_lease(tmp_path: Path, flywheel_config: tuple) -> None:
    """After the lease expired and another run took it, an old run must not deploy over it."""
    _, config = flywheel_config
    bootstrap_registry(config)
    acquire_lease(open_store(config.paths.state), RUN_LEASE, "newer-run", timedelta(hours=1))
    outcome = stage_deploy_model(
        config, tmp_path / "m", tmp_path / "d", tmp_path / "v", tmp_path / "r", "old-run"
    )
    assert outcome.action == "rejected"
    assert "lost the run lease" in outcome.reasons[0]
    entry = read_ledger(config, "old-run", DeployEntry)
    assert entry is not None
    assert entry.action == "rejected"


def test_the_ledger_lists_runs_that_got_past_their_trigger(flywheel_config: tuple) -> None:
    _, config = flywheel_config
    assert list_runs(config) == []
    write_ledger(config, "run-b", trigger_entry(should_train=False))
    write_ledger(config, "run-a", trigger_entry(should_train=True))
    write_ledger(config, "run-a", dataset_entry(version="ds-1"))
    assert list_runs(config) == ["run-a", "run-b"]
    assert read_ledger(config, "run-a", DatasetEntry) == dataset_entry(version="ds-1")
    assert read_ledger(config, "run-b", DatasetEntry) is None


def test_an_entry_with_a_renamed_key_is_refused_where_it_is_written_and_read(flywheel_config: tuple) -> None:
    """A stage whose outcome lost or renamed a field fails at the contract, naming it; a ledger
    file edited the same way is refused when read, not taken for an empty outcome."""
    _, config = flywheel_config
    entry = dataset_entry().model_dump()
    entry["use_reason"] = entry.pop("usable_reason")
    with pytest.raises(ValidationError, match="usable_reason"):
        DatasetEntry.model_validate(entry)
    write_ledger(config, "run-c", dataset_entry())
    path = Path(config.paths.reports) / "run-c" / "dataset.json"
    path.write_text(path.read_text().replace('"usable_reason"', '"use_reason"'))
    with pytest.raises(ValidationError, match="use_reason"):
        read_ledger(config, "run-c", DatasetEntry)


def test_saved_model_dir_is_the_one_layout() -> None:
    assert saved_model_dir("/artifacts/model") == Path("/artifacts/model/model")


LOGGABLE = [
    ({"wer": 0.1, "steps": 3}, {"wer": 0.1, "steps": 3.0}),
    ({"p": math.nan, "inf": math.inf, "ok": -0.5}, {"ok": -0.5}),
    ({"flag": True, "name": "x", "none": None, "list": [1]}, {}),
    ({}, {}),
]


@pytest.mark.parametrize(("metrics", "expected"), LOGGABLE)
def test_loggable_metrics_keep_finite_numbers(metrics: dict[str, Any], expected: dict[str, float]) -> None:
    logged = loggable_metrics(metrics)
    assert logged == expected
    assert all(type(v) is float for v in logged.values())


def test_the_code_version_names_the_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    from stt_flywheel.run.provenance import code_version

    code_version.cache_clear()
    monkeypatch.setenv("STT_FLYWHEEL_COMMIT", "0123abcd")
    try:
        assert code_version() == {"package": "0.1.0", "commit": "0123abcd"}
    finally:
        code_version.cache_clear()


def test_a_stage_that_fails_frees_the_run_lease(tmp_path: Path, flywheel_config: tuple) -> None:
    """A crash inside a stage (here: a dataset directory that is a file) must not leave the run
    lease held for `trigger.lease_hours`: the next run starts at once."""
    _, config = flywheel_config
    bootstrap_registry(config)
    forced = config.with_overrides({"trigger.force": True})
    decision = stage_check_trigger(forced, "run-crashes")
    assert decision.should_train
    assert not _lease_released(config, "run-crashes")
    (tmp_path / "not-a-dir").write_text("x")
    with pytest.raises(OSError):
        stage_build_dataset(forced, "", tmp_path / "not-a-dir" / "ds", "run-crashes")
    assert _lease_released(config, "run-crashes")
    assert stage_check_trigger(forced, "run-next").should_train
