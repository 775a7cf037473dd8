import io

import numpy as np
import pytest
import soundfile as sf

from stt_flywheel.data.audio import DecodedAudio, audio_hash, decode_audio, load_audio, validate_audio
from stt_flywheel.data.manifest import Utterance


def _tone(seconds: float, rate: int = 16_000, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


PROBLEM_CASES = [
    (_tone(1.0), 16_000, None),
    (_tone(1.0, 8_000), 8_000, "sample_rate"),
    (_tone(0.1), 16_000, "too_short"),
    (_tone(31.0), 16_000, "too_long"),
    (np.zeros(16_000, dtype=np.float32), 16_000, "silent_audio"),
    (np.array([], dtype=np.float32), 16_000, "empty_audio"),
]


@pytest.mark.parametrize(("samples", "rate", "code"), PROBLEM_CASES)
def test_validate_audio(samples: np.ndarray, rate: int, code: str | None) -> None:
    problem = validate_audio(DecodedAudio(samples, rate))
    assert (problem.code if problem else None) == code


def test_hash_ignores_container_format(general_utts: list[Utterance]) -> None:
    audio = load_audio(general_utts[0].audio)
    flac = io.BytesIO()
    sf.write(flac, audio.samples, audio.sample_rate, format="FLAC", subtype="PCM_16")
    again = decode_audio(flac.getvalue())
    assert audio_hash(again.samples) == audio_hash(audio.samples) == general_utts[0].audio_sha256


def test_synthesised_speech_is_valid(general_utts: list[Utterance]) -> None:
    for utt in general_utts:
        audio = load_audio(utt.audio)
        assert validate_audio(audio) is None
        assert audio.sample_rate == 16_000
        assert 0.5 < audio.duration_s < 10
