"""The client for a team that keeps its own serving stack: capture what it served, send feedback.

    from stt_flywheel.client import FlywheelClient

    with FlywheelClient.from_config("flywheel.yaml", model_version="7") as flywheel:
        pid = flywheel.capture(audio_bytes, transcript, user="u-123")   # answer the caller with pid
        ...
        flywheel.feedback(pid, corrected_text="what they meant", user="u-123")

`capture` keeps the serving process's guarantees: it checks the audio with the decoder serving and
the dataset use (any format they take) and the metadata against `serving.*` limits, then queues
the prediction for the capture writer, which batches it into the error store, spills to a local
directory when the store does not take it and writes the spill later, and drains at `close` (and
at interpreter exit). Users are stored as pseudonyms under the identity key, and each prediction
is signed with it, as a serving process signs: hold the key only where serving is trusted.

`feedback` queues an event the same way: to the feedback service (`feedback_url`, with a bearer
key; the service names the source) or straight into the store through `ingest_feedback`. Events
that cannot be sent wait in the spill directory as JSON lines and are sent again.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import queue
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from stt_flywheel.config import FlywheelConfig, ServingLimits, load_config
from stt_flywheel.data.capture import CapturedPrediction, CaptureWriter
from stt_flywheel.data.decode import AudioDecodeError, decode_audio
from stt_flywheel.data.error_store import ErrorStore, open_error_store
from stt_flywheel.data.identity import ANONYMOUS, Identity, load_identity
from stt_flywheel.data.records import new_prediction_id
from stt_flywheel.errors import InputError
from stt_flywheel.storage.files import atomic_write_bytes, private_dir

__all__ = ["FeedbackSender", "FlywheelClient"]

log = logging.getLogger("stt_flywheel.client")


class FeedbackSender:
    """Feedback events on a bounded queue, sent in batches by one thread by `send`; a batch that
    is not taken is written to `spill_dir` (temp file + rename) and sent again later, oldest first.
    `close` sends what is queued and tries the spilled once more."""

    def __init__(
        self,
        send: Callable[[list[dict[str, Any]]], None],
        spill_dir: str | Path,
        *,
        batch_size: int = 200,
        flush_interval_s: float = 1.0,
        retry_interval_s: float = 10.0,
        queue_size: int = 10_000,
    ) -> None:
        self.send = send
        self.spill_dir = private_dir(spill_dir)
        self.batch_size, self.flush_interval_s, self.retry_interval_s = (
            batch_size,
            flush_interval_s,
            retry_interval_s,
        )
        waiting = sum(p.read_bytes().count(b"\n") for p in self.spill_dir.glob("feedback-*.jsonl"))
        self.counters = {"queued": 0, "sent": 0, "spilled": waiting, "dropped_overflow": 0}
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feedback-sender", daemon=True)
        self._thread.start()

    def offer(self, event: dict[str, Any]) -> bool:
        with self._lock:
            try:
                self._queue.put_nowait(event)
            except queue.Full:
                self.counters["dropped_overflow"] += 1
                return False
            self.counters["queued"] += 1
            return True

    def _take(self, wait_s: float) -> list[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        deadline = time.monotonic() + wait_s
        while len(batch) < self.batch_size:
            try:
                batch.append(self._queue.get(timeout=max(0.0, min(deadline - time.monotonic(), 0.1))))
            except queue.Empty:
                if time.monotonic() >= deadline or self._stop.is_set():
                    break
        return batch

    def _send_or_spill(self, batch: list[dict[str, Any]]) -> None:
        try:
            self.send(batch)
        except Exception as exc:  # noqa: BLE001 -- not taken now: keep it on disk
            name = f"feedback-{time.time_ns()}-{uuid.uuid4().hex[:8]}.jsonl"
            atomic_write_bytes(self.spill_dir / name, b"".join(orjson.dumps(e) + b"\n" for e in batch))
            with self._lock:
                self.counters["queued"] -= len(batch)
                self.counters["spilled"] += len(batch)
            log.warning("feedback: %d events not taken (%s); spilled", len(batch), exc)
            return
        with self._lock:
            self.counters["queued"] -= len(batch)
            self.counters["sent"] += len(batch)

    def retry_spilled(self) -> int:
        done = 0
        for path in sorted(self.spill_dir.glob("feedback-*.jsonl")):
            try:
                batch = [orjson.loads(line) for line in path.read_bytes().splitlines() if line]
            except FileNotFoundError:  # another sender on this directory sent it
                continue
            try:
                self.send(batch)
            except Exception as exc:  # noqa: BLE001 -- still not taken: later
                log.warning("feedback: %d spilled events still not taken (%s)", len(batch), exc)
                break
            path.unlink(missing_ok=True)
            done += len(batch)
            with self._lock:
                self.counters["spilled"] -= len(batch)
                self.counters["sent"] += len(batch)
        return done

    def _run(self) -> None:
        next_retry = time.monotonic()
        while not self._stop.is_set():
            if batch := self._take(self.flush_interval_s):
                self._send_or_spill(batch)
            if time.monotonic() >= next_retry:
                self.retry_spilled()
                next_retry = time.monotonic() + self.retry_interval_s

    def close(self, timeout_s: float = 30.0) -> dict[str, int]:
        self._stop.set()
        self._thread.join(timeout_s)
        while batch := self._take(0):
            self._send_or_spill(batch)
        self.retry_spilled()
        with self._lock:
            return dict(self.counters)


def _to_service(url: str, key: str | None, timeout_s: float = 10.0) -> Callable[[list[dict[str, Any]]], None]:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    client = httpx.Client(timeout=timeout_s, headers=headers)

    def send(batch: list[dict[str, Any]]) -> None:
        response = client.post(url.rstrip("/") + "/v1/feedback", content=orjson.dumps({"events": batch}))
        if response.status_code >= 500 or response.status_code in (401, 403, 408, 429):
            raise RuntimeError(f"the feedback service answered {response.status_code}")  # send again
        if response.status_code >= 400:  # the batch itself is wrong: sending it again cannot help
            log.error("feedback: the service refused %d events: %s", len(batch), response.text[:200])

    return send


def _to_store(store: ErrorStore) -> Callable[[list[dict[str, Any]]], None]:
    def send(batch: list[dict[str, Any]]) -> None:
        store.ingest_feedback(batch)

    return send


def _default_spill() -> Path:
    """This user's spill directory when neither the caller nor `capture.spill_dir` names one."""
    return Path(tempfile.gettempdir()) / f"stt-flywheel-client-{os.getuid()}"


class FlywheelClient:
    def __init__(
        self,
        store: ErrorStore,
        identity: Identity | None,
        *,
        model_version: str,
        endpoint: str | None = None,
        limits: ServingLimits | None = None,
        spill_dir: str | Path | None = None,
        feedback_url: str | None = None,
        feedback_key: str | None = None,
        source: str = "app",
        writer: CaptureWriter | None = None,
    ) -> None:
        spill = Path(spill_dir or _default_spill())
        self.identity, self.limits = identity, limits or ServingLimits()
        self.model_version, self.endpoint, self.source = model_version, endpoint, source
        self.writer = writer or CaptureWriter(store, spill / "capture")
        self._direct = feedback_url is None
        send = _to_service(feedback_url, feedback_key) if feedback_url else _to_store(store)
        self.sender = FeedbackSender(send, spill / "feedback")
        self._closed = False
        atexit.register(self.close)

    @classmethod
    def from_config(
        cls,
        config: FlywheelConfig | str | Path,
        *,
        model_version: str,
        feedback_url: str | None = None,
        feedback_key: str | None = None,
        spill_dir: str | Path | None = None,
    ) -> FlywheelClient:
        """A client for the config's error store, capture settings, limits and identity key."""
        cfg = config if isinstance(config, FlywheelConfig) else load_config(config)
        store = open_error_store(cfg)
        spill = Path(spill_dir or cfg.capture.spill_dir or _default_spill())
        return cls(
            store,
            load_identity(cfg.paths.root, settings=cfg.identity),
            model_version=model_version,
            endpoint=cfg.deploy.endpoint_name,
            limits=cfg.serving,
            spill_dir=spill,
            feedback_url=feedback_url,
            feedback_key=feedback_key,
            writer=CaptureWriter.from_settings(store, cfg.capture, spill / "capture"),
        )

    def capture(
        self,
        audio: bytes,
        transcript: str,
        *,
        user: str | None = None,
        metadata: dict[str, str] | None = None,
        predicted_at: datetime | None = None,
    ) -> str:
        """Queue what the model heard in `audio` for the error store; returns the prediction id
        to give the caller (feedback names it). Raises `InputError` for audio that does not decode
        or is too long, or metadata beyond `serving.*` limits: what serving would refuse."""
        try:
            decoded = decode_audio(audio, max_duration_s=self.limits.max_audio_s)
        except AudioDecodeError as exc:
            raise InputError(f"capture: {exc.detail}") from None
        metadata = dict(metadata or {})
        if problem := self.limits.metadata_problem(metadata):
            raise InputError(f"capture: {problem}")
        when = predicted_at or datetime.now(UTC)
        pid = new_prediction_id(when)
        who = self.identity.pseudonym(user) if self.identity else ANONYMOUS
        signature = self.identity.sign(self.model_version, pid, who, transcript) if self.identity else None
        self.writer.offer(
            CapturedPrediction(
                prediction_id=pid,
                predicted_at=when,
                model_version=self.model_version,
                endpoint=self.endpoint,
                hypothesis=transcript,
                metadata=metadata,
                duration_s=decoded.duration_s,
                audio=audio,
                audio_ext=decoded.extension,
                user=who,
                signature=signature,
            )
        )
        return pid

    def feedback(
        self,
        prediction_id: str,
        *,
        corrected_text: str | None = None,
        flagged: bool = False,
        user: str | None = None,
        event_time: datetime | None = None,
    ) -> None:
        """Queue a user's correction (or flag) of a prediction; it is checked where it lands (the
        service or the store), and quarantined there with its reason if it is wrong."""
        if corrected_text is None and not flagged:
            raise InputError("feedback: give corrected_text, or flagged=True")
        event: dict[str, Any] = {
            "prediction_id": prediction_id,
            "corrected_text": corrected_text,
            "flagged": flagged,
            "event_time": (event_time or datetime.now(UTC)).isoformat(),
            "user": user,
        }
        if self._direct:  # the service names the source itself: the caller it authenticated
            event["source"] = self.source
        self.sender.offer(event)

    def close(self) -> dict[str, dict[str, int]]:
        """Write and send everything queued (spilling what is not taken); returns the counters."""
        if self._closed:
            return {}
        self._closed = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)
        return {"capture": self.writer.close(), "feedback": self.sender.close()}

    def __enter__(self) -> FlywheelClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
