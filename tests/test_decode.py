"""Users' audio in every format serving, the dataset and the client take: a corpus the tests make
with PyAV from synthesised speech, the same words heard in each, and hostile files refused."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from stt_flywheel.data.audio import load_audio, resample
from stt_flywheel.data.decode import (
    ENCODINGS,
    AudioDecodeError,
    DecodedAudio,
    decode_audio,
    encode_audio,
    probe_audio,
)
from stt_flywheel.data.manifest import Utterance
from stt_flywheel.models import SpeechModel
from stt_flywheel.scoring.corpus import score_corpus

TELEPHONE = {"wav-mulaw", "wav-alaw"}  # 8 kHz: compared with PCM at the same bandwidth
WIDEBAND = [e for e in ENCODINGS if e not in TELEPHONE]


def _speech(utts: list[Utterance], n: int = 6) -> list[np.ndarray]:
    return [load_audio(u.audio).samples for u in utts[:n]]


def _heard(model: SpeechModel, files: list[bytes]) -> list[str]:
    audios = []
    for data in files:
        decoded = decode_audio(data)
        audios.append(resample(decoded.samples, decoded.sample_rate))
    return model.transcribe(audios)


def _cer(refs: list[str], hyps: list[str]) -> float:
    return score_corpus(refs, hyps, per_utterance=False)[0].cer


@pytest.mark.parametrize("encoding", WIDEBAND)
def test_wideband_formats_are_heard_as_the_wav_is(
    encoding: str, general_utts: list[Utterance], base_model: SpeechModel
) -> None:
    """Stereo files of the same speech, in each format: the model hears the same words."""
    speech = _speech(general_utts)
    wav = _heard(base_model, [encode_audio(s, 16_000, "wav") for s in speech])
    other = _heard(base_model, [encode_audio(s, 16_000, encoding, channels=2) for s in speech])
    assert _cer(wav, other) <= 0.05, list(zip(wav, other, strict=True))


@pytest.mark.parametrize("encoding", sorted(TELEPHONE))
def test_telephone_codecs_keep_the_signal_and_the_words(
    encoding: str, general_utts: list[Utterance], base_model: SpeechModel
) -> None:
    """μ-law and A-law at 8 kHz against linear PCM at 8 kHz: the companding costs little of the
    signal (a model trained on 16 kHz speech loses words to the bandwidth, not to the codec)."""
    speech = _speech(general_utts)
    pcm = [resample(s, 16_000, 8_000) for s in speech]
    narrow = [resample(p, 8_000, 16_000) for p in pcm]
    files = [encode_audio(p, 8_000, encoding) for p in pcm]
    for data, p in zip(files, pcm, strict=True):
        decoded = decode_audio(data)
        assert (decoded.sample_rate, decoded.container, len(decoded.samples)) == (8_000, "wav", len(p))
        snr_db = 10 * np.log10(np.sum(p**2) / np.sum((decoded.samples - p) ** 2))
        assert snr_db > 30, snr_db
    assert _cer(base_model.transcribe(narrow), _heard(base_model, files)) <= 0.25


@pytest.mark.parametrize("encoding", ["wav", "flac"])
def test_lossless_formats_decode_exactly_and_mix_channels_down(encoding: str) -> None:
    rng = np.random.default_rng(0)
    left = np.round(rng.uniform(-0.5, 0.5, 16_000) * 32768) / 32768
    out = io.BytesIO()
    with av.open(out, "w", format=ENCODINGS[encoding][0]) as container:
        stream = container.add_stream(ENCODINGS[encoding][1], rate=16_000, layout="stereo")
        frame = av.AudioFrame.from_ndarray(
            np.stack([left, -left / 2]).astype(np.float32), format="fltp", layout="stereo"
        )
        frame.rate = 16_000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    decoded = decode_audio(out.getvalue())
    np.testing.assert_allclose(decoded.samples, ((left - left / 2) / 2).astype(np.float32), atol=1 / 32768)
    assert probe_audio(out.getvalue()).channels == 2


def _corruptions(data: bytes) -> dict[str, bytes]:
    rng = np.random.default_rng(1)
    body = bytearray(data)
    body[64:] = rng.integers(0, 256, len(body) - 64, dtype=np.uint8).tobytes()
    flipped = bytearray(data)
    for i in rng.integers(0, len(data), 40):
        flipped[i] ^= 0xFF
    return {
        "empty": b"",
        "header only": data[:64],
        "cut in half": data[: len(data) // 2],
        "random body": bytes(body),
        "bits flipped": bytes(flipped),
        "random bytes": rng.integers(0, 256, len(data), dtype=np.uint8).tobytes(),
    }


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_a_corrupt_file_in_each_format_decodes_or_is_refused_clearly(encoding: str) -> None:
    """Never another exception: what decodes is finite audio within the limit, what does not is
    an `AudioDecodeError` with a reason code and a message that quotes no bytes."""
    tone = (0.3 * np.sin(np.arange(32_000) / 5)).astype(np.float32)
    for name, data in _corruptions(encode_audio(tone, 16_000, encoding)).items():
        try:
            decoded = decode_audio(data, max_duration_s=5.0)
        except AudioDecodeError as exc:
            assert exc.code in {"audio_undecodable", "too_long"}, (name, exc.code)
            assert "\\x" not in str(exc) and len(str(exc)) < 200, (name, str(exc))
        else:
            assert isinstance(decoded, DecodedAudio), name
            assert decoded.duration_s <= 5.0 + 0.1, name


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_too_long_by_the_header_is_refused_before_decoding(encoding: str) -> None:
    tone = (0.3 * np.sin(np.arange(16_000 * 40) / 5)).astype(np.float32)
    data = encode_audio(tone, 16_000, encoding)
    assert probe_audio(data).duration_s == pytest.approx(40, abs=0.2)
    with pytest.raises(AudioDecodeError, match="by its header") as caught:
        decode_audio(data, max_duration_s=30)
    assert caught.value.code == "too_long"


def test_a_stream_with_no_duration_is_cut_off_at_the_limit_while_decoding() -> None:
    tone = (0.3 * np.sin(np.arange(16_000 * 40) / 5)).astype(np.float32)
    data = encode_audio(tone, 16_000, "webm-opus", live=True)
    assert probe_audio(data).duration_s is None
    assert decode_audio(data).duration_s == pytest.approx(40, abs=0.1)
    with pytest.raises(AudioDecodeError, match="once decoded") as caught:
        decode_audio(data, max_duration_s=2)
    assert caught.value.code == "too_long"


@pytest.mark.parametrize(
    "playlist",
    [
        b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n/etc/hostname\n#EXT-X-ENDLIST\n",
        b"ffconcat version 1.0\nfile '/etc/hostname'\n",
        b"<?xml version='1.0'?><MPD><Period><AdaptationSet/></Period></MPD>",
    ],
)
def test_containers_that_name_other_files_are_not_opened(playlist: bytes) -> None:
    with pytest.raises(AudioDecodeError) as caught:
        decode_audio(playlist)
    assert caught.value.code == "audio_undecodable"


def test_a_file_without_audio_is_refused() -> None:
    out = io.BytesIO()
    with av.open(out, "w", format="webm") as container:
        stream = container.add_stream("libvpx", rate=1) if "libvpx" in av.codecs_available else None
        if stream is None:
            pytest.skip("no video encoder in this FFmpeg")
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    with pytest.raises(AudioDecodeError, match="no audio stream"):
        decode_audio(out.getvalue())
