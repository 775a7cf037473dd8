"""Stage 2: build a versioned fine-tuning dataset from corrected error cases.

The error cases are the join of captured predictions (their audio) with the latest feedback that
arrived by the watermark. Every corrected one is read, validated and either accepted, counted
as a duplicate, or quarantined with a reason code — the counts always balance. General-domain
replay is mixed into the training split against forgetting. Audio that belongs to an evaluation or
regression set never enters training. The train / held-out split is a function of the audio hash,
so the same utterance lands in the same split in every run.
"""

from __future__ import annotations

import hashlib
import random
import shutil
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from stt_flywheel.config import DatasetSettings
from stt_flywheel.data.audio import (
    AudioLimits,
    AudioRejected,
    DecodedAudio,
    audio_hash,
    decode_audio,
    encode_wav,
    load_audio,
    read_training_audio,
    validate_audio,
)
from stt_flywheel.data.error_store import ErrorStore
from stt_flywheel.data.manifest import Utterance, read_manifest
from stt_flywheel.scoring.text import normalize
from stt_flywheel.storage.files import atomic_write_bytes, atomic_write_json, read_json
from stt_flywheel.storage.objectstore import join_uri, put_tree, tree_exists

# The transcripts are stored as written, whitespace collapsed: the `none/1` normaliser.
TRANSCRIPTS_AS_WRITTEN = "none/1"

__all__ = [
    "DatasetManifest",
    "build_dataset",
    "load_split",
    "protected_hashes",
    "publish_dataset",
    "split_of",
]

SPLITS = ("train", "heldout")


@dataclass
class DatasetManifest:
    version: str
    content_hash: str
    watermark: str | None
    created_at: str
    counts: dict[str, int]
    quarantine_reasons: dict[str, int]
    splits: dict[str, int]
    replay: dict[str, int]
    normalizer: str = TRANSCRIPTS_AS_WRITTEN  # what was done to the stored transcripts
    settings: dict[str, Any] = field(default_factory=dict)
    # per split: examples, audio seconds (total, min, mean, max), domains, speakers and sources
    profile: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def balanced(self) -> bool:
        c = self.counts
        return c["read"] == c["accepted"] + c["duplicates"] + c["quarantined"]

    @property
    def usable(self) -> tuple[bool, str]:
        """Whether training on this dataset can prove anything: it needs both splits."""
        empty = [s for s in SPLITS if not self.splits.get(s)]
        if empty:
            return (
                False,
                f"no usable examples in the {' and '.join(empty)} split ({self.counts['quarantined']} quarantined)",
            )
        return True, f"{self.splits['train']} training and {self.splits['heldout']} held-out examples"

    def as_dict(self) -> dict[str, Any]:
        usable, reason = self.usable
        return {**self.__dict__, "balanced": self.balanced, "usable": usable, "usable_reason": reason}

    def to_markdown(self, context: str = "") -> str:
        """The dataset report a person reads in the pipeline's console: what was read, kept and
        rejected (and why), and what each split holds."""
        usable, reason = self.usable
        c = self.counts
        lines = ["# Dataset", ""]
        if context:
            lines += [context, ""]
        lines += [
            f"**{self.version}** ({'usable' if usable else 'not usable'}: {reason}); data watermark "
            f"{self.watermark or 'none'}; transcripts stored as written (normaliser {self.normalizer}: whitespace only); content hash `{self.content_hash[:16]}…`.",
            "",
            f"Corrected error cases read: {c['read']} — accepted {c['accepted']}, duplicates "
            f"{c['duplicates']}, quarantined {c['quarantined']}; flagged without a correction (not "
            f"trainable): {c['uncorrected_error_cases']}. Replay: {self.replay.get('used', 0)} of "
            f"{self.replay.get('available', 0)} utterances.",
            "",
            "| split | examples | audio (min) | duration min / mean / max (s) | domains | speakers | sources |",
            "|---|---|---|---|---|---|---|",
        ]
        for split in SPLITS:
            p = self.profile.get(split)
            if not p or not p["examples"]:
                lines.append(f"| {split} | 0 | | | | | |")
                continue
            lines.append(
                f"| {split} | {p['examples']} | {p['seconds'] / 60:.1f} | {p['min_s']:.1f} / "
                f"{p['mean_s']:.1f} / {p['max_s']:.1f} | {_counted(p['domains'])} | {p['speakers']} | "
                f"{_counted(p['sources'])} |"
            )
        if self.quarantine_reasons:
            lines += ["", "| quarantine reason | records |", "|---|---|"]
            lines += [
                f"| {r} | {n} |" for r, n in sorted(self.quarantine_reasons.items(), key=lambda x: -x[1])
            ]
        return "\n".join(lines) + "\n"

    @classmethod
    def load(cls, dataset_dir: str | Path) -> DatasetManifest:
        data = read_json(Path(dataset_dir) / "manifest.json")
        for derived in ("balanced", "usable", "usable_reason"):
            data.pop(derived, None)
        return cls(**data)


def _counted(counts: dict[str, int]) -> str:
    return ", ".join(f"{k or '(none)'} {n}" for k, n in sorted(counts.items(), key=lambda x: -x[1]))


def _profile(rows: list[_Row]) -> dict[str, Any]:
    durations = [r.audio.duration_s for r in rows]
    return {
        "examples": len(rows),
        "seconds": round(sum(durations), 2),
        "min_s": min(durations, default=0.0),
        "mean_s": sum(durations) / len(durations) if durations else 0.0,
        "max_s": max(durations, default=0.0),
        "domains": dict(Counter(r.domain for r in rows)),
        "speakers": len({r.speaker for r in rows}),
        "sources": dict(Counter(r.source for r in rows)),
    }


def split_of(sha256: str, holdout_fraction: float) -> str:
    return "heldout" if int(sha256[:8], 16) / 0x1_0000_0000 < holdout_fraction else "train"


def protected_hashes(manifests: Iterable[str | Path]) -> set[str]:
    """Audio hashes of every utterance in the given eval / regression manifests."""
    out: set[str] = set()
    for path in manifests:
        for utt in read_manifest(path):
            out.add(utt.audio_sha256 or audio_hash(load_audio(utt.audio).samples))
    return out


@dataclass
class _Row:
    id: str
    text: str
    audio: DecodedAudio
    sha: str
    source: str
    speaker: str
    domain: str
    language: str = ""  # the record's `language` metadata ("de"); empty: the configured default


def build_dataset(
    store: ErrorStore,
    out_dir: str | Path,
    settings: DatasetSettings,
    *,
    watermark: datetime | None,
    protected: set[str] | frozenset[str] = frozenset(),
    model_window_s: float | None = None,
) -> DatasetManifest:
    """Write `out_dir/{data/<split>.arrow-dataset, manifest.json, quarantine.jsonl}`: admit the
    corrections, split them by audio hash, mix replay into the train split, write.

    `model_window_s`: the longest audio the model to be trained hears at once (Whisper: 30 s).
    A correction of longer audio is quarantined (`too_long_for_model`): it carries one transcript
    and no word timings, so there is nowhere to cut it that keeps audio and text aligned."""
    admitted = _admit_corrections(store, settings, watermark, protected, model_window_s)
    splits: dict[str, list[_Row]] = {s: [] for s in SPLITS}
    for row in admitted.rows:
        splits[split_of(row.sha, settings.holdout_fraction)].append(row)
    replay = _add_replay(splits["train"], settings, protected, model_window_s)
    digest = hashlib.sha256()
    for split in SPLITS:
        splits[split].sort(key=lambda r: r.sha)
        for r in splits[split]:
            digest.update(f"{split}\t{r.sha}\t{r.text}\n".encode())
    content_hash = digest.hexdigest()
    manifest = DatasetManifest(
        version=f"ds-{content_hash[:12]}",
        content_hash=content_hash,
        watermark=watermark.isoformat() if watermark else None,
        created_at=datetime.now(UTC).isoformat(),
        counts=dict(admitted.counts),
        quarantine_reasons=dict(admitted.reasons),
        splits={s: len(v) for s, v in splits.items()},
        replay=replay,
        settings=settings.model_dump(mode="json"),
        profile={split: _profile(rows_) for split, rows_ in splits.items()},
    )
    _write(Path(out_dir), splits, admitted.quarantine, manifest)
    return manifest


@dataclass
class _Admission:
    """The corrections read: the rows accepted, the counts (which balance), what was quarantined."""

    rows: list[_Row] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    quarantine: list[dict[str, Any]] = field(default_factory=list)

    def reject(self, rec_id: str, code: str, detail: str) -> None:
        self.counts["quarantined"] += 1
        self.reasons[code] += 1
        self.quarantine.append({"id": rec_id, "reason": code, "detail": detail})


def _audio_problem(
    audio: DecodedAudio,
    sample_rate: int,
    model_window_s: float | None,
    protected: set[str] | frozenset[str],
    sha: str,
    **durations: float,
) -> tuple[str, str] | None:
    """(reason code, detail) of the first rule this audio breaks, or None: decodable and sane
    (`validate_audio`, with `durations` when given), within the model's window, not protected."""
    problem = validate_audio(audio, sample_rate=sample_rate, **durations)
    if problem:
        return problem.code, problem.detail
    if model_window_s is not None and audio.duration_s > model_window_s:
        return (
            "too_long_for_model",
            f"{audio.duration_s:.2f} s > the model's {model_window_s:g} s window (one transcript, "
            "no word timings to cut it by)",
        )
    if sha in protected:
        return "protected_audio", "audio belongs to an evaluation or regression set"
    return None


def _admit_corrections(
    store: ErrorStore,
    settings: DatasetSettings,
    watermark: datetime | None,
    protected: set[str] | frozenset[str],
    model_window_s: float | None,
) -> _Admission:
    """Every corrected error case up to the watermark, accepted, a duplicate, or quarantined."""
    limits = AudioLimits(
        roots=(join_uri(store.root, "audio"), *settings.audio_roots),
        max_bytes=settings.max_audio_bytes,
        max_duration_s=settings.max_duration_s,
        timeout_s=settings.audio_read_timeout_s,
    )
    out = _Admission()
    seen: dict[str, str] = {}
    for prediction, event, kind in store.errors(upto=watermark):
        if kind != "corrected":
            out.counts["uncorrected_error_cases"] += 1
            continue
        out.counts["read"] += 1
        rec_id = prediction["prediction_id"]
        # kept as the user wrote it (whitespace collapsed): a model that writes casing and
        # punctuation learns them from here; the CTC collator normalises for its own vocabulary
        text = " ".join(str(event["corrected_text"]).split())
        if not normalize(text):
            out.reject(rec_id, "empty_transcript", "the corrected transcript is empty after normalisation")
            continue
        if not prediction["audio_uri"]:
            out.reject(rec_id, "audio_not_captured", "the prediction was captured without its audio")
            continue
        try:
            audio = read_training_audio(prediction["audio_uri"], limits)
        except AudioRejected as exc:
            out.reject(rec_id, exc.code, exc.detail)
            continue
        sha = audio_hash(audio.samples)
        problem = _audio_problem(
            audio,
            settings.sample_rate,
            model_window_s,
            protected,
            sha,
            min_duration_s=settings.min_duration_s,
            max_duration_s=settings.max_duration_s,
        )
        if problem:
            out.reject(rec_id, *problem)
        elif sha in seen and seen[sha] == text:
            out.counts["duplicates"] += 1
        elif sha in seen:
            out.reject(rec_id, "conflicting_correction", f"same audio already corrected as {seen[sha]!r}")
        else:
            seen[sha] = text
            out.counts["accepted"] += 1
            out.rows.append(_correction_row(rec_id, text, audio, sha, prediction["metadata"]))
    for key in ("read", "accepted", "duplicates", "quarantined", "uncorrected_error_cases"):
        out.counts.setdefault(key, 0)
    return out


def _correction_row(rec_id: str, text: str, audio: DecodedAudio, sha: str, metadata: Any) -> _Row:
    meta = dict(metadata or [])
    language = str(meta.get("language", "") or "")
    return _Row(
        rec_id, text, audio, sha, "correction", meta.get("speaker", ""), meta.get("domain", ""), language
    )


def _add_replay(
    train: list[_Row],
    settings: DatasetSettings,
    protected: set[str] | frozenset[str],
    model_window_s: float | None,
) -> dict[str, int]:
    """General-domain replay appended to `train`, `replay_share` of the result; its counts."""
    stats = {"available": 0, "used": 0, "excluded_protected": 0, "invalid": 0}
    if not (settings.replay_manifest and settings.replay_share > 0 and train):
        return stats
    candidates: list[Utterance] = list(read_manifest(settings.replay_manifest))
    stats["available"] = len(candidates)
    wanted = round(len(train) * settings.replay_share / (1 - settings.replay_share))
    random.Random(settings.seed).shuffle(candidates)
    for utt in candidates:
        if stats["used"] >= wanted:
            break
        audio = load_audio(utt.audio)
        sha = audio_hash(audio.samples)
        if sha in protected:
            stats["excluded_protected"] += 1
        elif _audio_problem(audio, settings.sample_rate, model_window_s, frozenset(), sha) or not normalize(
            utt.text
        ):
            stats["invalid"] += 1
        else:
            text = " ".join(utt.text.split())
            train.append(_Row(utt.id, text, audio, sha, "replay", utt.speaker or "", utt.domain or ""))
            stats["used"] += 1
    return stats


_FEATURES = {
    "id": "string",
    "text": "string",
    "audio_wav": "binary",
    "audio_sha256": "string",
    "duration_s": "float32",
    "source": "string",
    "speaker": "string",
    "domain": "string",
    "language": "string",
}


def _columns(rows: list[_Row]) -> dict[str, list[Any]]:
    # Column-wise, so that an empty split still carries its schema.
    return {
        "id": [r.id for r in rows],
        "text": [r.text for r in rows],
        "audio_wav": [encode_wav(r.audio.samples, r.audio.sample_rate) for r in rows],
        "audio_sha256": [r.sha for r in rows],
        "duration_s": [r.audio.duration_s for r in rows],
        "source": [r.source for r in rows],
        "speaker": [r.speaker for r in rows],
        "domain": [r.domain for r in rows],
        "language": [r.language for r in rows],
    }


def _write(
    out_dir: Path, splits: dict[str, list[_Row]], quarantine: list[dict[str, Any]], manifest: DatasetManifest
) -> None:
    """The dataset, its quarantine and its manifest, built beside `out_dir` and moved into it."""
    from datasets import Dataset, DatasetDict, Features, Value

    features = Features({name: Value(kind) for name, kind in _FEATURES.items()})
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    DatasetDict(
        {split: Dataset.from_dict(_columns(rows), features=features) for split, rows in splits.items()}
    ).save_to_disk(
        str(tmp / "data"), num_shards=dict.fromkeys(SPLITS, 1)
    )  # an empty split still gets its (empty) shard
    atomic_write_bytes(tmp / "quarantine.jsonl", b"".join(orjson.dumps(q) + b"\n" for q in quarantine))
    atomic_write_json(tmp / "manifest.json", manifest.as_dict())
    out_dir.mkdir(parents=True, exist_ok=True)
    for child in tmp.iterdir():
        target = out_dir / child.name
        if target.is_dir():
            shutil.rmtree(target)
        child.rename(target)
    tmp.rmdir()


def load_split(dataset_dir: str | Path, split: str) -> list[dict[str, Any]]:
    """Rows of one split with decoded audio: `{"id", "text", "audio", "speaker", "domain", "source",
    "language"}` (datasets built before the `language` column read as "")."""
    from datasets import load_from_disk

    ds = load_from_disk(str(Path(dataset_dir) / "data"))[split]
    return [
        {
            "id": row["id"],
            "text": row["text"],
            "audio": decode_audio(row["audio_wav"]).samples,
            "speaker": row["speaker"],
            "domain": row["domain"],
            "source": row["source"],
            "language": row.get("language") or "",
        }
        for row in ds
    ]


def publish_dataset(dataset_dir: str | Path, datasets_root: str | Path) -> str:
    """Copy a built dataset into the versioned store (`datasets_root/<version>`, a directory or a
    `gs://` prefix); idempotent, since a version is the hash of its content."""
    manifest = DatasetManifest.load(dataset_dir)
    target = join_uri(datasets_root, manifest.version)
    if not tree_exists(target, "manifest.json"):
        put_tree(dataset_dir, target, commit_file="manifest.json")
    return target
