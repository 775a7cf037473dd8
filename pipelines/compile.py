"""Compile the pipeline to a YAML package, and run a compiled package with the local runner."""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from kfp import compiler, components, local

from flywheel_pipelines.pipeline import PIPELINES
from stt_flywheel.errors import InputError, StateError

__all__ = ["LOCAL_IMAGE", "compile_pipeline", "run_compiled_locally"]

# The local runner executes components in this Python environment; the image name is only recorded.
LOCAL_IMAGE = "stt-flywheel-base:local"


DIGEST = re.compile(r"^[^@\s]+@sha256:[0-9a-f]{64}$")


def compile_pipeline(
    output: str | Path,
    base_image: str = LOCAL_IMAGE,
    trainer_image: str | None = None,
    require_digests: bool = False,
    pipeline: str = "flywheel",
    serving_image: str | None = None,
    evaluate_on_accelerator: bool = False,
) -> Path:
    """Compile `pipeline` (flywheel, monitor or retention) to YAML. For the cloud (`require_digests`), images
    must be pinned by digest, so a published template always runs the exact images that were
    tested (the monitor and retention need no trainer image). `serving_image`, when given, is the default of
    the flywheel's `serving_image` parameter: what the deployer uploads new versions with.
    `evaluate_on_accelerator`: the flywheel's validation and regression suites on a GPU each."""
    if pipeline not in PIPELINES:
        raise InputError(f"unknown pipeline {pipeline!r}: choose one of {', '.join(PIPELINES)}")
    if evaluate_on_accelerator and pipeline != "flywheel":
        raise InputError(
            f"--evaluate-on-gpu is for the flywheel pipeline; the {pipeline} pipeline evaluates nothing"
        )
    if require_digests:
        images = (base_image, trainer_image, serving_image)
        loose = [i for i in images if i is not None and not DIGEST.match(i)]
        if loose or (trainer_image is None and pipeline == "flywheel"):
            raise InputError(
                f"images must be pinned by digest (name@sha256:<64 hex>) for the cloud: {loose or ['no trainer image']}"
            )
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    _, build = PIPELINES[pipeline]
    options = {"evaluate_on_accelerator": True} if evaluate_on_accelerator else {}
    compiler.Compiler().compile(
        build(base_image, trainer_image, serving_image, **options), package_path=str(output)
    )
    return output


ANSI = re.compile(r"\x1b\[[0-9;]*m")


class _PlainText(logging.Filter):
    """Drops terminal colour codes from log records: the task log is a file people read and grep."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = ANSI.sub("", record.getMessage())
        record.args = None
        return True


@contextmanager
def _output_to(log_path: Path) -> Iterator[None]:
    """Send this process's and its children's stdout/stderr to a file (the task logs are long)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    streams = sys.stdout, sys.stderr
    with open(log_path, "ab") as log, open(log.fileno(), "w", buffering=1, closefd=False) as text:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        # Python-level writers too (kfp.local's log handler writes to sys.stdout, which a test
        # runner or a notebook may have replaced by an object that is not fd 1)
        sys.stdout = sys.stderr = text
        try:
            yield
        finally:
            text.flush()
            sys.stdout, sys.stderr = streams
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def run_compiled_locally(
    package: str | Path, pipeline_root: str | Path, arguments: dict[str, Any], log_path: Path | None = None
) -> None:
    """Run a compiled pipeline YAML with `kfp.local` in this environment (no venv, no installs).

    Raises RuntimeError when a task fails (see `log_path` for the task logs); a run whose gates
    stop it is a success.
    """
    logging.getLogger("kfp").setLevel(logging.WARNING)
    local.init(
        runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root), raise_on_error=True
    )
    pipeline = components.load_component_from_file(str(package))
    root = logging.getLogger()  # kfp.local logs through the root logger, colouring names and states
    plain = _PlainText()
    root.addFilter(plain)
    with _output_to(log_path) if log_path else nullcontext():
        try:
            pipeline(**arguments)
        except RuntimeError as exc:
            hint = f" (task logs: {log_path})" if log_path else ""
            raise StateError(f"{ANSI.sub('', str(exc))}{hint}") from exc
        finally:
            root.removeFilter(plain)
