"""Offline speech synthesis with espeak-ng, for the demo world and the tests."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

import numpy as np

from stt_flywheel.data.audio import TARGET_SAMPLE_RATE, decode_audio, resample
from stt_flywheel.errors import StateError

__all__ = ["Voice", "VOICES", "EspeakNotFound", "synthesize"]


class EspeakNotFound(StateError):
    pass


@dataclass(frozen=True)
class Voice:
    """An espeak-ng voice with its prosody: `name` like 'en-us+m3', speed in words/min, pitch 0-99."""

    name: str
    speed: int = 160
    pitch: int = 50

    @property
    def key(self) -> str:
        return f"{self.name}/s{self.speed}/p{self.pitch}"


VOICES: tuple[str, ...] = (
    "en-us",
    "en-us+m3",
    "en-us+f2",
    "en-gb",
    "en-gb+m2",
    "en-gb+f3",
    "en-gb-x-rp",
    "en-us+m7",
    "en-gb-scotland",
    "en-us+f4",
)


def synthesize(text: str, voice: Voice) -> np.ndarray:
    """Speak `text` and return float32 mono samples at 16 kHz."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise EspeakNotFound("espeak-ng is not installed (apt-get install espeak-ng)")
    proc = subprocess.run(
        [exe, "-v", voice.name, "-s", str(voice.speed), "-p", str(voice.pitch), "--stdout", text],
        capture_output=True,
        check=True,
    )
    audio = decode_audio(proc.stdout)
    samples = resample(audio.samples, audio.sample_rate, TARGET_SAMPLE_RATE)
    peak = float(np.max(np.abs(samples))) or 1.0
    return (samples / peak * 0.9).astype(np.float32)
