"""What a local run shows while it runs: each stage's outcome as its ledger entry appears, and the
training steps; into a pipe, a line every fifth of the run."""

import io
import time
from pathlib import Path

from entries import dataset_entry, deploy_entry, progress, train_entry, trigger_entry, validation_entry
from rich.console import Console

from flywheel_pipelines.progress import stage_line, watch_run
from stt_flywheel.config import FlywheelConfig
from stt_flywheel.run.ledger import write_ledger


def _wait_for(out: io.StringIO, text: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in out.getvalue():
        assert time.monotonic() < deadline, f"{text!r} never shown; got:\n{out.getvalue()}"
        time.sleep(0.02)


def test_stages_and_training_steps_are_shown_as_they_happen(tmp_path: Path) -> None:
    config = FlywheelConfig.model_validate({"paths": {"root": str(tmp_path / "state")}})
    write_ledger(config, "an-earlier-run", trigger_entry(summary="not fired: 0 new error cases"))
    out = io.StringIO()
    run = "stt-flywheel-2026-11-27-10-00-00-000000"
    with watch_run(config, Console(file=out, width=160), interval_s=0.02):
        write_ledger(config, run, trigger_entry(summary="fired: 80 new error cases (need 50); 71 corrected"))
        _wait_for(out, "✓ trigger: fired: 80 new error cases (need 50)")
        assert "71 corrected" not in out.getvalue()  # its first reason only
        write_ledger(config, run, dataset_entry(splits={"train": 160}))
        _wait_for(out, "✓ dataset: ds-1: 61 accepted, 5 quarantined")
        for step in (1, 50, 100):
            write_ledger(config, run, progress(step))
            _wait_for(out, f"training: step {step}/100")
        write_ledger(config, run, train_entry())
        _wait_for(out, "✓ train: 100 steps on cpu in 42 s")
        write_ledger(config, run, validation_entry(passed=False, reasons=["ΔWER +0.1 is not below -0.02"]))
    # what the last poll saw after the block: nothing is lost at the end
    text = out.getvalue()
    assert "✓ validation: rejected: ΔWER +0.1" in text
    assert f"run {run}" in text and "an-earlier-run" not in text
    assert (
        text.index("✓ trigger")
        < text.index("✓ dataset")
        < text.index("training: step 1/")
        < text.index("✓ train")
    )


def test_a_blocked_trigger_says_all_of_why() -> None:
    entry = trigger_entry(
        summary="not started: canary v2 serves 50 % (the monitor decides it; or rollback)", blocked_by="x"
    )
    assert stage_line(entry).endswith("or rollback)")
    assert stage_line(deploy_entry("canary", 3)) == "canary (version 3)"
