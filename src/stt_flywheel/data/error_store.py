"""The error store: every production transcript, with the user's correction when there is one.

Layout under the store root (the same under a `gs://` root)::

    records/ingest_date=2026-11-25/part-<ingested_at>-<uuid>.jsonl   accepted records
    quarantine/part-<ingested_at>-<uuid>.jsonl                       rejected lines + reason code

Each accepted record gets `ingested_at` (UTC, microseconds) from the batch that wrote it; a model's
*data watermark* is the largest `ingested_at` it was trained on, so "new evidence" is exactly the
records ingested after the production model's watermark. Ingestion balances: lines read =
accepted + duplicates + quarantined.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from stt_flywheel.errors import InputNotFound
from stt_flywheel.scoring.text import normalize
from stt_flywheel.storage.objectstore import join_uri, open_store

__all__ = ["ErrorStore", "IngestResult", "QuarantineEntry", "TranscriptRecord"]


class TranscriptRecord(BaseModel):
    """One production transcription, optionally corrected or flagged by a user."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    audio_uri: str = Field(min_length=1)
    hypothesis: str
    corrected_text: str | None = None
    flagged: bool = False
    model_version: str | None = None
    timestamp: datetime
    metadata: dict[str, str] = Field(default_factory=dict)
    ingested_at: datetime | None = None

    @field_validator("timestamp", "ingested_at")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("timestamp needs a timezone (use UTC, e.g. 2026-01-01T00:00:00Z)")
        return v.astimezone(UTC) if v is not None else None

    @property
    def is_error(self) -> bool:
        if self.flagged:
            return True
        return self.corrected_text is not None and normalize(self.corrected_text) != normalize(
            self.hypothesis
        )

    @property
    def is_corrected(self) -> bool:
        return self.is_error and self.corrected_text is not None and bool(normalize(self.corrected_text))


@dataclass(frozen=True)
class QuarantineEntry:
    line: int
    reason: str
    detail: str
    raw: str


@dataclass
class IngestResult:
    read: int = 0
    accepted: int = 0
    duplicates: int = 0
    quarantined: list[QuarantineEntry] = field(default_factory=list)
    partition: str | None = None

    @property
    def balanced(self) -> bool:
        return self.read == self.accepted + self.duplicates + len(self.quarantined)

    def as_dict(self) -> dict[str, Any]:
        reasons: dict[str, int] = {}
        for q in self.quarantined:
            reasons[q.reason] = reasons.get(q.reason, 0) + 1
        return {
            "read": self.read,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "quarantined": len(self.quarantined),
            "quarantine_reasons": reasons,
            "partition": self.partition,
        }


def _now() -> datetime:
    return datetime.now(UTC)


class ErrorStore:
    """The store under a root that is a local directory or a `gs://` prefix (see `objectstore`).

    Partitions are immutable objects created only-if-absent, so a retried ingest never overwrites
    another's batch.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = str(root)
        self.store = open_store(root)

    def _partitions(self) -> list[str]:
        return [
            key
            for key in self.store.list("records/")
            if key.startswith("records/ingest_date=") and key.rsplit("/", 1)[-1].startswith("part-")
        ]

    def scan(self, after: datetime | None = None, upto: datetime | None = None) -> Iterator[TranscriptRecord]:
        """Accepted records with `after < ingested_at <= upto`, oldest partition first."""
        for key in self._partitions():
            day = key.split("/")[1].removeprefix("ingest_date=")
            if after is not None and day < after.date().isoformat():
                continue
            found = self.store.read(key)
            if found is None:  # removed between listing and reading
                continue
            for line in found.data.splitlines():
                rec = TranscriptRecord.model_validate(orjson.loads(line))
                assert rec.ingested_at is not None
                if after is not None and rec.ingested_at <= after:
                    continue
                if upto is not None and rec.ingested_at > upto:
                    continue
                yield rec

    def known_ids(self) -> set[str]:
        return {rec.id for rec in self.scan()}

    def ingest(self, rows: Iterable[Any], now: datetime | None = None) -> IngestResult:
        """Validate and append rows (dicts or raw JSON lines); bad rows are quarantined with a reason."""
        ingested_at = now or _now()
        result = IngestResult()
        seen = self.known_ids()
        accepted: list[bytes] = []
        for lineno, row in enumerate(rows, 1):
            result.read += 1
            raw = row if isinstance(row, str | bytes) else orjson.dumps(row, default=str).decode()
            raw_text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
            try:
                data = orjson.loads(raw) if isinstance(row, str | bytes) else row
            except orjson.JSONDecodeError as exc:
                result.quarantined.append(QuarantineEntry(lineno, "invalid_json", str(exc), raw_text))
                continue
            if not isinstance(data, dict):
                result.quarantined.append(
                    QuarantineEntry(lineno, "not_an_object", type(data).__name__, raw_text)
                )
                continue
            try:
                rec = TranscriptRecord.model_validate({**data, "ingested_at": ingested_at})
            except ValidationError as exc:
                detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                result.quarantined.append(QuarantineEntry(lineno, "invalid_record", detail, raw_text))
                continue
            if rec.id in seen:
                result.duplicates += 1
                continue
            seen.add(rec.id)
            accepted.append(orjson.dumps(rec.model_dump(mode="json")))
            result.accepted += 1
        stamp = ingested_at.strftime("%Y%m%dT%H%M%S%fZ")
        name = f"part-{stamp}-{uuid.uuid4().hex[:8]}.jsonl"
        if accepted:
            key = f"records/ingest_date={ingested_at.date().isoformat()}/{name}"
            self.store.create(key, b"\n".join(accepted) + b"\n")
            result.partition = join_uri(self.root, key)
        if result.quarantined:
            entries = [orjson.dumps(q.__dict__) for q in result.quarantined]
            self.store.create(f"quarantine/{name}", b"\n".join(entries) + b"\n")
        return result

    def ingest_file(self, path: str | Path, now: datetime | None = None) -> IngestResult:
        path = Path(path)
        if not path.is_file():
            raise InputNotFound(f"no such file: {path}")
        lines = [line for line in path.read_bytes().splitlines() if line.strip()]
        return self.ingest(lines, now=now)
