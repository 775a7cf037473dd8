"""The read commands (`status`, `registry list|audit`, `runs list|show`) load what reading needs
and no more: torch, transformers, scipy and the pipeline SDK stay out (`-X importtime`
of each, as a fresh process). Their time and memory on the demo's state are `make bench`'s
(benchmarks/bench_read.py). numba (with scipy, which its version check imports) stays out too: a
handful of corrections is aligned in the interpreter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from entries import dataset_entry, train_entry, trigger_entry, validation_entry

from stt_flywheel.config import FlywheelConfig
from stt_flywheel.run.entries import DeployEntry, ServingState
from stt_flywheel.run.ledger import write_ledger
from stt_flywheel.run.stages import bootstrap_registry

HEAVY = {
    "torch",
    "transformers",
    "scipy",
    "numba",
    "kfp",
    "datasets",
    "matplotlib",
    "statsmodels",
}
READS = (
    ["status"],
    ["registry", "list"],
    ["registry", "audit"],
    ["runs", "list"],
    ["runs", "show", "latest"],
)


def _imported(stderr: str) -> set[str]:
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def test_read_commands_import_no_heavy_library(flywheel_config: tuple[Path, FlywheelConfig]) -> None:
    path, config = flywheel_config
    bootstrap_registry(config)
    serving = ServingState(endpoint="local", strategy="canary", traffic={"1": 100}, aliases={"default": 1})
    deploy = DeployEntry(
        action="skipped", version=None, replaced=None, reasons=["test"], before=serving, after=serving
    )
    for entry in (trigger_entry(), dataset_entry(), train_entry(), validation_entry(), deploy):
        write_ledger(config, "stt-flywheel-run-1", entry)
    for argv in READS:
        run = subprocess.run(
            [
                sys.executable,
                "-X",
                "importtime",
                "-m",
                "flywheel_pipelines.cli",
                *argv,
                "--config",
                str(path),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, (argv, run.stderr[-3000:])
        loaded = _imported(run.stderr)
        assert "stt_flywheel.config" in loaded  # the measurement sees the project's own imports
        assert not loaded & HEAVY, (argv, sorted(loaded & HEAVY))
