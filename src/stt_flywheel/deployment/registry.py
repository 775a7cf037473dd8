"""The embedded model registry: a SQLite file plus a directory of immutable model copies.

Mirrors the parts of the Vertex AI Model Registry the flywheel uses: numbered versions of one
model, version aliases (`default`, `previous`) that live on exactly one version, an evaluation
stored with the version it judged, and an audit log. Writes take SQLite's write lock first
(`BEGIN IMMEDIATE`), so of two concurrent writers one wins and the other waits or fails cleanly.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict

from stt_flywheel.deployment.exclusive import FileLock
from stt_flywheel.deployment.serving.contract import REGISTRY_RECORD
from stt_flywheel.errors import StateError
from stt_flywheel.storage.files import file_manifest, file_sha256, tree_digest
from stt_flywheel.storage.objectstore import is_remote, join_uri, open_store
from stt_flywheel.storage.trees import put_tree, remove_tree

__all__ = ["AuditEntry", "LocalRegistry", "ModelVersion", "RegistryError", "trained_model"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    model TEXT NOT NULL, version INTEGER NOT NULL, uri TEXT NOT NULL, created_at TEXT NOT NULL,
    dataset_version TEXT, data_watermark TEXT, source_run TEXT,
    metrics TEXT NOT NULL DEFAULT '{}', lineage TEXT NOT NULL DEFAULT '{}', evaluation TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (model, version)
);
CREATE TABLE IF NOT EXISTS aliases (
    model TEXT NOT NULL, alias TEXT NOT NULL, version INTEGER NOT NULL,
    PRIMARY KEY (model, alias)
);
CREATE TABLE IF NOT EXISTS deployments (
    endpoint TEXT NOT NULL, model TEXT NOT NULL, version INTEGER NOT NULL, traffic INTEGER NOT NULL,
    deployed_at TEXT NOT NULL, PRIMARY KEY (endpoint, model, version)
);
CREATE TABLE IF NOT EXISTS files (
    model TEXT NOT NULL, version INTEGER NOT NULL, path TEXT NOT NULL, size INTEGER NOT NULL,
    sha256 TEXT NOT NULL, PRIMARY KEY (model, version, path)
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, model TEXT NOT NULL,
    action TEXT NOT NULL, version INTEGER, detail TEXT NOT NULL DEFAULT '{}'
);
"""


class RegistryError(StateError):
    pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class ModelVersion:
    model: str
    version: int
    uri: str
    created_at: str
    dataset_version: str | None
    data_watermark: str | None
    source_run: str | None
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    evaluation: dict[str, Any]
    aliases: tuple[str, ...] = ()

    @property
    def watermark(self) -> datetime | None:
        return datetime.fromisoformat(self.data_watermark) if self.data_watermark else None

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "aliases": list(self.aliases)}


class AuditEntry(BaseModel):
    """One change to what is registered or serves, and why: both backends keep the same entries."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: int | None = None  # the row's number in the embedded registry
    at: datetime
    model: str
    action: str  # register, promote, deploy, traffic, rollback, prune, monitor_canary, approve, …
    version: int | None
    detail: dict[str, Any]  # what the action records: its reason, what it overrode, a monitor look …


def _now() -> str:
    return datetime.now(UTC).isoformat()


class LocalRegistry:
    def __init__(
        self, db_path: str | Path, models_root: str | Path, model_name: str = "stt-flywheel"
    ) -> None:
        self.db_path = Path(db_path)
        self.models_root = str(models_root)  # a directory or a gs:// prefix
        self.model = model_name
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        with self.reader() as conn:
            conn.executescript(SCHEMA)
        self._changes = FileLock(self.db_path.with_name(self.db_path.name + ".changes.lock"))
        self._clear_partial_copies()

    def exclusive(self) -> AbstractContextManager[None]:
        """Held by every change to what serves (strategies, the monitor): one at a time."""
        return self._changes.held()

    @property
    def location(self) -> str:
        """Where the versions live, for people: the SQLite file."""
        return str(self.db_path)

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        except sqlite3.OperationalError as exc:  # a directory, a missing parent, no permission
            raise StateError(f"cannot open the registry database {self.db_path}: {exc}") from exc
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        return conn

    @contextmanager
    def reader(self) -> Iterator[sqlite3.Connection]:
        """A connection for reads, closed afterwards."""
        conn = self._connect()
        try:
            yield conn
        finally:
            conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction holding SQLite's write lock from the start (BEGIN IMMEDIATE)."""
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()

    # -- reads -------------------------------------------------------------------------------
    def _row_to_version(self, row: sqlite3.Row, aliases: tuple[str, ...]) -> ModelVersion:
        return ModelVersion(
            model=row["model"],
            version=row["version"],
            uri=row["uri"],
            created_at=row["created_at"],
            dataset_version=row["dataset_version"],
            data_watermark=row["data_watermark"],
            source_run=row["source_run"],
            metrics=orjson.loads(row["metrics"]),
            lineage=orjson.loads(row["lineage"]),
            evaluation=orjson.loads(row["evaluation"]),
            aliases=aliases,
        )

    def aliases(self) -> dict[str, int]:
        with self.reader() as conn:
            rows = conn.execute("SELECT alias, version FROM aliases WHERE model=?", (self.model,)).fetchall()
        return {r["alias"]: r["version"] for r in rows}

    def versions(self) -> list[ModelVersion]:
        by_version: dict[int, list[str]] = {}
        for alias, version in sorted(self.aliases().items()):
            by_version.setdefault(version, []).append(alias)
        with self.reader() as conn:
            rows = conn.execute(
                "SELECT * FROM versions WHERE model=? ORDER BY version", (self.model,)
            ).fetchall()
        return [self._row_to_version(r, tuple(by_version.get(r["version"], []))) for r in rows]

    def get(self, version: int) -> ModelVersion:
        for v in self.versions():
            if v.version == version:
                return v
        raise RegistryError(f"{self.model} has no version {version}")

    def resolve(self, alias: str) -> ModelVersion | None:
        version = self.aliases().get(alias)
        return self.get(version) if version is not None else None

    def find_by_run(self, source_run: str) -> ModelVersion | None:
        return next((v for v in self.versions() if v.source_run == source_run), None)

    def audit_log(self) -> list[AuditEntry]:
        with self.reader() as conn:
            rows = conn.execute("SELECT * FROM audit WHERE model=? ORDER BY id", (self.model,)).fetchall()
        return [AuditEntry.model_validate({**dict(r), "detail": orjson.loads(r["detail"])}) for r in rows]

    # -- writes ------------------------------------------------------------------------------
    def audit(
        self, conn: sqlite3.Connection, action: str, version: int | None, detail: dict[str, Any]
    ) -> None:
        """Append to the audit log inside the caller's transaction."""
        conn.execute(
            "INSERT INTO audit (at, model, action, version, detail) VALUES (?, ?, ?, ?, ?)",
            (
                _now(),
                self.model,
                action,
                version,
                orjson.dumps(detail, default=str, option=orjson.OPT_NON_STR_KEYS).decode(),
            ),
        )

    def record(self, action: str, version: int | None, detail: dict[str, Any]) -> None:
        """Append one audit entry in its own transaction."""
        with self.transaction() as conn:
            self.audit(conn, action, version, detail)

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
        """Copy `model_dir` into the registry (`<models_root>/<model>/v<N>`) as the next version.

        A retried run re-uses its version.
        """
        if source_run is not None and (existing := self.find_by_run(source_run)) is not None:
            return existing
        if not (Path(model_dir) / "config.json").exists():
            raise RegistryError(f"not a saved model directory: {model_dir}")
        files, _ = trained_model(model_dir, lineage)
        with self.transaction() as conn:
            if source_run is not None:  # again under the write lock: two registrations of one run race here
                same = conn.execute(
                    "SELECT version FROM versions WHERE model=? AND source_run=?", (self.model, source_run)
                ).fetchone()
                if same is not None:
                    return self.get(int(same["version"]))  # commits nothing: nothing was written
            row = conn.execute(
                "SELECT MAX(version) AS v FROM versions WHERE model=?", (self.model,)
            ).fetchone()
            version = (row["v"] or 0) + 1
            target = put_tree(
                model_dir, join_uri(self.models_root, self.model, f"v{version}"), commit_file="config.json"
            )
            conn.executemany(
                "INSERT INTO files (model, version, path, size, sha256) VALUES (?, ?, ?, ?, ?)",
                [(self.model, version, *entry) for entry in files],
            )
            conn.execute(
                "INSERT INTO versions (model, version, uri, created_at, dataset_version, data_watermark, source_run,"
                " metrics, lineage, evaluation) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    self.model,
                    version,
                    str(target),
                    _now(),
                    dataset_version,
                    data_watermark,
                    source_run,
                    orjson.dumps(metrics or {}, option=orjson.OPT_SERIALIZE_NUMPY).decode(),
                    orjson.dumps(lineage or {}, default=str).decode(),
                    orjson.dumps(evaluation or {}, default=str, option=orjson.OPT_SERIALIZE_NUMPY).decode(),
                ),
            )
            self.audit(conn, "register", version, {"dataset_version": dataset_version, "run": source_run})
        return self.get(version)

    def set_alias(self, alias: str, version: int, conn: sqlite3.Connection | None = None) -> None:
        if conn is None:
            with self.transaction() as c:
                return self.set_alias(alias, version, c)
        if (
            conn.execute(
                "SELECT 1 FROM versions WHERE model=? AND version=?", (self.model, version)
            ).fetchone()
            is None
        ):
            raise RegistryError(f"{self.model} has no version {version}")
        conn.execute(
            "INSERT INTO aliases (model, alias, version) VALUES (?, ?, ?) "
            "ON CONFLICT(model, alias) DO UPDATE SET version=excluded.version",
            (self.model, alias, version),
        )
        self.audit(conn, "set_alias", version, {"alias": alias})
        return None

    def remove_alias(self, alias: str) -> None:
        if alias == "default":
            raise RegistryError("the default alias can only be moved, not removed")
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT version FROM aliases WHERE model=? AND alias=?", (self.model, alias)
            ).fetchone()
            conn.execute("DELETE FROM aliases WHERE model=? AND alias=?", (self.model, alias))
            if row is not None:
                self.audit(conn, "remove_alias", row["version"], {"alias": alias})

    def promote(self, version: int, reason: str = "") -> int | None:
        """Make `version` the default; the old default becomes `previous`. Returns the old default."""
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT version FROM aliases WHERE model=? AND alias='default'", (self.model,)
            ).fetchone()
            old = row["version"] if row else None
            if old == version:
                return old
            if old is not None:
                self.set_alias("previous", old, conn)
            self.set_alias("default", version, conn)
            conn.execute(
                "DELETE FROM aliases WHERE model=? AND alias='candidate' AND version=?", (self.model, version)
            )
            self.audit(conn, "promote", version, {"replaced": old, "reason": reason})
        return old

    def rollback(self, reason: str = "manual rollback") -> tuple[int, int]:
        """Point `default` back at `previous`. Returns (rolled_back_version, restored_version)."""
        with self.transaction() as conn:
            aliases = {
                r["alias"]: r["version"]
                for r in conn.execute("SELECT alias, version FROM aliases WHERE model=?", (self.model,))
            }
            if "previous" not in aliases or "default" not in aliases:
                raise RegistryError("nothing to roll back to: no version carries the alias 'previous'")
            bad, good = aliases["default"], aliases["previous"]
            self.set_alias("default", good, conn)
            conn.execute("DELETE FROM aliases WHERE model=? AND alias='previous'", (self.model,))
            self.audit(conn, "rollback", good, {"rolled_back": bad, "reason": reason})
        return bad, good

    def prune(self, keep: int) -> list[int]:
        """Delete the oldest versions beyond `keep`; never one that is aliased or deployed. Holds
        the lock over what serves, so a version is never deployed while it is being deleted."""
        with self.exclusive():
            return self._prune(keep)

    def _prune(self, keep: int) -> list[int]:
        with self.transaction() as conn:
            protected = {
                r[0] for r in conn.execute("SELECT version FROM aliases WHERE model=?", (self.model,))
            } | {r[0] for r in conn.execute("SELECT version FROM deployments WHERE model=?", (self.model,))}
            all_versions = [
                r[0]
                for r in conn.execute(
                    "SELECT version FROM versions WHERE model=? ORDER BY version DESC", (self.model,)
                )
            ]
            doomed = [v for v in all_versions[keep:] if v not in protected]
            uris = []
            for v in doomed:
                uris.append(
                    conn.execute(
                        "SELECT uri FROM versions WHERE model=? AND version=?", (self.model, v)
                    ).fetchone()["uri"]
                )
                for table in ("versions", "deployments", "files"):
                    conn.execute(f"DELETE FROM {table} WHERE model=? AND version=?", (self.model, v))
                self.audit(conn, "prune", v, {})
        # Files go only after the commit: a kill -9 before it leaves every version whole, one after
        # it leaves files no row names (removed by the next prune of that version number's tree).
        for uri in uris:
            remove_tree(uri)
        return doomed

    def digest(self, version: int) -> str | None:
        """The digest of the model files registered as `version` (what its serving process must
        find before it loads them); None for a version registered before manifests were kept."""
        self.get(version)
        with self.reader() as conn:
            rows = conn.execute(
                "SELECT path, size, sha256 FROM files WHERE model=? AND version=? ORDER BY rowid",
                (self.model, version),
            ).fetchall()
        manifest = [(r["path"], r["size"], r["sha256"]) for r in rows]  # as registered: path order
        return tree_digest("", manifest, skip=(REGISTRY_RECORD,)) if manifest else None

    def verify(self, version: int) -> list[str]:
        """What is wrong with a version's files against the manifest taken when it was registered
        (missing, or changed in size or content); empty when they are whole. Versions registered
        before manifests were kept have none, and pass."""
        v = self.get(version)
        with self.reader() as conn:
            expected = conn.execute(
                "SELECT path, size, sha256 FROM files WHERE model=? AND version=?", (self.model, version)
            ).fetchall()
        if not expected:
            return []
        if is_remote(v.uri):  # on gs://, that every file is there (hashing would download the model)
            present = set(open_store(v.uri).list())
            return [f"{row['path']} is missing" for row in expected if row["path"] not in present]
        problems = []
        root = Path(v.uri)
        for row in expected:
            f = root / row["path"]
            if not f.is_file():
                problems.append(f"{row['path']} is missing")
            elif f.stat().st_size != row["size"] or file_sha256(f) != row["sha256"]:
                problems.append(f"{row['path']} changed")
        return problems

    def _clear_partial_copies(self) -> None:
        """Remove what a `register` killed mid-copy left (`.v<N>.<pid>.tmp` of a dead process)."""
        if is_remote(self.models_root):
            return
        for tmp in Path(self.models_root, self.model).glob(".v*.*.tmp"):
            pid = tmp.name.rsplit(".", 2)[-2]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(tmp, ignore_errors=True)


def trained_model(
    model_dir: str | Path, lineage: dict[str, Any] | None
) -> tuple[list[tuple[str, int, str]], str]:
    """The manifest and digest (`serving.contract.model_digest`) of `model_dir`, which must be
    the directory training recorded in `lineage` where it recorded one: both registries' check."""
    files = file_manifest(model_dir)
    digest = tree_digest(model_dir, files, skip=(REGISTRY_RECORD,))
    if (expected := (lineage or {}).get("model_digest")) and digest != expected:
        raise RegistryError(
            f"{model_dir} is not the model that was trained and validated (its content changed)"
        )
    return files, digest
