"""The Vertex AI Metadata API as Vertex AI Experiments uses it (the `default` metadata store, its
contexts, artifacts and executions, and the links between them), for the Vertex stand-in.

Resources are kept as the client sent them, with the fields the service fills in (name, times,
etag); an update merges what the client sent; a parent's `:addContextChildren` and
`:addContextArtifactsAndExecutions` record the links that the Experiments page draws from.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

KINDS = {"contexts": "contextId", "artifacts": "artifactId", "executions": "executionId"}


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class MetadataApiError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class MetadataFake:
    """Kept per kind: `self.metadata[kind][id]`; links in `children`, `attributions`, `events`."""

    def __init__(self, parent: str) -> None:
        self.store = f"{parent}/metadataStores/default"
        self.metadata: dict[str, dict[str, dict[str, Any]]] = {k: {} for k in KINDS}
        self.children: dict[str, list[str]] = {}  # context name -> child context names
        self.attributions: dict[str, list[str]] = {}  # context name -> artifact and execution names
        self.events: dict[str, list[dict[str, Any]]] = {}  # execution name -> its input/output events
        self._ids = itertools.count(1)

    def route(self, method: str, rest: str, query: dict[str, list[str]], body: dict[str, Any]) -> Any:
        """`rest` is the path after `metadataStores/`."""
        store, _, tail = rest.partition("/")
        if store.split(":")[0] != "default":
            raise MetadataApiError(404, f"metadata store {store} not found")
        if not tail:
            return {"name": self.store, "createTime": _now()}
        kind, _, item = tail.partition("/")
        if kind not in KINDS:
            raise MetadataApiError(404, f"no fake route for {method} {tail}")
        if not item:
            if method == "POST":
                return self._create(kind, query, body)
            return {kind: list(self.metadata[kind].values())}
        rid, _, verb = item.partition(":")
        found = self.metadata[kind].get(rid)
        if found is None:
            raise MetadataApiError(404, f"{kind[:-1]} {rid} not found")
        if verb:
            return self._link(kind, found, verb, body)
        if method == "PATCH":
            return self._update(found, body)
        if method == "DELETE":
            del self.metadata[kind][rid]
            return {"name": f"{self.store}/operations/{next(self._ids)}", "done": True}
        return found

    def _create(self, kind: str, query: dict[str, list[str]], body: dict[str, Any]) -> dict[str, Any]:
        rid = (query.get(KINDS[kind]) or [f"{kind[:-1]}-{next(self._ids)}"])[0]
        if rid in self.metadata[kind]:
            raise MetadataApiError(409, f"{kind[:-1]} {rid} already exists")
        if not body.get("schemaTitle"):
            raise MetadataApiError(400, f"a {kind[:-1]} needs a schemaTitle")
        now = _now()
        made = {
            **body,
            "name": f"{self.store}/{kind}/{rid}",
            "createTime": now,
            "updateTime": now,
            "etag": "1",
        }
        self.metadata[kind][rid] = made
        return made

    @staticmethod
    def _update(found: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        for key, value in body.items():
            if key == "metadata":
                found["metadata"] = {**found.get("metadata", {}), **value}
            elif key not in ("name", "createTime", "etag"):
                found[key] = value
        found["updateTime"], found["etag"] = _now(), str(int(found.get("etag", "1")) + 1)
        return found

    def _link(self, kind: str, found: dict[str, Any], verb: str, body: dict[str, Any]) -> dict[str, Any]:
        name = found["name"]
        if kind == "contexts" and verb == "addContextChildren":
            self.children.setdefault(name, []).extend(body.get("childContexts", []))
            return {}
        if kind == "contexts" and verb == "addContextArtifactsAndExecutions":
            self.attributions.setdefault(name, []).extend(
                body.get("artifacts", []) + body.get("executions", [])
            )
            return {}
        if kind == "executions" and verb == "addExecutionEvents":
            self.events.setdefault(name, []).extend(body.get("events", []))
            return {}
        if verb == "queryContextLineageSubgraph" or verb == "queryExecutionInputsAndOutputs":
            linked = self.attributions.get(name, [])
            return {
                "artifacts": [a for a in self._all("artifacts") if a["name"] in linked],
                "executions": [],
                "events": [],
            }
        raise MetadataApiError(404, f"no fake route for {kind}:{verb}")

    def _all(self, kind: str) -> list[dict[str, Any]]:
        return list(self.metadata[kind].values())

    def run(self, experiment: str, run: str) -> dict[str, Any] | None:
        """The experiment run's context (Experiments names it `<experiment>-<run>`)."""
        return self.metadata["contexts"].get(f"{experiment}-{run}")
