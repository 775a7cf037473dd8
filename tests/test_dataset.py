import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from stt_flywheel.config import DEFAULT_BASE_MODEL, DatasetSettings
from stt_flywheel.data.dataset import (
    DatasetManifest,
    build_dataset,
    load_split,
    protected_hashes,
    publish_dataset,
    split_of,
)
from stt_flywheel.data.error_store import ErrorStore
from stt_flywheel.data.manifest import Utterance, read_manifest
from stt_flywheel.scoring.text import normalize

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _row(utt: Utterance, rid: str, **extra: object) -> dict:
    return {
        "id": rid,
        "audio_uri": utt.audio,
        "hypothesis": "something else entirely",
        "corrected_text": utt.text,
        "timestamp": T0.isoformat(),
        "metadata": {"domain": utt.domain or "", "speaker": utt.speaker or ""},
        **extra,
    }


@pytest.fixture
def store_with_cases(tmp_path: Path, new_utts: list[Utterance], general_utts: list[Utterance]) -> ErrorStore:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....WAVEjunk")
    rows = [_row(u, f"new-{i}") for i, u in enumerate(new_utts)]
    rows += [
        _row(new_utts[0], "dup-0"),  # same audio, same correction
        _row(new_utts[1], "conflict-1", corrected_text="a different correction"),
        _row(new_utts[2], "empty-2", corrected_text=" !! "),
        _row(new_utts[3], "missing", audio_uri=str(tmp_path / "nope.wav")),
        _row(new_utts[3], "garbage", audio_uri=str(bad)),
        _row(general_utts[0], "protected-0"),
        {**_row(general_utts[1], "flag-only"), "corrected_text": None, "flagged": True},
        {**_row(general_utts[2], "right"), "corrected_text": None, "hypothesis": general_utts[2].text},
    ]
    store = ErrorStore(tmp_path / "store")
    assert store.ingest(rows, now=T0).accepted == len(rows)
    store.ingest([_row(general_utts[3], "after-watermark")], now=T0 + timedelta(days=1))
    return store


def _settings(replay: Path | None = None, share: float = 0.0, **extra: object) -> DatasetSettings:
    # the tests' audio is synthesised under pytest's temporary directories
    extra.setdefault("audio_roots", [tempfile.gettempdir()])
    extra.setdefault("max_user_share", 1.0)  # these records name no user: all one (anonymous)
    extra.setdefault("holdout_fraction", 0.3)
    return DatasetSettings(replay_manifest=replay, replay_share=share, **extra)  # type: ignore[arg-type]


def test_counts_balance_and_reasons(
    tmp_path: Path, store_with_cases: ErrorStore, general_utts: list[Utterance]
) -> None:
    protected = {general_utts[0].audio_sha256}
    m = build_dataset(store_with_cases, tmp_path / "ds", _settings(), watermark=T0, protected=protected)
    assert m.balanced
    assert m.counts["read"] == 12 + 6
    assert m.counts["accepted"] == 12
    assert m.counts["duplicates"] == 1
    assert m.quarantine_reasons == {
        "conflicting_correction": 1,
        "empty_transcript": 1,
        "audio_missing": 1,
        "audio_undecodable": 1,
        "protected_audio": 1,
    }
    assert m.counts["uncorrected_error_cases"] == 1
    assert sum(m.splits.values()) == 12
    quarantine = (tmp_path / "ds" / "quarantine.jsonl").read_text().splitlines()
    assert len(quarantine) == 5
    # records ingested after the watermark are not read
    assert "after-watermark" not in {
        r["id"] for s in ("train", "heldout") for r in load_split(tmp_path / "ds", s)
    }


def test_split_is_deterministic_and_content_hashed(tmp_path: Path, store_with_cases: ErrorStore) -> None:
    a = build_dataset(store_with_cases, tmp_path / "a", _settings(), watermark=T0)
    b = build_dataset(store_with_cases, tmp_path / "b", _settings(), watermark=T0)
    assert a.content_hash == b.content_hash
    assert a.version == b.version
    for split in ("train", "heldout"):
        assert all(split_of(sha, 0.3) == split for sha in _shas(tmp_path / "a", split))
        assert all(
            r["audio"].dtype.name == "float32" and r["text"] for r in load_split(tmp_path / "a", split)
        )
    later = build_dataset(store_with_cases, tmp_path / "c", _settings(), watermark=T0 + timedelta(days=2))
    assert later.content_hash != a.content_hash


def _shas(dataset_dir: Path, split: str) -> list[str]:
    from datasets import load_from_disk

    return list(load_from_disk(str(dataset_dir / "data"))[split]["audio_sha256"])


def test_replay_is_mixed_in_and_never_protected(
    tmp_path: Path, store_with_cases: ErrorStore, world: dict[str, Path]
) -> None:
    replay = world["replay"]
    replay_utts = read_manifest(replay)
    protected = {u.audio_sha256 for u in replay_utts[:5]}
    m = build_dataset(
        store_with_cases, tmp_path / "ds", _settings(replay, 0.5), watermark=T0, protected=protected
    )
    train = load_split(tmp_path / "ds", "train")
    replayed = [r for r in train if r["source"] == "replay"]
    assert m.replay["used"] == len(replayed) > 0
    corrections = len(train) - len(replayed)
    assert len(replayed) == min(corrections, len(replay_utts) - m.replay["excluded_protected"])
    assert not {r["id"] for r in replayed} & {u.id for u in replay_utts[:5]}
    assert all(r["id"] for r in load_split(tmp_path / "ds", "heldout") if r["source"] == "correction")


def test_protected_hashes_and_publish(
    tmp_path: Path, world: dict[str, Path], store_with_cases: ErrorStore
) -> None:
    hashes = protected_hashes([world["eval"], world["suite-general"]])
    assert len(hashes) == len(read_manifest(world["eval"])) + len(read_manifest(world["suite-general"]))
    build_dataset(store_with_cases, tmp_path / "ds", _settings(), watermark=T0)
    target = publish_dataset(tmp_path / "ds", tmp_path / "datasets")
    assert Path(target).name == DatasetManifest.load(tmp_path / "ds").version
    assert publish_dataset(tmp_path / "ds", tmp_path / "datasets") == target


def test_a_dataset_without_usable_examples_says_why(tmp_path: Path, new_utts: list[Utterance]) -> None:
    store = ErrorStore(tmp_path / "store")
    store.ingest(
        [_row(new_utts[0], f"gone-{i}", audio_uri=str(tmp_path / f"{i}.wav")) for i in range(3)], now=T0
    )
    m = build_dataset(store, tmp_path / "ds", _settings(), watermark=T0)
    assert m.balanced
    assert m.counts["quarantined"] == 3
    usable, reason = m.usable
    assert not usable
    assert "train and heldout" in reason
    assert DatasetManifest.load(tmp_path / "ds").usable == (False, reason)


def test_the_dataset_is_the_join_of_captured_audio_and_the_latest_correction(
    tmp_path: Path, new_utts: list[Utterance]
) -> None:
    from stt_flywheel.data.records import new_prediction_id

    store = ErrorStore(tmp_path / "store")
    utts = new_utts[:6]
    preds, pids = [], []
    for i, u in enumerate(utts):
        at = T0 + timedelta(seconds=i)
        pid = new_prediction_id(at)
        uri, sha = store.put_audio(Path(u.audio).read_bytes()) if i != 5 else (None, None)  # 5: no audio kept
        preds.append(
            {
                "prediction_id": pid,
                "predicted_at": at,
                "model_version": "1",
                "endpoint": "stt",
                "hypothesis": "something else entirely" if i != 4 else u.text,
                "metadata": {"domain": u.domain or "", "speaker": u.speaker or ""},
                "duration_s": 1.0,
                "audio_uri": uri,
                "audio_sha256": sha,
            }
        )
        pids.append(pid)
    store.write_predictions(preds, now=T0)

    def event(i: int, text: str | None, minutes: int, **extra: object) -> dict:
        at = (T0 + timedelta(minutes=minutes)).isoformat()
        return {"prediction_id": pids[i], "corrected_text": text, "event_time": at, "source": "app", **extra}

    store.ingest_feedback(
        [
            event(0, utts[0].text, 5),
            event(1, "a slip of the thumb", 5),
            event(1, utts[1].text, 6),  # the user's latest word wins
            event(2, None, 5, flagged=True),  # flagged only: no text to train on
            event(3, utts[3].text, 5),
            event(4, utts[4].text, 5),  # confirms a right transcript: not an error
            event(5, utts[5].text, 5),
        ],
        now=T0 + timedelta(hours=1),
    )
    manifest = build_dataset(
        store, tmp_path / "ds", _settings(), watermark=T0 + timedelta(hours=1), protected=frozenset()
    )
    assert manifest.counts["read"] == 4 and manifest.counts["uncorrected_error_cases"] == 1
    assert manifest.quarantine_reasons == {"audio_not_captured": 1}
    rows = load_split(tmp_path / "ds", "train") + load_split(tmp_path / "ds", "heldout")
    assert sorted(r["id"] for r in rows) == sorted([pids[0], pids[1], pids[3]])
    by_id = {r["id"]: r for r in rows}
    assert by_id[pids[1]]["text"] == normalize(utts[1].text)
    assert by_id[pids[0]]["speaker"] == (utts[0].speaker or "")
    # a correction that arrives after the watermark waits for the next run
    store.ingest_feedback([event(2, utts[2].text, 90)], now=T0 + timedelta(hours=2))
    again = build_dataset(store, tmp_path / "ds2", _settings(), watermark=T0 + timedelta(hours=1))
    assert again.counts["read"] == 4


def _flac_claiming(samples: int, source: Path, target: Path) -> Path:
    """A real FLAC whose STREAMINFO claims `samples` samples (36 bits), as a forged header would."""
    import soundfile as sf

    data, rate = sf.read(source, dtype="float32")
    sf.write(target, data, rate, format="FLAC")
    raw = bytearray(target.read_bytes())
    assert raw[:4] == b"fLaC"
    # STREAMINFO starts at byte 8; its 36-bit total-samples field starts 4 bits into byte 21
    raw[21] = (raw[21] & 0xF0) | ((samples >> 32) & 0x0F)
    raw[22:26] = (samples & 0xFFFFFFFF).to_bytes(4, "big")
    target.write_bytes(bytes(raw))
    return target


def test_poison_records_are_quarantined_with_a_reason_and_never_stop_the_build(
    tmp_path: Path, new_utts: list[Utterance]
) -> None:
    """Each of these once crashed, hung or exhausted memory in the dataset stage."""
    import os

    root = tmp_path / "audio-root"
    root.mkdir()
    (root / "a-directory").mkdir()
    os.mkfifo(root / "a-fifo")  # opening it for reading would block forever
    (root / "escape").symlink_to("/etc/hostname")  # inside by name, outside once resolved
    (root / "huge.wav").write_bytes(b"\0" * 2_000_001)
    forged = _flac_claiming(2**36 - 1, Path(new_utts[0].audio), root / "forged.flac")
    good = root / "good.wav"
    good.write_bytes(Path(new_utts[1].audio).read_bytes())
    cases = {
        "dir": (str(root / "a-directory"), "audio_not_a_file"),
        "fifo": (str(root / "a-fifo"), "audio_not_a_file"),
        "symlink": (str(root / "escape"), "audio_outside_roots"),
        "huge": (str(root / "huge.wav"), "audio_too_large"),
        "forged": (str(forged), "too_long"),
        "long-name": (str(root / ("x" * 5000)), "audio_unreadable"),
        "etc": ("/etc/hostname", "audio_outside_roots"),
        "proc": ("/proc/self/environ", "audio_outside_roots"),
        "dev-zero": ("/dev/zero", "audio_outside_roots"),
        "dotdot": (str(root / ".." / ".." / "etc" / "hostname"), "audio_outside_roots"),
        "file-uri": (f"file://{good}", "audio_outside_roots"),
        "bucket": ("gs://someone-elses-bucket/a.wav", "audio_outside_roots"),
        "tmp": ("/tmp", "audio_outside_roots"),
    }
    rows = [_row(new_utts[1], "good", audio_uri=str(good))]
    rows += [_row(new_utts[2], name, audio_uri=uri) for name, (uri, _) in cases.items()]
    store = ErrorStore(tmp_path / "store")
    assert store.ingest(rows, now=T0).accepted == len(rows)
    settings = _settings(audio_roots=[str(root)], max_audio_bytes=2_000_000)
    m = build_dataset(store, tmp_path / "ds", settings, watermark=T0)
    assert m.counts["accepted"] == 1
    assert m.balanced
    quarantine = {
        q["id"]: q["reason"]
        for q in map(orjson.loads, (tmp_path / "ds" / "quarantine.jsonl").read_bytes().splitlines())
    }
    assert quarantine == {name: reason for name, (_, reason) in cases.items()}


def test_a_device_inside_the_roots_is_not_read(tmp_path: Path, new_utts: list[Utterance]) -> None:
    """/dev/zero never ends: with `/dev` allowed it is still refused, unopened, as not a file."""
    store = ErrorStore(tmp_path / "store")
    store.ingest([_row(new_utts[0], "zero", audio_uri="/dev/zero")], now=T0)
    m = build_dataset(store, tmp_path / "ds", _settings(audio_roots=["/dev"]), watermark=T0)
    assert m.quarantine_reasons == {"audio_not_a_file": 1}


def test_audio_longer_than_the_models_window_is_quarantined_and_text_kept_as_written(
    tmp_path: Path, new_utts: list[Utterance]
) -> None:
    """A 45-second recording with one correction cannot be cut into 30-second pieces with the
    right words in each: for a Whisper it is quarantined (`too_long_for_model`), a model without
    a window (CTC) trains on it. Accepted transcripts keep their casing and punctuation."""
    import numpy as np
    import soundfile as sf

    from stt_flywheel.models import model_window_s
    from stt_flywheel.models.seq2seq import build_whisper_model

    long_wav = tmp_path / "long.wav"
    noise = np.random.default_rng(0).normal(0, 0.1, 16_000 * 45).astype(np.float32)
    sf.write(long_wav, noise, 16_000)
    store = ErrorStore(tmp_path / "store")
    rows = [
        _row(
            new_utts[0], "short", corrected_text="Take  Metformin, twice a day.", metadata={"language": "de"}
        ),
        {**_row(new_utts[1], "long"), "audio_uri": str(long_wav)},
    ]
    assert store.ingest(rows, now=T0).accepted == 2
    whisper_dir = tmp_path / "whisper"
    build_whisper_model().save(whisper_dir)
    assert model_window_s(whisper_dir) == 30.0
    settings = _settings(max_duration_s=60.0)
    m = build_dataset(
        store, tmp_path / "w", settings, watermark=T0, model_window_s=model_window_s(whisper_dir)
    )
    assert m.quarantine_reasons == {"too_long_for_model": 1}
    quarantined = [
        orjson.loads(line) for line in (tmp_path / "w" / "quarantine.jsonl").read_text().splitlines()
    ]
    assert quarantined[0]["id"] == "long" and "45.00 s > the model's 30 s window" in quarantined[0]["detail"]
    texts = {r["text"] for s in ("train", "heldout") for r in load_split(tmp_path / "w", s)}
    assert texts == {"Take Metformin, twice a day."}
    languages = {r["language"] for s in ("train", "heldout") for r in load_split(tmp_path / "w", s)}
    assert languages == {"de"}  # the record's language metadata travels to the collator
    assert model_window_s(DEFAULT_BASE_MODEL) is None  # the CTC base model has no window
    m = build_dataset(store, tmp_path / "c", settings, watermark=T0, model_window_s=None)
    assert m.quarantine_reasons == {} and m.counts["accepted"] == 2


def test_poison_records_are_quarantined_each_with_its_reason_and_the_rest_still_trains(
    tmp_path: Path, new_utts: list[Utterance]
) -> None:
    """Each of these once reached training and stopped every later run (datasets are rebuilt
    from all history): a language Whisper does not know, a transcript far too long for its
    audio, a transcript longer than the decoder can be trained on. `en-US` is English."""
    from stt_flywheel.models import target_length_check
    from stt_flywheel.models.seq2seq import build_whisper_model

    store = ErrorStore(tmp_path / "store")
    rows = [
        _row(new_utts[0], "us", metadata={"language": "en-US"}),
        _row(new_utts[1], "xx", metadata={"language": "xx"}),
        _row(new_utts[2], "essay", corrected_text="word " * 2000),
        _row(new_utts[3], "ok", metadata={"language": "German"}),
    ]
    assert store.ingest(rows, now=T0).accepted == 4
    whisper_dir = tmp_path / "whisper"
    build_whisper_model().save(whisper_dir)
    check = target_length_check(whisper_dir)
    assert check is not None and check("take it twice a day") is None
    assert "label tokens > the model's 128" in (check("x" * 600) or "")
    m = build_dataset(store, tmp_path / "w", _settings(), watermark=T0, target_check=check)
    assert m.balanced
    assert m.quarantine_reasons == {"unknown_language": 1, "too_long_for_model": 1}
    languages = sorted(r["language"] for s in ("train", "heldout") for r in load_split(tmp_path / "w", s))
    assert languages == ["de", "en"]
    # a model without a decoder limit (CTC): words per second of audio keep the essay out
    m = build_dataset(store, tmp_path / "c", _settings(), watermark=T0)
    assert m.quarantine_reasons == {"unknown_language": 1, "implausible_words_per_second": 1}
    m = build_dataset(store, tmp_path / "l", _settings(max_words_per_second=None), watermark=T0)
    assert m.quarantine_reasons == {"unknown_language": 1}


def test_no_user_is_in_both_splits_and_none_holds_more_than_its_share(
    tmp_path: Path, new_utts: list[Utterance], general_utts: list[Utterance]
) -> None:
    """One user sends most of the corrections: the training split keeps no more of theirs than
    `max_user_share` allows, the rest is quarantined with the reason; each user's corrections
    land in one split only; the rows say who taught them."""
    from stt_flywheel.data.error_store import Senders
    from stt_flywheel.data.identity import Identity

    key = Identity(b"k" * 32)
    store = ErrorStore(tmp_path / "store", senders=Senders(key))
    utts = new_utts + general_utts
    flood = len(utts) // 2
    rows = [_row(u, f"flood-{i}", user="mallory") for i, u in enumerate(utts[:flood])]
    rows += [_row(u, f"honest-{i}", user=f"user-{i % 8}") for i, u in enumerate(utts[flood:])]
    assert store.ingest(rows, now=T0).accepted == len(utts)
    m = build_dataset(
        store, tmp_path / "ds", _settings(max_user_share=0.25, holdout_fraction=0.2), watermark=T0
    )
    assert m.balanced
    train = load_split(tmp_path / "ds", "train")
    heldout = load_split(tmp_path / "ds", "heldout")
    users = {s: {r["user"] for r in rows_} for s, rows_ in (("train", train), ("heldout", heldout))}
    assert not users["train"] & users["heldout"]
    per_user = {u: sum(r["user"] == u for r in train) for u in users["train"]}
    assert max(per_user.values()) <= 0.25 * len(train)
    mallory = key.pseudonym("mallory")
    assert mallory in users["train"]  # where this key puts them
    assert m.quarantine_reasons["over_user_share"] >= flood - per_user[mallory] > 0
    assert m.profile["train"]["largest_user_share"] <= 0.25
    assert all(r["event_id"] and r["event_source"] == "errors-ingest" for r in train)
    assert "users (largest share)" in m.to_markdown()
