"""Utterance manifests: JSONL files of audio path + reference text (+ metadata).

Eval sets, regression suites and replay data are all manifests; relative audio paths resolve
against the manifest's own directory so a manifest can move with its audio.
"""

from __future__ import annotations

from pathlib import Path

import orjson
from pydantic import BaseModel, ConfigDict

from stt_flywheel.errors import InputError, InputNotFound
from stt_flywheel.storage.files import atomic_write_bytes

__all__ = ["Utterance", "read_manifest", "write_manifest"]


class Utterance(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    id: str
    audio: str
    text: str
    speaker: str | None = None
    domain: str | None = None
    duration_s: float | None = None
    audio_sha256: str | None = None


def read_manifest(path: str | Path) -> list[Utterance]:
    path = Path(path)
    if not path.exists():
        raise InputNotFound(f"manifest not found: {path}")
    out = []
    for lineno, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise InputError(f"{path}:{lineno}: not JSON: {exc}") from exc
        audio = Path(row["audio"])
        if "://" not in row["audio"] and not audio.is_absolute():
            row["audio"] = str(path.parent / audio)
        out.append(Utterance.model_validate(row))
    return out


def write_manifest(path: str | Path, utterances: list[Utterance]) -> None:
    data = b"".join(orjson.dumps(u.model_dump(exclude_none=True)) + b"\n" for u in utterances)
    atomic_write_bytes(path, data)
