"""A person's review decision on held corrections, wherever it is made (`review accept|reject`,
the review page of `stt-flywheel ui`): recorded in the store, then in the registry's audit log."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stt_flywheel.config import FlywheelConfig
from stt_flywheel.data.error_store import open_error_store
from stt_flywheel.data.review import Screen, decide
from stt_flywheel.deployment.backends import open_registry

__all__ = ["review"]


def review(
    config: FlywheelConfig, prediction_ids: Sequence[str], *, accept: bool, reason: str, by: str
) -> list[dict[str, Any]]:
    """Accept or reject held corrections by prediction id as `by`; each decision is audited."""
    made = decide(
        open_error_store(config), Screen.of(config), prediction_ids, accept=accept, reason=reason, by=by
    )
    registry = open_registry(config)
    for entry in made:
        registry.record("review", None, {k: entry[k] for k in ("prediction_id", "decision", "reason", "by")})
    return made
