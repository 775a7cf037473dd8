"""The embedded endpoint: which registry versions serve traffic, and a predict call that uses them.

Deployment state lives in the registry's SQLite file (table `deployments`), so the registry and the
endpoint change together in one transaction where they must. Inside `served()`, predictions go over
HTTP to one serving process per version (`stt_flywheel.deployment.serving`, the serving image's server);
outside it, the versions' models are loaded in this process.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from stt_flywheel.deployment.registry import LocalRegistry, RegistryError
from stt_flywheel.errors import InputError

if TYPE_CHECKING:
    from stt_flywheel.deployment.serving import ServingProcess
    from stt_flywheel.models import SpeechModel

__all__ = ["Deployment", "LocalEndpoint", "canary_split"]

K = TypeVar("K")


def canary_split(current: dict[K, int], new: K, percent: int) -> dict[K, int]:
    """The traffic split after deploying `new` at `percent`: the models already serving share the
    rest in proportion to their current traffic (largest remainders), and the split sums to 100."""
    if not 0 < percent <= 100:
        raise InputError(f"traffic percentage must be in 1..100, got {percent}")
    rest = 100 - percent
    others = {k: v for k, v in current.items() if k != new}
    total = sum(others.values())
    if not others or total == 0:
        if rest and others:  # nobody had traffic: the rest goes to the first serving model
            first = next(iter(others))
            return {**dict.fromkeys(others, 0), first: rest, new: percent}
        return {**dict.fromkeys(others, 0), new: 100 if not others else percent}
    exact = {k: rest * v / total for k, v in others.items()}
    split = {k: int(x) for k, x in exact.items()}
    short = rest - sum(split.values())
    for k in sorted(exact, key=lambda k: exact[k] - split[k], reverse=True)[:short]:
        split[k] += 1
    return {**split, new: percent}


@dataclass(frozen=True)
class Deployment:
    version: int
    traffic: int
    deployed_at: str


class LocalEndpoint:
    """Deployed versions and their traffic, in the registry's SQLite file."""

    def __init__(
        self,
        registry: LocalRegistry,
        name: str,
        capture: Callable[[int], dict[str, str]] | None = None,
    ) -> None:
        self.registry = registry
        self.name = name
        self.capture = capture  # version -> its serving processes' capture environment
        self._models: dict[int, SpeechModel] = {}
        self._servers: dict[int, ServingProcess] | None = None

    def deployments(self) -> list[Deployment]:
        with self.registry.reader() as conn:
            rows = conn.execute(
                "SELECT version, traffic, deployed_at FROM deployments WHERE endpoint=? AND model=? ORDER BY version",
                (self.name, self.registry.model),
            ).fetchall()
        return [Deployment(r["version"], r["traffic"], r["deployed_at"]) for r in rows]

    def traffic(self) -> dict[int, int]:
        """Traffic per deployed version (0 for a deployed version that gets none)."""
        return {d.version: d.traffic for d in self.deployments()}

    def deploy(self, version: int, percent: int = 100, reason: str = "") -> None:
        """Serve `version` at `percent`; the versions already serving share the rest."""
        self.registry.get(version)
        now = datetime.now(UTC).isoformat()
        with self.registry.transaction() as conn:
            split = canary_split(self._split(conn), version, percent)
            self._write_split(conn, split, {version: now})
            self.registry.audit(
                conn, "deploy", version, {"endpoint": self.name, "traffic": split, "reason": reason}
            )

    def set_traffic(self, split: dict[int, int], reason: str = "") -> None:
        """Change the split among deployed versions; it must name only them and sum to 100."""
        with self.registry.transaction() as conn:
            current = self._split(conn)
            unknown = set(split) - set(current)
            if unknown or sum(split.values()) != 100:
                raise RegistryError(
                    f"traffic split {split} must sum to 100 over deployed versions {sorted(current)}"
                )
            self._write_split(conn, {**dict.fromkeys(current, 0), **split}, {})
            self.registry.audit(
                conn, "traffic", None, {"endpoint": self.name, "traffic": split, "reason": reason}
            )

    def undeploy(self, version: int, reason: str = "") -> None:
        with self.registry.transaction() as conn:
            current = self._split(conn)
            if current.get(version, 0) > 0 and len(current) > 1:
                raise RegistryError(f"version {version} still serves {current[version]}% of traffic")
            conn.execute(
                "DELETE FROM deployments WHERE endpoint=? AND model=? AND version=?",
                (self.name, self.registry.model, version),
            )
            self.registry.audit(conn, "undeploy", version, {"endpoint": self.name, "reason": reason})

    def _split(self, conn: sqlite3.Connection) -> dict[int, int]:
        rows = conn.execute(
            "SELECT version, traffic FROM deployments WHERE endpoint=? AND model=?",
            (self.name, self.registry.model),
        ).fetchall()
        return {r["version"]: r["traffic"] for r in rows}

    def _write_split(self, conn: sqlite3.Connection, split: dict[int, int], new: dict[int, str]) -> None:
        for version, traffic in split.items():
            if version in new:
                conn.execute(
                    "INSERT INTO deployments (endpoint, model, version, traffic, deployed_at) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT(endpoint, model, version) DO UPDATE SET traffic=excluded.traffic, deployed_at=excluded.deployed_at",
                    (self.name, self.registry.model, version, traffic, new[version]),
                )
            else:
                conn.execute(
                    "UPDATE deployments SET traffic=? WHERE endpoint=? AND model=? AND version=?",
                    (traffic, self.name, self.registry.model, version),
                )

    def last_deployed_at(self) -> datetime | None:
        deps = self.deployments()
        return max((datetime.fromisoformat(d.deployed_at) for d in deps), default=None)

    @contextmanager
    def served(self) -> Iterator[LocalEndpoint]:
        """Serve over HTTP: each version that gets a request is started in its own serving
        process (once), and all of them are stopped on the way out."""
        if self._servers is not None:
            yield self
            return
        self._servers = {}
        try:
            yield self
        finally:
            servers, self._servers = self._servers, None
            for server in servers.values():
                server.close()

    def capture_counters(self, version: int) -> dict[str, int]:
        """The capture counters of the process serving `version` (inside `served()`)."""
        server = (self._servers or {}).get(version)
        if server is None:
            return {}
        capture = server.health().get("capture") or {}
        return {k: v for k, v in capture.items() if isinstance(v, int) and not isinstance(v, bool)}

    def server_url(self, version: int) -> str | None:
        """The URL of the process serving `version`, inside `served()` once it got a request."""
        server = (self._servers or {}).get(version)
        return server.url if server else None

    def _server(self, version: int) -> ServingProcess:
        assert self._servers is not None
        if version not in self._servers:
            from stt_flywheel.deployment.serving import ServingProcess
            from stt_flywheel.deployment.serving.contract import MODEL_DIGEST_ENV

            env = self.capture(version) if self.capture else {"FLYWHEEL_MODEL_VERSION": str(version)}
            if (digest := self.registry.digest(version)) is not None:
                env[MODEL_DIGEST_ENV] = digest  # the process checks its model before it loads it
            self._servers[version] = ServingProcess(self.registry.get(version).uri, env=env)
        return self._servers[version]

    def _transcribe(self, version: int, audios: Sequence[np.ndarray]) -> list[str]:
        if self._servers is None:
            return self._model(version).transcribe(audios)
        return self._server(version).transcribe(audios)

    def _model(self, version: int) -> SpeechModel:
        if version not in self._models:
            from stt_flywheel.models import load_model  # torch: only where a model transcribes here

            self._models[version] = load_model(self.registry.get(version).uri, device="cpu")
        return self._models[version]

    def predict(
        self, audios: Sequence[np.ndarray], rng: random.Random | None = None
    ) -> tuple[int, list[str]]:
        """Transcribe with a version chosen by the traffic split. Returns (version, transcripts)."""
        version = self._choose(rng)
        return version, self._transcribe(version, audios)

    def request(
        self,
        audios: Sequence[np.ndarray],
        metadata: Sequence[dict[str, str]] | None = None,
        rng: random.Random | None = None,
        users: Sequence[str | None] | None = None,
    ) -> list[dict[str, Any]]:
        """Serve each utterance (with its metadata and user) by a version the traffic split picks for it,
        over HTTP inside `served()`, so that every answer is captured. Returns the predictions in
        order: transcript, prediction_id, model_version."""
        if self._servers is None:
            raise RegistryError("requests go to serving processes: call request() inside served()")
        rng = rng or random.Random()
        chosen = [self._choose(rng) for _ in audios]
        out: list[dict[str, Any] | None] = [None] * len(audios)
        for version in sorted(set(chosen)):
            idx = [i for i, v in enumerate(chosen) if v == version]
            preds = self._server(version).predict(
                [audios[i] for i in idx],
                [metadata[i] for i in idx] if metadata else None,
                [users[i] for i in idx] if users else None,
            )
            for i, p in zip(idx, preds, strict=True):
                out[i] = {**p, "model_version": str(version)}  # the split chose it; answers may not say
        return [p for p in out if p is not None]

    def _choose(self, rng: random.Random | None) -> int:
        split = {v: t for v, t in self.traffic().items() if t > 0}
        if not split:
            raise RegistryError(f"endpoint {self.name} has no deployed model")
        versions = list(split)
        return (rng or random.Random()).choices(versions, weights=[split[v] for v in versions])[0]
