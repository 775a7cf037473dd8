"""What the error store holds: predictions, feedback events, and the combined records of teams that
already log a transcript together with its correction.

A *prediction* is one answer of a serving version, captured at serving time. A *feedback event*
arrives later, from another system, and names the prediction it is about by `prediction_id`: a
corrected transcript, or only a flag that the transcript was wrong. Both are Arrow tables with the
schemas below (what the Parquet files under the store hold).

Prediction ids minted by the serving process are UUIDv7: their first 48 bits are the prediction's
time in milliseconds, so the store finds a prediction's hour partition from its id alone.
"""

from __future__ import annotations

import functools
import hashlib
import re
import typing
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, NotRequired

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import uuid6
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    field_validator,
    model_validator,
)
from typing_extensions import TypedDict

from stt_flywheel.data.identity import ANONYMOUS, MAX_USER_CHARS
from stt_flywheel.scoring.text import normalize

__all__ = [
    "FEEDBACK_SCHEMA",
    "PREDICTION_SCHEMA",
    "FeedbackEvent",
    "TranscriptRecord",
    "event_row",
    "feedback_kind",
    "id_ms",
    "ids_ms",
    "id_time",
    "new_prediction_id",
]

TIMESTAMP = pa.timestamp("us", tz="UTC")
WORD = pa.struct(
    [
        pa.field("word", pa.string(), nullable=False),
        pa.field("start", pa.float32()),
        pa.field("end", pa.float32()),
        pa.field("confidence", pa.float32(), nullable=False),
    ]
)

PREDICTION_SCHEMA = pa.schema(
    [
        pa.field("prediction_id", pa.string(), nullable=False),
        pa.field("predicted_at", TIMESTAMP, nullable=False),
        pa.field("model_version", pa.string()),
        pa.field("endpoint", pa.string()),
        pa.field("hypothesis", pa.string(), nullable=False),
        pa.field("metadata", pa.map_(pa.string(), pa.string())),
        pa.field("user", pa.string()),  # the requester's pseudonym (`identity`); null in older files
        pa.field("duration_s", pa.float32()),
        pa.field("audio_uri", pa.string()),
        pa.field("audio_sha256", pa.string()),
        # the serving process's signature (`Identity.sign`): only signed predictions decide canaries
        pa.field("signature", pa.string()),
        # how sure the model was (`models.confidence`): the utterance's, and each word's with its
        # place in the audio (seconds; null where the family gives none); null in older files
        pa.field("confidence", pa.float32()),
        pa.field("words", pa.list_(WORD)),
        pa.field("ingested_at", TIMESTAMP, nullable=False),
    ]
)

FEEDBACK_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("prediction_id", pa.string(), nullable=False),
        pa.field("corrected_text", pa.string()),
        pa.field("flagged", pa.bool_(), nullable=False),
        pa.field("event_time", TIMESTAMP, nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("user", pa.string()),  # the sender's pseudonym (`identity`); null in older files
        # sent by a reviewer source (`feedback.reviewer_sources`), which may label anyone's prediction
        pa.field("reviewer", pa.bool_()),
        pa.field("ingested_at", TIMESTAMP, nullable=False),
    ]
)


def new_prediction_id(at: datetime) -> str:
    """A UUIDv7 whose time is `at` (to the millisecond), random in the rest."""
    ms = int(at.timestamp() * 1000)
    value = uuid6.uuid7().int & ~(((1 << 48) - 1) << 80) | (ms << 80)
    return str(uuid.UUID(int=value))


_UUID7 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def id_ms(prediction_id: str) -> int | None:
    """The Unix time in milliseconds in a UUIDv7 prediction id (canonical lower-case form), or
    None for an id of another form."""
    if _UUID7.fullmatch(prediction_id) is None:
        return None
    return int(prediction_id[:8] + prediction_id[9:13], 16)


_HEX_DIGITS = np.full(256, 0, np.int64)
_HEX_DIGITS[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16)
_TIME_DIGITS = [*range(8), *range(9, 13)]  # "xxxxxxxx-xxxx": the 48 bits of milliseconds


def ids_ms(prediction_ids: pa.Array | Sequence[str]) -> np.ndarray:
    """`id_ms` of many ids at once, -1 for an id that is not a UUIDv7 (checked and decoded by
    Arrow and numpy, not id by id)."""
    ids = prediction_ids if isinstance(prediction_ids, pa.Array) else pa.array(prediction_ids, pa.string())
    out = np.full(len(ids), -1, np.int64)
    matched = pc.match_substring_regex(ids, f"^{_UUID7.pattern}$").fill_null(False)
    if not pc.any(matched).as_py():
        return out
    heads = pc.utf8_slice_codeunits(ids.filter(matched), 0, 13).cast(pa.large_string())
    offsets = np.frombuffer(heads.buffers()[1], np.int64)[heads.offset : heads.offset + len(heads) + 1]
    data = np.frombuffer(heads.buffers()[2], np.uint8)[offsets[0] : offsets[-1]].reshape(-1, 13)
    digits = _HEX_DIGITS[data[:, _TIME_DIGITS]]
    out[matched.to_numpy(zero_copy_only=False)] = digits @ (16 ** np.arange(11, -1, -1, dtype=np.int64))
    return out


def id_time(prediction_id: str) -> datetime | None:
    """The time in a UUIDv7 prediction id, or None for an id of another form."""
    ms = id_ms(prediction_id)
    return datetime.fromtimestamp(ms / 1000, UTC) if ms is not None else None


def _utc(v: datetime | None) -> datetime | None:
    if v is not None and v.tzinfo is None:
        raise ValueError("needs a timezone (use UTC, e.g. 2026-01-01T00:00:00Z)")
    try:
        return v.astimezone(UTC) if v is not None else None
    except OverflowError:  # past the ends of the calendar once in UTC: the ingest quarantines it
        return v


class FeedbackEvent(BaseModel):
    """A user's verdict on one prediction, arriving any time after it: a corrected transcript
    (which may equal the hypothesis: the user confirmed it), or a flag that it was wrong."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prediction_id: str = Field(min_length=1)
    corrected_text: str | None = None
    flagged: bool = False
    event_time: datetime
    source: str = Field(min_length=1)
    user: str | None = Field(None, max_length=MAX_USER_CHARS)

    _event_time = field_validator("event_time")(classmethod(lambda cls, v: _utc(v)))

    @model_validator(mode="after")
    def _says_something(self) -> FeedbackEvent:
        if self.corrected_text is None and not self.flagged:
            raise ValueError("an event needs corrected_text or flagged: true")
        return self


class TranscriptRecord(TypedDict):
    """A prediction logged together with its correction or flag, as some teams already log them.

    Ingesting one writes the prediction and, when it carries a correction or a flag, a feedback
    event for it (source `errors-ingest`, event time = `timestamp`). A TypedDict rather than a
    model: ingest validates millions of these, and pydantic-core checks a dict without building
    an object per line."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]

    id: Annotated[str, StringConstraints(min_length=1)]
    audio_uri: Annotated[str, StringConstraints(min_length=1)]
    hypothesis: str
    corrected_text: NotRequired[str | None]
    flagged: NotRequired[bool]
    model_version: NotRequired[str | None]
    timestamp: AwareDatetime
    metadata: NotRequired[dict[str, str]]
    user: NotRequired[Annotated[str, StringConstraints(max_length=MAX_USER_CHARS)] | None]


@functools.lru_cache(maxsize=8)
def bounded_records(
    max_metadata_keys: int,
    max_metadata_chars: int,
    max_id_chars: int | None = None,
    times: tuple[datetime, datetime] | None = None,
) -> TypeAdapter[Any]:
    """`TranscriptRecord` with its metadata held to what a serving request may carry
    (`serving.max_metadata_keys` / `max_metadata_chars`), checked by pydantic-core with the rest
    of the record rather than row by row in Python; with `max_id_chars` and `times` (the open
    lower and closed upper bound of `timestamp`), also the id's length and the time."""
    text = Annotated[str, StringConstraints(max_length=max_metadata_chars)]
    fields = typing.get_type_hints(TranscriptRecord, include_extras=True)
    fields["metadata"] = NotRequired[Annotated[dict[text, text], Field(max_length=max_metadata_keys)]]  # type: ignore[valid-type]
    if max_id_chars is not None:
        fields["id"] = Annotated[str, StringConstraints(min_length=1, max_length=max_id_chars)]
    if times is not None:
        fields["timestamp"] = Annotated[AwareDatetime, Field(gt=times[0], le=times[1])]
    bounded = TypedDict("BoundedTranscriptRecord", fields)  # type: ignore[misc]
    bounded.__pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[attr-defined]
    return TypeAdapter(bounded)


def feedback_kind(hypothesis: str, corrected_text: str | None, flagged: bool) -> str:
    """`corrected` (the correction differs from the hypothesis; an empty one is the dataset
    builder's to quarantine), `flagged` (marked wrong without a correction) or `confirmed` (the correction equals the hypothesis), after normalisation."""
    if corrected_text is not None and normalize(corrected_text) != normalize(hypothesis):
        return "corrected"
    return "flagged" if flagged else "confirmed"


def event_row(
    prediction_id: str,
    corrected_text: str | None,
    flagged: bool,
    event_time: datetime,
    source: str,
    ingested_at: datetime,
    user: str = ANONYMOUS,
    reviewer: bool = False,
) -> dict[str, Any]:
    """One feedback row of FEEDBACK_SCHEMA (`user`: the sender's pseudonym); its id is the same
    for the same event sent twice and differs for any difference."""
    fields: list[Any] = [
        prediction_id,
        corrected_text,
        flagged,
        event_time.astimezone(UTC).isoformat(),
        source,
    ]
    if user != ANONYMOUS:  # an anonymous event keeps the id it had before users were known
        fields.append(user)
    body = orjson.dumps(fields)
    return {
        "event_id": hashlib.sha256(body).hexdigest()[:32],
        "prediction_id": prediction_id,
        "corrected_text": corrected_text,
        "flagged": flagged,
        "event_time": event_time,
        "source": source,
        "user": user,
        "reviewer": reviewer,
        "ingested_at": ingested_at,
    }
