"""Capture at serving: every answered request, kept in the error store without slowing the answer.

A request thread only puts the prediction on a bounded queue (`offer` never blocks and never
raises); one writer thread takes batches off it and writes them, audio first (content-addressed),
then one Parquet file of predictions, so a prediction is never visible without its audio. When the
store does not take a batch, the batch is written whole to a local spill directory (temp file +
rename) and retried every `retry_interval_s`, and spill files a killed process left behind are
retried when the next one starts. `close` (on SIGTERM) drains the queue before it returns.

Nothing is lost silently: requests not selected by `share`, predictions dropped because the
queue was full, and spilled predictions are counted, and the counters are in the serving
process's health response and its log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import random
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from stt_flywheel.config import CaptureSettings
from stt_flywheel.data.error_store import ErrorStore
from stt_flywheel.data.error_store.forget import Forgotten, hashed_id, settle
from stt_flywheel.data.identity import ANONYMOUS
from stt_flywheel.data.records import PREDICTION_SCHEMA
from stt_flywheel.storage.files import private_dir

__all__ = ["CaptureCounters", "CaptureWriter", "CapturedPrediction", "forget_spilled"]

log = logging.getLogger("stt_flywheel.capture")

SPILL_SCHEMA = pa.schema(
    [f for f in PREDICTION_SCHEMA if f.name not in ("ingested_at", "audio_uri", "audio_sha256")]
    + [pa.field("audio", pa.binary()), pa.field("audio_ext", pa.string())]
)


@dataclass
class CapturedPrediction:
    prediction_id: str
    predicted_at: datetime
    model_version: str | None
    endpoint: str | None
    hypothesis: str
    metadata: dict[str, str]
    duration_s: float | None
    audio: bytes | None
    audio_ext: str = "wav"
    user: str = ANONYMOUS  # the requester's pseudonym, never the id itself
    signature: str | None = None  # the serving process's (`Identity.sign`)
    confidence: float | None = None  # the utterance's (`models.confidence`)
    words: list[dict[str, Any]] | None = None  # each word with its place and confidence


@dataclass
class CaptureCounters:
    """Every offered prediction is in exactly one of: not_selected, dropped_overflow, queued,
    spilled (waiting in the spill directory), captured (in the store) or forgotten (its user or
    id has a forget request's tombstone: refused at the write, nothing of it kept)."""

    offered: int = 0
    not_selected: int = 0
    dropped_overflow: int = 0
    captured: int = 0
    spilled: int = 0
    recovered: int = 0  # spilled, then written (also counted in captured)
    write_failures: int = 0
    queued: int = 0
    forgotten: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class CaptureWriter:
    def __init__(
        self,
        store: ErrorStore,
        spill_dir: str | Path,
        *,
        share: float = 1.0,
        audio: bool = True,
        batch_size: int = 256,
        flush_interval_s: float = 2.0,
        queue_size: int = 10_000,
        retry_interval_s: float = 10.0,
        seed: int | None = None,
    ) -> None:
        self.store = store
        self.spill_dir = private_dir(spill_dir)  # spilled batches hold users' audio and words
        self.share = share
        self.keep_audio = audio
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.retry_interval_s = retry_interval_s
        self.counters = CaptureCounters(spilled=self._spilled_rows())
        self._queue: queue.Queue[CapturedPrediction] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="capture-writer", daemon=True)
        self._thread.start()

    @classmethod
    def from_settings(
        cls, store: ErrorStore, settings: CaptureSettings, spill_dir: str | Path
    ) -> CaptureWriter:
        """A writer as the `capture.*` settings say (`capture.spill_dir`, when set, wins)."""
        return cls(
            store,
            settings.spill_dir or spill_dir,
            share=settings.share,
            audio=settings.audio,
            batch_size=settings.batch_size,
            flush_interval_s=settings.flush_interval_s,
            queue_size=settings.queue_size,
            retry_interval_s=settings.retry_interval_s,
        )

    # -- request side --------------------------------------------------------------------------

    def offer(self, prediction: CapturedPrediction) -> bool:
        """Queue one prediction for capture; False when it was not selected or the queue was full."""
        with self._lock:
            self.counters.offered += 1
            if self.share < 1.0 and self._rng.random() >= self.share:
                self.counters.not_selected += 1
                return False
            if not self.keep_audio:
                prediction.audio = None
            try:
                self._queue.put_nowait(prediction)
            except queue.Full:
                self.counters.dropped_overflow += 1
                return False
            self.counters.queued += 1
            return True

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return self.counters.as_dict()

    # -- writer side ---------------------------------------------------------------------------

    def _take(self, wait_s: float) -> list[CapturedPrediction]:
        batch: list[CapturedPrediction] = []
        deadline = time.monotonic() + wait_s
        while len(batch) < self.batch_size:
            remaining = deadline - time.monotonic()
            try:
                if remaining > 0:  # in short waits, so that close() is heard at once
                    item = self._queue.get(timeout=min(remaining, 0.1))
                else:
                    item = self._queue.get_nowait()
            except queue.Empty:
                if remaining <= 0 or self._stop.is_set():
                    break
                continue
            batch.append(item)
        return batch

    def _write(self, batch: list[CapturedPrediction]) -> int:
        """Write a batch, audio first; returns how many a forget request's tombstone refused."""
        stones = Forgotten.load(self.store)
        if stones:
            kept = [
                p
                for p in batch
                if p.user not in stones.users and hashed_id(p.prediction_id) not in stones.predictions
            ]
            refused, batch = len(batch) - len(kept), kept
        else:
            refused = 0
        rows = []
        for p in batch:
            audio_uri = sha = None
            if p.audio is not None:
                audio_uri, sha = self.store.put_audio(p.audio, p.audio_ext)
            rows.append(
                {
                    "prediction_id": p.prediction_id,
                    "predicted_at": p.predicted_at,
                    "model_version": p.model_version,
                    "endpoint": p.endpoint,
                    "hypothesis": p.hypothesis,
                    "metadata": p.metadata,
                    "duration_s": p.duration_s,
                    "user": p.user,
                    "signature": p.signature,
                    "confidence": p.confidence,
                    "words": p.words,
                    "audio_uri": audio_uri,
                    "audio_sha256": sha,
                }
            )
        if rows:
            settle(self.store, self.store.write_predictions(rows), stones)
        return refused

    def _spill(self, batch: list[CapturedPrediction]) -> None:
        table = pa.Table.from_pylist(
            [{**asdict(p), "metadata": list(p.metadata.items())} for p in batch], schema=SPILL_SCHEMA
        )
        name = f"spill-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = self.spill_dir / f".{name}.tmp"
        pq.write_table(table, tmp)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.spill_dir / name)

    def _spilled_files(self) -> list[Path]:
        return sorted(self.spill_dir.glob("spill-*.parquet"))

    def _spilled_rows(self) -> int:
        return sum(pq.ParquetFile(p).metadata.num_rows for p in self._spilled_files())

    def _write_or_spill(self, batch: list[CapturedPrediction]) -> None:
        try:
            refused = self._write(batch)
        except Exception as exc:  # noqa: BLE001 -- any store failure: keep the batch locally
            self._spill(batch)
            with self._lock:
                self.counters.queued -= len(batch)
                self.counters.spilled += len(batch)
                self.counters.write_failures += 1
            log.warning("capture: the store did not take %d predictions (%s); spilled", len(batch), exc)
            return
        with self._lock:
            self.counters.queued -= len(batch)
            self.counters.captured += len(batch) - refused
            self.counters.forgotten += refused

    def retry_spilled(self) -> int:
        """Write spilled batches to the store, oldest first; stops at the first failure. A file
        gone before it is read was written by another writer on the same spill directory."""
        done = 0
        for path in self._spilled_files():
            try:
                rows = pq.read_table(path).to_pylist()
            except FileNotFoundError:
                continue
            # a spill file from before users were known has no `user` column: anonymous
            batch = [
                CapturedPrediction(
                    **{**r, "metadata": dict(r["metadata"] or []), "user": r.get("user") or ANONYMOUS}
                )
                for r in rows
            ]
            try:
                refused = self._write(batch)
            except Exception as exc:  # noqa: BLE001 -- still unreachable: try again later
                with self._lock:
                    self.counters.write_failures += 1
                log.warning("capture: %d spilled predictions still not written (%s)", len(batch), exc)
                break
            path.unlink(missing_ok=True)
            done += len(batch)
            with self._lock:
                self.counters.spilled -= len(batch)
                self.counters.recovered += len(batch) - refused
                self.counters.captured += len(batch) - refused
                self.counters.forgotten += refused
        return done

    def _run(self) -> None:
        logged: dict[str, int] = {}
        with contextlib.suppress(OSError, AttributeError):  # Linux: this thread only yields to requests
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        next_retry = time.monotonic()
        while not self._stop.is_set():
            batch = self._take(self.flush_interval_s)
            if batch:
                self._write_or_spill(batch)
            if time.monotonic() >= next_retry:
                if self._spilled_files():
                    self.retry_spilled()
                next_retry = time.monotonic() + self.retry_interval_s
                counters = self.snapshot()
                if counters != logged:  # the counters in the log, when they moved
                    log.info("capture: %s", counters)
                    logged = counters

    def close(self, timeout_s: float = 30.0) -> dict[str, int]:
        """Stop the writer and write (or spill) everything still queued; returns the counters."""
        self._stop.set()
        self._thread.join(timeout_s)
        while batch := self._take(0):
            self._write_or_spill(batch)
        if self._spilled_files():
            self.retry_spilled()
        counters = self.snapshot()
        log.info("capture: closed with %s", counters)
        return counters

    def describe(self) -> dict[str, Any]:
        # not where the store is: health is answered to anyone who can reach the service
        return {"share": self.share, "audio": self.keep_audio, **self.snapshot()}


def forget_spilled(spill_dir: Path, stones: Forgotten) -> int:
    """Rewrite the spilled batches in `spill_dir` without the predictions a tombstone covers (new
    file first, then the old one; a writer replaying the old one meanwhile refuses them anyway).
    How many were dropped."""
    dropped = 0
    if not stones or not spill_dir.is_dir():
        return 0
    for path in sorted(spill_dir.glob("spill-*.parquet")):
        try:
            table = pq.read_table(path)
        except FileNotFoundError:  # replayed meanwhile
            continue
        users = table["user"] if "user" in table.column_names else pa.nulls(table.num_rows, pa.string())
        covered = stones.covers(table["prediction_id"].combine_chunks(), users)
        n = pc.sum(covered).as_py() or 0
        if not n:
            continue
        dropped += n
        if n < table.num_rows:
            tmp = path.with_name(f".{path.stem}-f.parquet.tmp")
            pq.write_table(table.filter(pc.invert(covered)), tmp)
            os.chmod(tmp, 0o600)
            os.replace(tmp, path.with_name(f"{path.stem}-f.parquet"))
        path.unlink(missing_ok=True)
    return dropped
