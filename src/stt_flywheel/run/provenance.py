"""Which code made a model: the package version, and the commit when it is known."""

from __future__ import annotations

import os
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path

__all__ = ["code_version"]


@cache
def code_version() -> dict[str, str | None]:
    """`{"package": "0.1.0", "commit": "…"}`. The commit is `STT_FLYWHEEL_COMMIT` when set (an image
    built from a known commit), else the git checkout this package runs from, else None."""
    try:
        package: str | None = metadata.version("stt-flywheel")
    except metadata.PackageNotFoundError:
        package = None
    commit = os.environ.get("STT_FLYWHEEL_COMMIT") or None
    if commit is None:
        try:
            out = subprocess.run(
                ["git", "-C", str(Path(__file__).resolve().parent), "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            out = None
        if out is not None and out.returncode == 0:
            commit = out.stdout.strip() or None
    return {"package": package, "commit": commit}
