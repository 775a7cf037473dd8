"""Where state lives: the store locations, derived from `root` where unset."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationInfo, model_validator

from stt_flywheel.config.base import BASE_LOCATIONS, ConfigPath, Strict
from stt_flywheel.storage.objectstore import is_remote, join_uri

__all__ = ["PathSettings", "StoreSettings"]

_DERIVED = {
    "error_store": "error-store",
    "datasets": "datasets",
    "models": "models",
    "reports": "runs",
    "state": "state",
    "pipeline_root": "pipeline-root",
}


class PathSettings(Strict):
    """Where state lives. `root` and `registry_db` are local; every other location may be a local
    directory or a `gs://bucket/prefix` (written through google-cloud-storage with generation
    preconditions). A local `pipeline_root` is for the local runner, a `gs://` one for Vertex."""

    model_config = ConfigDict(frozen=True)

    root: ConfigPath = Field(Path(".flywheel"), description="Root directory for all embedded state.")
    # Unset in the file, these derive from `root` when the settings are validated, so after
    # validation each is a plain location: never None.
    error_store: str = Field(None, description="Error store root; default ROOT/error-store.")  # type: ignore[assignment]
    datasets: str = Field(None, description="Versioned datasets; default ROOT/datasets.")  # type: ignore[assignment]
    models: str = Field(None, description="Registered model files; default ROOT/models.")  # type: ignore[assignment]
    reports: str = Field(None, description="Stage reports and run ledgers; default ROOT/runs.")  # type: ignore[assignment]
    state: str = Field(None, description="Shared run state (the run lease); default ROOT/state.")  # type: ignore[assignment]
    registry_db: ConfigPath = Field(None, description="SQLite model registry; default ROOT/registry.sqlite.")  # type: ignore[assignment]
    pipeline_root: str = Field(None, description="KFP pipeline root; default ROOT/pipeline-root.")  # type: ignore[assignment]

    @model_validator(mode="before")
    @classmethod
    def _derive_and_resolve(cls, data: Any, info: ValidationInfo) -> Any:
        """Unset locations from `root` (as written); relative ones against the config's location."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        root = Path(data.get("root") or ".flywheel")
        base = (info.context or {}).get(BASE_LOCATIONS)
        for name, sub in _DERIVED.items():
            value = data.get(name)
            value = str(root / sub) if value is None else str(value)
            if base is not None and not value.startswith("gs://") and not Path(value).is_absolute():
                value = join_uri(base, value) if is_remote(base) else str((Path(base) / value).resolve())
            data[name] = value
        if data.get("registry_db") is None:
            data["registry_db"] = root / "registry.sqlite"
        return data


class StoreSettings(Strict):
    """How the error store's whole-store reads are answered (counts, the errors to learn from,
    exports)."""

    query_engine: Literal["duckdb", "arrow"] = Field(
        "duckdb",
        description="`duckdb`: SQL over the store's Parquet files, reading only the columns and "
        "partitions a question needs, within `memory_limit`; `arrow`: the tables joined in Python "
        "(the reference the tests hold DuckDB's answers to).",
    )
    memory_limit: str = Field(
        "2GB",
        pattern=r"^[0-9]+(\.[0-9]+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$",
        description="What DuckDB may hold in memory before it spills to its temporary directory "
        "(`.tmp` under the working directory). The dataset's candidate list at 10M predictions "
        "needs more than 1GB.",
    )
