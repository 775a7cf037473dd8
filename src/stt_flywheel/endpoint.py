"""The embedded endpoint: which registry versions serve traffic, and a predict call that uses them.

Deployment state lives in the registry's SQLite file (table `deployments`), so the registry and the
endpoint change together in one transaction where they must.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from stt_flywheel.models import SpeechModel, load_model
from stt_flywheel.registry import LocalRegistry, RegistryError

__all__ = ["Deployment", "LocalEndpoint"]


@dataclass(frozen=True)
class Deployment:
    version: int
    traffic: int
    deployed_at: str


class LocalEndpoint:
    def __init__(self, registry: LocalRegistry, name: str) -> None:
        self.registry = registry
        self.name = name
        self._models: dict[int, SpeechModel] = {}

    def deployments(self) -> list[Deployment]:
        with self.registry.reader() as conn:
            rows = conn.execute(
                "SELECT version, traffic, deployed_at FROM deployments WHERE endpoint=? AND model=? ORDER BY version",
                (self.name, self.registry.model),
            ).fetchall()
        return [Deployment(r["version"], r["traffic"], r["deployed_at"]) for r in rows]

    def traffic(self) -> dict[int, int]:
        return {d.version: d.traffic for d in self.deployments() if d.traffic > 0}

    def deploy(self, version: int, reason: str = "") -> None:
        """Serve `version` with 100% of traffic and undeploy the rest (the `replace` strategy)."""
        self.registry.get(version)
        now = datetime.now(UTC).isoformat()
        with self.registry.transaction() as conn:
            conn.execute(
                "DELETE FROM deployments WHERE endpoint=? AND model=?", (self.name, self.registry.model)
            )
            conn.execute(
                "INSERT INTO deployments (endpoint, model, version, traffic, deployed_at) VALUES (?, ?, ?, 100, ?)",
                (self.name, self.registry.model, version, now),
            )
            self.registry.audit(conn, "deploy", version, {"endpoint": self.name, "reason": reason})

    def last_deployed_at(self) -> datetime | None:
        deps = self.deployments()
        return max((datetime.fromisoformat(d.deployed_at) for d in deps), default=None)

    def _model(self, version: int) -> SpeechModel:
        if version not in self._models:
            self._models[version] = load_model(self.registry.get(version).uri, device="cpu")
        return self._models[version]

    def predict(
        self, audios: Sequence[np.ndarray], rng: random.Random | None = None
    ) -> tuple[int, list[str]]:
        """Transcribe with a version chosen by the traffic split. Returns (version, transcripts)."""
        split = self.traffic()
        if not split:
            raise RegistryError(f"endpoint {self.name} has no deployed model")
        versions = list(split)
        version = (rng or random.Random()).choices(versions, weights=[split[v] for v in versions])[0]
        return version, self._model(version).transcribe(audios)
