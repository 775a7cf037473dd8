"""Run the compiled pipeline on this machine against the embedded backends."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console

from flywheel_pipelines.compile import compile_pipeline, run_compiled_locally
from flywheel_pipelines.pipeline import PIPELINE_NAME
from flywheel_pipelines.progress import watch_run
from stt_flywheel.config import ConfigError, FlywheelConfig, load_config
from stt_flywheel.run.ledger import list_runs
from stt_flywheel.run.stages import bootstrap_registry
from stt_flywheel.run.summary import summarize_run, write_summary
from stt_flywheel.storage.objectstore import is_remote

__all__ = ["run_local", "run_monitor_locally"]


def run_local(
    config_path: str | Path,
    *,
    package: Path | None = None,
    force: bool = False,
    auto_deploy: bool = True,
    max_steps: int = 0,
    console: Console | None = None,
) -> tuple[FlywheelConfig, str]:
    """Bootstrap the registry if empty, compile (unless given a package) and run. Returns the run id.
    With `console`, each stage's outcome and the training steps are shown while it runs.

    The config may be a path or a `gs://` URI (the tasks read it from there, as on Vertex)."""
    config = load_config(config_path)
    if is_remote(config.paths.pipeline_root):
        raise ConfigError(
            f"the local runner needs a local pipeline_root, not {config.paths.pipeline_root} "
            "(a gs:// pipeline root is for `stt-flywheel submit`)"
        )
    bootstrap_registry(config)
    if package is None:
        package = compile_pipeline(config.paths.root / "pipeline.yaml")
    arguments: dict[str, Any] = {
        "config_uri": str(config_path) if is_remote(config_path) else str(Path(config_path).resolve()),
        "force": force,
        "auto_deploy": auto_deploy,
        "max_steps": max_steps,
    }
    before = set(list_runs(config))
    log_path = config.paths.root / "logs" / f"run-{time.strftime('%Y%m%d-%H%M%S')}.log"
    if console is None:
        run_compiled_locally(package, config.paths.pipeline_root, arguments, log_path=log_path)
    else:
        console.print(
            f"Running the pipeline with kfp.local; the tasks' full log: {log_path}", highlight=False
        )
        with watch_run(config, console):
            run_compiled_locally(package, config.paths.pipeline_root, arguments, log_path=log_path)
    runs = [r for r in list_runs(config) if r.startswith(PIPELINE_NAME) and r not in before]
    if len(runs) != 1:
        raise RuntimeError(f"expected one new run ledger under {config.paths.reports}, found {runs}")
    # the run's summary stays beside its ledger, whatever later runs do (`runs show` rebuilds it)
    write_summary(config, summarize_run(config, runs[0]))
    return config, runs[0]


def run_monitor_locally(
    config_path: str | Path, *, package: Path | None = None, act: bool = True
) -> list[Path]:
    """Run the compiled monitor pipeline once with kfp.local; returns the decisions it wrote
    (`<reports>/monitor/*.json`, one per look)."""
    config = load_config(config_path)
    if is_remote(config.paths.pipeline_root) or is_remote(config.paths.reports):
        raise ConfigError("the local runner needs a local pipeline_root and reports directory")
    if package is None:
        package = compile_pipeline(config.paths.root / "monitor.yaml", pipeline="monitor")
    decisions = Path(config.paths.reports) / "monitor"
    before = set(decisions.glob("*.json"))
    arguments = {
        "config_uri": str(config_path) if is_remote(config_path) else str(Path(config_path).resolve()),
        "act": act,
    }
    log_path = config.paths.root / "logs" / f"monitor-{time.strftime('%Y%m%d-%H%M%S')}.log"
    run_compiled_locally(package, config.paths.pipeline_root, arguments, log_path=log_path)
    return sorted(set(decisions.glob("*.json")) - before)
