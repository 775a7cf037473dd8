"""Audio loading, validation and content hashing.

Every stage that touches audio goes through here, so that "the same utterance" means the same
thing everywhere: a SHA-256 of the decoded 16-bit PCM samples, independent of the container format.
Decoding itself (every container and codec users record in) is `stt_flywheel.data.decode`.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf
import soxr

from stt_flywheel.data.decode import AudioDecodeError, DecodedAudio, decode_audio
from stt_flywheel.storage.objectstore import join_uri, read_uri

if TYPE_CHECKING:
    from stt_flywheel.config import DatasetSettings

__all__ = [
    "TARGET_SAMPLE_RATE",
    "AudioLimits",
    "AudioProblem",
    "AudioDecodeError",
    "AudioRejected",
    "DecodedAudio",
    "at_rate",
    "audio_hash",
    "decode_audio",
    "encode_wav",
    "load_audio",
    "read_audio_bytes",
    "read_training_audio",
    "resample",
    "validate_audio",
]

TARGET_SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class AudioProblem:
    """Why a piece of audio is unfit to train or evaluate on; `code` is a stable reason code."""

    code: str
    detail: str


class AudioRejected(Exception):
    """One record's audio cannot be used; `code` is its quarantine reason."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class AudioLimits:
    """Where training audio may come from and how much of it one record may cost.

    `roots` are local directories (compared after resolving symlinks) and `gs://bucket/prefix`
    prefixes; nothing outside them is opened. `max_bytes` caps a file before it is read;
    `max_duration_s` is checked against the header before any sample is decoded, so a forged
    header cannot make the decoder allocate more than the duration allows."""

    roots: tuple[str, ...]
    max_bytes: int = 50_000_000
    max_duration_s: float = 30.0
    timeout_s: float = 30.0

    @classmethod
    def of(cls, store_root: str, settings: DatasetSettings) -> AudioLimits:
        """The configured limits: a record's audio lies in the store or under `dataset.audio_roots`."""
        roots = (join_uri(store_root, "audio"), *settings.audio_roots)
        return cls(roots, settings.max_audio_bytes, settings.max_duration_s, settings.audio_read_timeout_s)


def _inside_roots(uri: str, roots: tuple[str, ...]) -> bool:
    if uri.startswith("gs://"):
        if "/../" in uri + "/" or "/./" in uri + "/":
            return False
        return any(uri.startswith(r.rstrip("/") + "/") for r in roots if r.startswith("gs://"))
    if "://" in uri:  # file:// and any other scheme: never
        return False
    real = os.path.realpath(uri)
    for root in roots:
        if root.startswith("gs://"):
            continue
        base = os.path.realpath(root)
        if os.path.commonpath([real, base]) == base:
            return True
    return False


def _read_bounded(uri: str, limits: AudioLimits) -> bytes:
    if uri.startswith("gs://"):
        from stt_flywheel.errors import InputNotFound
        from stt_flywheel.storage.objectstore import ObjectTooLarge, read_gcs_bounded

        try:
            return read_gcs_bounded(uri, limits.max_bytes, limits.timeout_s)
        except InputNotFound:
            raise AudioRejected("audio_missing", f"no audio at {uri}") from None
        except ObjectTooLarge as exc:
            raise AudioRejected("audio_too_large", str(exc)) from None
        except Exception as exc:  # transport errors and timeouts after the client's own retries
            raise AudioRejected("audio_unreadable", f"{uri}: {type(exc).__name__}: {exc}") from None
    try:
        info = os.stat(os.path.realpath(uri))
    except FileNotFoundError:
        raise AudioRejected("audio_missing", f"no audio at {uri}") from None
    except OSError as exc:  # a name too long, a loop of links, no permission
        raise AudioRejected("audio_unreadable", f"{uri}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):  # a directory, a FIFO (would block), a device like /dev/zero
        raise AudioRejected("audio_not_a_file", f"{uri} is not a regular file")
    if info.st_size > limits.max_bytes:
        raise AudioRejected("audio_too_large", f"{info.st_size} bytes > {limits.max_bytes}")
    try:
        with open(os.path.realpath(uri), "rb") as fh:
            data = fh.read(limits.max_bytes + 1)
    except OSError as exc:
        raise AudioRejected("audio_unreadable", f"{uri}: {exc.strerror or exc}") from None
    if len(data) > limits.max_bytes:  # it grew since the stat
        raise AudioRejected("audio_too_large", f"more than {limits.max_bytes} bytes")
    return data


def read_audio_bytes(uri: str, limits: AudioLimits) -> bytes:
    """One record's audio file as stored, if it lies under `limits.roots` and within
    `limits.max_bytes`; else `AudioRejected` with the reason (what `stt-flywheel ui` plays)."""
    if not _inside_roots(uri, limits.roots):
        raise AudioRejected("audio_outside_roots", f"{uri} is not under the store or dataset.audio_roots")
    return _read_bounded(uri, limits)


def read_training_audio(uri: str, limits: AudioLimits) -> DecodedAudio:
    """Decode one record's audio within `limits`, or raise `AudioRejected` with the reason; never
    anything else, so one poison record is one quarantine entry, not a failed stage."""
    if not _inside_roots(uri, limits.roots):
        raise AudioRejected("audio_outside_roots", f"{uri} is not under dataset.audio_roots")
    data = _read_bounded(uri, limits)
    try:
        return decode_audio(data, max_duration_s=limits.max_duration_s)
    except AudioDecodeError as exc:
        raise AudioRejected(exc.code, exc.detail) from None


def load_audio(uri: str | Path, sample_rate: int | None = TARGET_SAMPLE_RATE) -> DecodedAudio:
    """Decode an audio file from a path, `file://` or `gs://` URI, at `sample_rate` (None: its own)."""
    audio = decode_audio(read_uri(uri))
    return audio if sample_rate is None else at_rate(audio, sample_rate)


def at_rate(audio: DecodedAudio, sample_rate: int = TARGET_SAMPLE_RATE) -> DecodedAudio:
    """The same audio at `sample_rate`: what a model hears, whatever rate the user recorded at."""
    if audio.sample_rate == sample_rate:
        return audio
    samples = resample(audio.samples, audio.sample_rate, sample_rate)
    return DecodedAudio(samples=samples, sample_rate=sample_rate, container=audio.container)


def resample(samples: np.ndarray, from_rate: int, to_rate: int = TARGET_SAMPLE_RATE) -> np.ndarray:
    """Mono float32 at `to_rate` (soxr, high quality)."""
    if from_rate == to_rate:
        return samples.astype(np.float32, copy=False)
    return soxr.resample(np.ascontiguousarray(samples, dtype=np.float32), from_rate, to_rate, quality="HQ")


def encode_wav(samples: np.ndarray, sample_rate: int = TARGET_SAMPLE_RATE) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def audio_hash(samples: np.ndarray) -> str:
    """Content hash of the samples as 16-bit PCM, so re-encoding a file does not change it."""
    pcm = np.clip(np.round(samples * 32768.0), -32768, 32767).astype("<i2")
    return hashlib.sha256(pcm.tobytes()).hexdigest()


def validate_audio(
    audio: DecodedAudio,
    *,
    sample_rate: int = TARGET_SAMPLE_RATE,
    min_duration_s: float = 0.3,
    max_duration_s: float = 30.0,
) -> AudioProblem | None:
    """Return the first problem that makes this audio unusable, or None."""
    if audio.sample_rate != sample_rate:
        return AudioProblem("sample_rate", f"{audio.sample_rate} Hz, expected {sample_rate} Hz")
    if len(audio.samples) == 0:
        return AudioProblem("empty_audio", "no samples")
    if not np.isfinite(audio.samples).all():
        return AudioProblem("non_finite_audio", "NaN or infinite samples")
    duration = audio.duration_s
    if duration < min_duration_s:
        return AudioProblem("too_short", f"{duration:.2f} s < {min_duration_s} s")
    if duration > max_duration_s:
        return AudioProblem("too_long", f"{duration:.2f} s > {max_duration_s} s")
    if float(np.max(np.abs(audio.samples))) < 1e-4:
        return AudioProblem("silent_audio", "peak amplitude below -80 dBFS")
    return None
