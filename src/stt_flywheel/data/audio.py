"""Audio loading, validation and content hashing.

Every stage that touches audio goes through here, so that "the same utterance" means the same
thing everywhere: a SHA-256 of the decoded 16-bit PCM samples, independent of the container format.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from stt_flywheel.storage.objectstore import read_uri

__all__ = [
    "TARGET_SAMPLE_RATE",
    "AudioProblem",
    "DecodedAudio",
    "audio_hash",
    "decode_audio",
    "encode_wav",
    "load_audio",
    "resample",
    "validate_audio",
]

TARGET_SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class DecodedAudio:
    samples: np.ndarray  # float32 mono in [-1, 1]
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate if self.sample_rate else 0.0


@dataclass(frozen=True)
class AudioProblem:
    """Why a piece of audio is unfit to train or evaluate on; `code` is a stable reason code."""

    code: str
    detail: str


def decode_audio(data: bytes) -> DecodedAudio:
    """Decode WAV/FLAC/OGG bytes to mono float32. Raises `ValueError` when the bytes are not audio."""
    try:
        samples, sample_rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise ValueError(f"audio does not decode: {exc}") from exc
    return DecodedAudio(samples=samples.mean(axis=1).astype(np.float32), sample_rate=int(sample_rate))


def load_audio(uri: str | Path) -> DecodedAudio:
    """Decode an audio file from a path, `file://` or `gs://` URI."""
    return decode_audio(read_uri(uri))


def resample(samples: np.ndarray, from_rate: int, to_rate: int = TARGET_SAMPLE_RATE) -> np.ndarray:
    if from_rate == to_rate:
        return samples.astype(np.float32, copy=False)
    g = np.gcd(from_rate, to_rate)
    return resample_poly(samples, to_rate // g, from_rate // g).astype(np.float32)


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
