"""Run the compiled pipeline on this machine against the embedded backends."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from flywheel_pipelines.compile import compile_pipeline, run_compiled_locally
from flywheel_pipelines.flywheel_pipeline import PIPELINE_NAME

from stt_flywheel.config import FlywheelConfig, load_config
from stt_flywheel.stages import bootstrap_registry

__all__ = ["run_local"]


def _new_run_dirs(reports: Path, since: float) -> list[Path]:
    if not reports.is_dir():
        return []
    dirs = [
        d
        for d in reports.iterdir()
        if d.is_dir() and d.name.startswith(PIPELINE_NAME) and d.stat().st_mtime >= since
    ]
    return sorted(dirs, key=lambda d: d.stat().st_mtime)


def run_local(
    config_path: Path,
    *,
    package: Path | None = None,
    force: bool = False,
    auto_deploy: bool = True,
    max_steps: int = 0,
) -> tuple[FlywheelConfig, str]:
    """Bootstrap the registry if empty, compile (unless given a package) and run. Returns the run id."""
    config = load_config(config_path)
    bootstrap_registry(config)
    assert config.paths.pipeline_root and config.paths.reports
    if package is None:
        package = compile_pipeline(config.paths.root / "pipeline.yaml")
    arguments: dict[str, Any] = {
        "config_uri": str(Path(config_path).resolve()),
        "force": force,
        "auto_deploy": auto_deploy,
        "max_steps": max_steps,
    }
    started = time.time() - 1
    log_path = config.paths.root / "logs" / f"run-{time.strftime('%Y%m%d-%H%M%S')}.log"
    run_compiled_locally(package, config.paths.pipeline_root, arguments, log_path=log_path)
    runs = _new_run_dirs(config.paths.reports, started)
    if not runs:
        raise RuntimeError("the pipeline ran but wrote no run ledger")
    return config, runs[-1].name
