"""Capture at serving: a real serving process writes what it answered into the error store, on a
directory and on the GCS emulator, survives a store it cannot reach (spill, then retry) and
writes everything still queued when it gets SIGTERM."""

import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from stt_flywheel.config import CaptureSettings
from stt_flywheel.data.audio import decode_audio, encode_wav, load_audio
from stt_flywheel.data.capture import CapturedPrediction, CaptureWriter
from stt_flywheel.data.error_store import ErrorStore
from stt_flywheel.data.identity import Identity
from stt_flywheel.data.manifest import Utterance
from stt_flywheel.data.records import new_prediction_id
from stt_flywheel.deployment.serving import ServingProcess, capture_env
from stt_flywheel.storage.objectstore import read_uri


def _prediction(i: int, audio: bytes | None = b"RIFF....WAVE") -> CapturedPrediction:
    now = datetime.now(UTC)
    words = [
        {"word": "hyp", "start": 0.0, "end": 0.5, "confidence": 0.75},
        {"word": str(i), "start": None, "end": None, "confidence": 0.5},
    ]
    return CapturedPrediction(
        new_prediction_id(now),
        now,
        "3",
        "stt",
        f"hyp {i}",
        {"i": str(i)},
        1.0,
        audio,
        confidence=0.375,
        words=words,
    )


def _balanced(c: dict[str, int]) -> bool:
    """Every offered prediction is in one place (recovered ones are among the captured)."""
    return (
        c["offered"]
        == c["not_selected"]
        + c["dropped_overflow"]
        + c["queued"]
        + c["spilled"]
        + c["captured"]
        + c["forgotten"]
    )


def _wait(condition: Callable[[], bool], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_unreachable_store_spills_then_retries(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = ErrorStore(root)
    (root / "predictions").write_bytes(b"")  # a file where the store needs a directory: writes fail
    writer = CaptureWriter(store, tmp_path / "spill", flush_interval_s=0.05, retry_interval_s=0.2)
    for i in range(20):
        assert writer.offer(_prediction(i))
    _wait(lambda: writer.snapshot()["spilled"] == 20)
    (root / "predictions").unlink()  # the store is back
    _wait(lambda: writer.snapshot()["recovered"] == 20)
    counters = writer.close()
    assert counters["captured"] == 20 and counters["spilled"] == 0 and counters["write_failures"] >= 1
    assert _balanced(counters)
    rows = store.predictions().to_pylist()
    assert sorted(r["hypothesis"] for r in rows) == sorted(f"hyp {i}" for i in range(20))
    # the words and confidence went through the spill file and back
    assert all(
        r["confidence"] == 0.375 and [w["word"] for w in r["words"]] == r["hypothesis"].split() for r in rows
    )
    assert rows[0]["words"][0] == {"word": "hyp", "start": 0.0, "end": 0.5, "confidence": 0.75}
    assert rows[0]["words"][1]["start"] is None
    assert not list((tmp_path / "spill").iterdir())


def _spilled_by_a_dead_writer(tmp_path: Path, n: int) -> tuple[Path, ErrorStore, CaptureWriter]:
    """A writer that spilled `n` predictions (its store unreachable: a file where the store needs
    a directory) and then died: its thread stops while the store is still down, so it cannot be
    the one that writes the spill later. Returns the store's root, the store and the writer."""
    root = tmp_path / "store"
    store = ErrorStore(root)
    (root / "predictions").write_bytes(b"")
    writer = CaptureWriter(store, tmp_path / "spill", flush_interval_s=0.05, retry_interval_s=3600)
    for i in range(n):
        writer.offer(_prediction(i))
    _wait(lambda: writer.snapshot()["spilled"] == n)
    writer._stop.set()  # no close, nothing flushed
    writer._thread.join()
    return root, store, writer


def test_spill_left_by_a_killed_process_is_written_by_the_next(tmp_path: Path) -> None:
    root, store, _ = _spilled_by_a_dead_writer(tmp_path, 5)
    # a new one starts on the same spill directory, and the store is back
    (root / "predictions").unlink()
    second = CaptureWriter(ErrorStore(root), tmp_path / "spill", flush_interval_s=0.05)
    assert second.snapshot()["spilled"] == 5
    _wait(lambda: second.snapshot()["recovered"] == 5)
    second.close()
    assert store.predictions().num_rows == 5


def test_spilled_audio_and_words_are_readable_by_this_user_alone(tmp_path: Path) -> None:
    """A spill holds users' audio and transcripts: its directory is 0700 (tightened when it was
    left open), each file 0600, and a directory that is a link (in a shared /tmp, anyone's) is
    refused rather than written into."""
    import stat

    from stt_flywheel.errors import StateError

    (tmp_path / "spill").mkdir(mode=0o755)
    os.chmod(tmp_path / "spill", 0o755)
    _, _, writer = _spilled_by_a_dead_writer(tmp_path, 2)
    assert stat.S_IMODE((tmp_path / "spill").stat().st_mode) == 0o700
    (spilled,) = writer._spilled_files()
    assert stat.S_IMODE(spilled.stat().st_mode) == 0o600
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "linked").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(StateError, match="not a directory of this user's"):
        CaptureWriter(ErrorStore(tmp_path / "store2"), tmp_path / "linked")


def test_a_spill_file_another_writer_took_first_is_skipped(tmp_path: Path, monkeypatch) -> None:
    """Two writers on one spill directory: a file gone between listing and reading (the other
    one wrote it) is skipped and the rest are written. Before, `retry_spilled` raised, and in
    the writer thread that ended capture for the process."""
    root, store, writer = _spilled_by_a_dead_writer(tmp_path, 3)
    (root / "predictions").unlink()
    real = writer._spilled_files()
    assert real
    monkeypatch.setattr(
        writer, "_spilled_files", lambda: [tmp_path / "spill" / "spill-0-gone.parquet", *real]
    )
    assert writer.retry_spilled() == 3
    assert writer.snapshot()["recovered"] == 3
    assert store.predictions().num_rows == 3


def test_share_and_overflow_are_counted(tmp_path: Path, monkeypatch) -> None:
    """A store that does not answer while requests come: the writer holds one batch, the queue
    holds five more, and every other selected prediction is counted as dropped, never lost
    without a count. The store waits on an event, so the overflow does not depend on how the
    threads happen to be scheduled."""
    store = ErrorStore(tmp_path / "store")
    answering = threading.Event()
    write = store.write_predictions

    def slow_write(rows):
        answering.wait(30)
        return write(rows)

    monkeypatch.setattr(store, "write_predictions", slow_write)
    writer = CaptureWriter(
        store, tmp_path / "spill", share=0.5, seed=1, batch_size=5, queue_size=5, flush_interval_s=0.05
    )
    first = [writer.offer(_prediction(i)) for i in range(20)]
    _wait(lambda: writer.snapshot()["queued"] >= 1 and writer._queue.qsize() < writer.snapshot()["queued"])
    results = first + [writer.offer(_prediction(i)) for i in range(20, 200)]
    answering.set()
    counters = writer.close()
    assert counters["offered"] == 200
    assert 60 < counters["not_selected"] < 140
    assert counters["dropped_overflow"] >= 200 - counters["not_selected"] - 10
    assert counters["captured"] == sum(results) == store.predictions().num_rows
    assert _balanced(counters)


def test_audio_off_keeps_no_audio(tmp_path: Path) -> None:
    store = ErrorStore(tmp_path / "store")
    writer = CaptureWriter(store, tmp_path / "spill", audio=False)
    writer.offer(_prediction(1))
    writer.close()
    assert store.predictions()["audio_uri"].to_pylist() == [None]
    assert not (tmp_path / "store" / "audio").exists()


@pytest.fixture(params=["local", pytest.param("gcs", marks=pytest.mark.gcs)])
def store_root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(tmp_path / "store") if request.param == "local" else request.getfixturevalue("gcs_bucket")


def test_a_serving_process_captures_and_flushes_on_sigterm(
    base_model_dir: Path, general_utts: list[Utterance], store_root: str, tmp_path: Path
) -> None:
    # a long flush interval: what reaches the store does so because SIGTERM flushed the queue
    settings = CaptureSettings(flush_interval_s=600, batch_size=1000, spill_dir=tmp_path / "spill")
    env = capture_env(store_root, settings, version=4, endpoint="stt", identity=Identity(b"k" * 32))
    server = ServingProcess(str(base_model_dir), env=env, batch=3)
    utts = general_utts[:6]
    audios = [load_audio(u.audio).samples for u in utts]
    try:
        users = ["alice", None, "bob", "alice", "", None]  # the app's ids of who asked; some name none
        answers = server.predict(
            audios, [{"speaker": u.speaker or "", "domain": "general"} for u in utts], users
        )
        health = server.health()
    finally:
        code = server.stop()
    assert code in (0, -signal.SIGTERM), server.log()  # uvicorn re-raises the signal once it has shut down
    assert health["model_version"] == "4" and health["capture"]["queued"] == 6
    assert str(store_root) not in orjson.dumps(health).decode()  # where the store is: not for anyone who asks
    assert [a["model_version"] for a in answers] == [None] * 6  # serving.reveal_version is off
    assert len({a["prediction_id"] for a in answers}) == 6
    store = ErrorStore(store_root)
    stored = {r["prediction_id"]: r for r in store.predictions().to_pylist()}
    assert set(stored) == {a["prediction_id"] for a in answers}
    for answer, utt, audio, user in zip(answers, utts, audios, users, strict=True):
        row = stored[answer["prediction_id"]]
        assert row["user"] == Identity(b"k" * 32).pseudonym(user)  # a keyed hash, or `anonymous`
        assert Identity(b"k" * 32).signed(
            "4", row["prediction_id"], row["user"], row["hypothesis"], row["signature"]
        )
        assert not Identity(b"k" * 32).signed(
            "5", row["prediction_id"], row["user"], row["hypothesis"], row["signature"]
        )
        assert row["hypothesis"] == answer["transcript"]
        # its words and confidence are kept though the request did not ask for them
        assert answer["words"] is None and answer["confidence"] is None
        assert " ".join(w["word"] for w in row["words"]) == row["hypothesis"]
        assert row["confidence"] == pytest.approx(min(w["confidence"] for w in row["words"]), rel=1e-5)
        assert (row["model_version"], row["endpoint"]) == ("4", "stt")
        assert dict(row["metadata"]) == {"speaker": utt.speaker or "", "domain": "general"}
        assert row["duration_s"] == pytest.approx(len(audio) / 16000, abs=1e-3)
        kept = read_uri(row["audio_uri"])
        assert kept == encode_wav(audio)  # the bytes the caller sent
        assert decode_audio(kept).samples.shape == audio.shape
    assert "capture: closed with" in server.log()
    assert "alice" not in server.log() and "bob" not in server.log()


def test_a_serving_process_survives_an_unreachable_store(
    base_model_dir: Path, general_utts: list[Utterance], tmp_path: Path
) -> None:
    root = tmp_path / "store"
    ErrorStore(root)
    (root / "predictions").write_bytes(b"")
    settings = CaptureSettings(flush_interval_s=0.1, retry_interval_s=0.5, spill_dir=tmp_path / "spill")
    server = ServingProcess(
        str(base_model_dir),
        env=capture_env(str(root), settings, version=1, endpoint="stt", identity=Identity(b"k" * 32)),
    )
    audios = [load_audio(u.audio).samples for u in general_utts[:4]]
    try:
        answers = server.predict(audios)  # answered although the store is down
        assert len(answers) == 4
        _wait(lambda: server.health()["capture"]["spilled"] == 4)
        (root / "predictions").unlink()
        _wait(lambda: server.health()["capture"]["recovered"] == 4)
    finally:
        assert server.stop() in (0, -signal.SIGTERM), server.log()
    assert set(ErrorStore(root).predictions()["prediction_id"].to_pylist()) == {
        a["prediction_id"] for a in answers
    }
    assert "spilled" in server.log()
    assert "'recovered': 4" in server.log()  # the counters are in the log as they move


def test_a_serving_container_on_vertex_reads_its_key_from_secret_manager(
    base_model_dir: Path, general_utts: list[Utterance], tmp_path: Path
) -> None:
    """On Vertex AI the model's spec names the key's secret, never the key: the serving process
    reads it from Secret Manager (here the real client library against a local stand-in) and
    captures its users as the same pseudonyms, signed, as every other process makes. Without
    `identity.secret`, registering a version that captures is refused in words."""
    from fakes.secret_manager import running_secret_manager

    from stt_flywheel.config import FlywheelConfig
    from stt_flywheel.config.base import ConfigError
    from stt_flywheel.data.identity import IDENTITY_KEY_ENV, IDENTITY_SECRET_ENV
    from stt_flywheel.deployment.backends import serving_capture

    key = b"s" * 48
    store_root = tmp_path / "store"
    with running_secret_manager() as (fake, url):
        secret = fake.add_version("projects/p/secrets/flywheel-identity", key + b"\n")
        config = FlywheelConfig.model_validate(
            {
                "paths": {"root": str(tmp_path / "state"), "error_store": str(store_root)},
                "deploy": {"backend": "vertex"},
                "capture": {"flush_interval_s": 0.1, "spill_dir": str(tmp_path / "spill")},
                "identity": {"secret": secret, "secret_api_endpoint": url},
            }
        )
        env = serving_capture(config)(3)
        assert env[IDENTITY_SECRET_ENV] == secret and IDENTITY_KEY_ENV not in env
        assert "s" * 16 not in str(env)
        server = ServingProcess(str(base_model_dir), env=env)
        try:
            (answer,) = server.predict([load_audio(general_utts[0].audio).samples], None, ["alice"])
        finally:
            assert server.stop() in (0, -signal.SIGTERM), server.log()
        assert fake.accessed == [secret]
    (row,) = ErrorStore(store_root).predictions().to_pylist()
    identity = Identity(key)
    assert row["prediction_id"] == answer["prediction_id"] and row["user"] == identity.pseudonym("alice")
    assert identity.signed("3", row["prediction_id"], row["user"], row["hypothesis"], row["signature"])
    unkeyed = config.model_copy(update={"identity": config.identity.model_copy(update={"secret": None})})
    with pytest.raises(ConfigError, match="set identity.secret"):
        serving_capture(unkeyed)(3)
