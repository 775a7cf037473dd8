"""Versions of one Vertex AI model: upload with lineage, aliases, the audit log, prune."""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from stt_flywheel.config import FlywheelConfig
from stt_flywheel.deployment.exclusive import LeaseLock
from stt_flywheel.deployment.registry import AuditEntry, ModelVersion, RegistryError, trained_model
from stt_flywheel.deployment.serving.contract import MODEL_DIGEST_ENV, REGISTRY_RECORD
from stt_flywheel.deployment.vertex.client import init_vertex, iso, label_value, retrying
from stt_flywheel.storage.objectstore import ObjectStore, is_remote, join_uri, open_store, read_uri
from stt_flywheel.storage.trees import put_tree, remove_tree

__all__ = ["VertexRegistry"]

GENERAL_METRICS_SCHEMA = "gs://google-cloud-aiplatform/schema/modelevaluation/general_metrics_1.0.0.yaml"


class VertexRegistry:
    """Versions of one Vertex AI model (`deploy.model_name` is its model id)."""

    def __init__(self, config: FlywheelConfig, capture: Callable[[int | str], dict[str, str]]) -> None:
        """`capture` gives a version's serving environment (where it captures its traffic), which
        is part of what is uploaded with it."""
        self.settings = config.vertex
        self.model = config.deploy.model_name
        self.models_root = config.paths.models
        if not is_remote(self.models_root):
            raise RegistryError(f"the Vertex registry needs paths.models on gs://, not {self.models_root}")
        self.audit_store: ObjectStore = open_store(config.paths.state)
        self.capture = capture
        init_vertex(self.settings)
        self._call = retrying(self.settings)
        self._changes = LeaseLock(
            self.audit_store, f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        )

    def exclusive(self) -> contextlib.AbstractContextManager[None]:
        """Held by every change to what serves (strategies, the monitor): one at a time."""
        return self._changes.held()

    def verify(self, version: int) -> list[str]:
        """What is missing from a version's artifact URI against the manifest recorded at upload
        (every file is listed, none downloaded). Vertex AI serves its own copy, made at upload;
        that copy is checked by the serving container itself against `digest` before it loads
        it. Versions uploaded before manifests were kept have none, and pass."""
        v = self.get(version)
        expected = [row[0] for row in self._record(v.uri).get("files", [])]
        if not expected:
            return []
        present = set(open_store(v.uri).list())
        return [f"{path} is missing" for path in expected if path not in present]

    def digest(self, version: int) -> str | None:
        """The digest of the model files uploaded as `version`, from the record beside them."""
        digest = self._record(self.get(version).uri).get("model_digest")
        return str(digest) if digest else None

    @staticmethod
    def _record(artifact_uri: str) -> dict[str, Any]:
        with contextlib.suppress(FileNotFoundError):
            return dict(orjson.loads(read_uri(join_uri(artifact_uri, REGISTRY_RECORD))))
        return {}

    # -- names and raw reads -----------------------------------------------------------------
    @property
    def location(self) -> str:
        """Where the versions live, for people: the Vertex model's resource name."""
        return self.resource_name

    @property
    def resource_name(self) -> str:
        s = self.settings
        return f"projects/{s.project}/locations/{s.location}/models/{self.model}"

    def _client(self) -> Any:
        from google.cloud import aiplatform

        return aiplatform.initializer.global_config.create_client(
            client_class=aiplatform.utils.ModelClientWithOverride, location_override=self.settings.location
        )

    def _raw_versions(self) -> list[Any]:
        from google.api_core import exceptions

        @self._call
        def list_model_versions() -> list[Any]:
            try:
                return list(self._client().list_model_versions(name=self.resource_name))
            except exceptions.NotFound:
                return []

        return list_model_versions()

    def _to_version(self, raw: Any) -> ModelVersion:
        record = self._record(raw.artifact_uri)
        labels = dict(raw.labels)
        return ModelVersion(
            model=self.model,
            version=int(raw.version_id),
            uri=raw.artifact_uri,
            created_at=iso(raw.version_create_time),
            dataset_version=record.get("dataset_version") or labels.get("dataset_version"),
            data_watermark=record.get("data_watermark"),
            source_run=record.get("source_run"),
            metrics=record.get("metrics", {}),
            lineage=record.get("lineage", {}),
            evaluation=record.get("evaluation", {}),
            aliases=tuple(sorted(raw.version_aliases)),
        )

    # -- reads -------------------------------------------------------------------------------
    def versions(self) -> list[ModelVersion]:
        return sorted((self._to_version(r) for r in self._raw_versions()), key=lambda v: v.version)

    def aliases(self) -> dict[str, int]:
        return {a: int(r.version_id) for r in self._raw_versions() for a in r.version_aliases}

    def get(self, version: int) -> ModelVersion:
        for raw in self._raw_versions():
            if int(raw.version_id) == version:
                return self._to_version(raw)
        raise RegistryError(f"{self.model} has no version {version}")

    def resolve(self, alias: str) -> ModelVersion | None:
        version = self.aliases().get(alias)
        return self.get(version) if version is not None else None

    def find_by_run(self, source_run: str) -> ModelVersion | None:
        wanted = label_value(source_run)
        for raw in self._raw_versions():
            if dict(raw.labels).get("source_run") == wanted:
                return self._to_version(raw)
        return None

    def audit_log(self) -> list[AuditEntry]:
        entries = []
        for key in self.audit_store.list(f"audit/{self.model}/"):
            found = self.audit_store.read(key)
            if found is not None:
                entries.append(AuditEntry.model_validate_json(found.data))
        return sorted(entries, key=lambda e: e.at)

    # -- writes ------------------------------------------------------------------------------
    def record(self, action: str, version: int | None, detail: dict[str, Any]) -> None:
        now = datetime.now(UTC).isoformat()
        entry = {"at": now, "model": self.model, "action": action, "version": version, "detail": detail}
        key = f"audit/{self.model}/{now.replace(':', '')}-{uuid.uuid4().hex[:8]}.json"
        self.audit_store.create(key, orjson.dumps(entry, default=str, option=orjson.OPT_NON_STR_KEYS))

    def register(
        self,
        model_dir: str | Path,
        *,
        dataset_version: str | None = None,
        data_watermark: str | None = None,
        source_run: str | None = None,
        metrics: dict[str, Any] | None = None,
        lineage: dict[str, Any] | None = None,
        evaluation: dict[str, Any] | None = None,
    ) -> ModelVersion:
        """Upload `model_dir` as the next version of the model (not the default). A retried run
        re-uses its version."""
        from google.cloud import aiplatform

        if source_run is not None and (existing := self.find_by_run(source_run)) is not None:
            return existing
        if not (Path(model_dir) / "config.json").exists():
            raise RegistryError(f"not a saved model directory: {model_dir}")
        if not self.settings.serving_image:
            raise RegistryError("vertex.serving_image is not set (the serving container for this model)")
        files, digest = trained_model(model_dir, lineage)
        artifact_uri = join_uri(self.models_root, self.model, source_run or f"manual-{uuid.uuid4().hex[:12]}")
        put_tree(model_dir, artifact_uri, commit_file="config.json")
        record = {
            "model_digest": digest,
            "files": [list(f) for f in files if f[0] != REGISTRY_RECORD],
            "dataset_version": dataset_version,
            "data_watermark": data_watermark,
            "source_run": source_run,
            "metrics": metrics or {},
            "lineage": lineage or {},
            "evaluation": evaluation or {},
        }
        open_store(artifact_uri).write(
            REGISTRY_RECORD, orjson.dumps(record, default=str, option=orjson.OPT_SERIALIZE_NUMPY)
        )
        labels = {"source_run": label_value(source_run or "manual")}
        if dataset_version:
            labels["dataset_version"] = label_value(dataset_version)
        for key in ("wer", "cer", "delta_wer"):
            if isinstance((metrics or {}).get(key), int | float):
                labels[key] = label_value(float(metrics[key]))  # type: ignore[index]
        existing_versions = [int(r.version_id) for r in self._raw_versions()]
        first = not existing_versions
        # The serving environment is part of the uploaded version, so it names the number Vertex
        # gives the next version (numbers count up; one run registers at a time, under the run lease).
        next_version = max(existing_versions, default=0) + 1
        # The container checks the copy Vertex AI gives it against the digest before it loads it.
        serving_env = {**self.capture(next_version), MODEL_DIGEST_ENV: digest}

        @self._call
        def upload() -> Any:
            return aiplatform.Model.upload(
                display_name=self.model,
                model_id=self.model if first else None,
                parent_model=None if first else self.resource_name,
                is_default_version=first,
                artifact_uri=artifact_uri,
                serving_container_image_uri=self.settings.serving_image,
                serving_container_predict_route="/predict",
                serving_container_health_route="/health",
                serving_container_ports=[8080],
                serving_container_environment_variables=serving_env,
                labels=labels,
                sync=True,
            )

        uploaded = upload()
        version = int(uploaded.version_id)
        if version != next_version:
            self.record(
                "capture_label_mismatch",
                version,
                {"captured_as": next_version, "reason": "another version was uploaded at the same time"},
            )
        if metrics:
            self._import_evaluation(version, metrics, source_run)
        self.record("register", version, {"dataset_version": dataset_version, "run": source_run})
        return self.get(version)

    def _import_evaluation(self, version: int, metrics: dict[str, Any], source_run: str | None) -> None:
        from google.cloud.aiplatform_v1.types import ModelEvaluation
        from google.protobuf import json_format, struct_pb2

        numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and v == v}
        value = json_format.ParseDict(numbers, struct_pb2.Value())
        evaluation = ModelEvaluation(
            display_name=f"flywheel validation ({source_run or 'manual'})",
            metrics_schema_uri=GENERAL_METRICS_SCHEMA,
            metrics=value,
        )

        @self._call
        def import_model_evaluation() -> Any:
            return self._client().import_model_evaluation(
                parent=f"{self.resource_name}@{version}", model_evaluation=evaluation
            )

        import_model_evaluation()

    def _merge(self, version: int, changes: list[str]) -> None:
        from google.cloud import aiplatform

        @self._call
        def merge_version_aliases() -> Any:
            registry = aiplatform.models.ModelRegistry(self.resource_name)
            added = [a for a in changes if not a.startswith("-")]
            removed = [a[1:] for a in changes if a.startswith("-")]
            if added:
                registry.add_version_aliases(added, str(version))
            if removed:
                registry.remove_version_aliases(removed, str(version))

        merge_version_aliases()

    def set_alias(self, alias: str, version: int) -> None:
        self.get(version)
        self._merge(version, [alias])
        self.record("set_alias", version, {"alias": alias})

    def remove_alias(self, alias: str) -> None:
        if alias == "default":
            raise RegistryError("the default alias can only be moved, not removed")
        version = self.aliases().get(alias)
        if version is not None:
            self._merge(version, [f"-{alias}"])
            self.record("remove_alias", version, {"alias": alias})

    def promote(self, version: int, reason: str = "") -> int | None:
        """Move `default` to `version` (and `candidate` off it); the old default becomes `previous`."""
        aliases = self.aliases()
        old = aliases.get("default")
        if old == version:
            return old
        self._merge(version, ["default"] + (["-candidate"] if aliases.get("candidate") == version else []))
        if old is not None:
            self._merge(old, ["previous"])
        self.record("promote", version, {"replaced": old, "reason": reason})
        return old

    def rollback(self, reason: str = "manual rollback") -> tuple[int, int]:
        aliases = self.aliases()
        if "previous" not in aliases or "default" not in aliases:
            raise RegistryError("nothing to roll back to: no version carries the alias 'previous'")
        bad, good = aliases["default"], aliases["previous"]
        self._merge(good, ["default", "-previous"])
        self.record("rollback", good, {"rolled_back": bad, "reason": reason})
        return bad, good

    def prune(self, keep: int) -> list[int]:
        """Delete the oldest versions beyond `keep`, never a default, aliased or deployed one."""
        from google.cloud import aiplatform

        raws = sorted(self._raw_versions(), key=lambda r: int(r.version_id), reverse=True)
        doomed = [r for r in raws[keep:] if not r.version_aliases and not r.deployed_models]
        for raw in doomed:

            @self._call
            def delete_version(v: str = raw.version_id) -> None:
                aiplatform.models.ModelRegistry(self.resource_name).delete_version(v)

            delete_version()
            if raw.artifact_uri.startswith(self.models_root.rstrip("/") + "/"):
                remove_tree(raw.artifact_uri)
            self.record("prune", int(raw.version_id), {})
        return [int(r.version_id) for r in doomed]
