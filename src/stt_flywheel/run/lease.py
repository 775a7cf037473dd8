"""The run lease: one run at a time trains and deploys; a stage that fails gives the lease back."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from stt_flywheel.config import FlywheelConfig
from stt_flywheel.storage.leases import release_lease
from stt_flywheel.storage.objectstore import ObjectStore, open_store

__all__ = ["RUN_LEASE", "release_run_lease", "releases_lease_on_failure", "run_state"]

P = ParamSpec("P")
R = TypeVar("R")

RUN_LEASE = "flywheel-run"  # one run at a time trains and deploys


def run_state(config: FlywheelConfig) -> ObjectStore:
    return open_store(config.paths.state)


def release_run_lease(config: FlywheelConfig, run_id: str) -> None:
    release_lease(run_state(config), RUN_LEASE, run_id)


def releases_lease_on_failure(stage: Callable[P, R]) -> Callable[P, R]:
    """A stage of a training run that fails (a bug, a full disk, a lost connection) releases the
    run lease, so the next run need not wait `trigger.lease_hours` behind a dead one. A retry of
    the stage goes on without it; the deployer renews it and refuses when another run took it."""

    signature = inspect.signature(stage)

    @functools.wraps(stage)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return stage(*args, **kwargs)
        except Exception:
            named = signature.bind(*args, **kwargs).arguments
            release_run_lease(named["config"], named["run_id"])
            raise

    return run
