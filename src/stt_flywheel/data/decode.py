"""Decoding the audio users' devices record, with PyAV (FFmpeg inside the wheel), within limits.

Browsers record WebM/Opus, phones M4A/AAC, call centres 8 kHz μ-law or A-law WAV, many apps MP3;
serving, the dataset stage and the client all decode through `decode_audio` here, so a file one
of them takes the others take too.

The bytes are untrusted. FFmpeg is asked to recognise only the containers and codecs below
(`format_whitelist`, `codec_whitelist`), which also keeps out demuxers that would open other files
or URLs (HLS playlists, concat lists). The duration a header claims is checked before anything is
decoded, and the samples are counted as they come, so a header that lies (or a stream with no
duration, as MediaRecorder writes) still cannot make the decoder hold more than the limit allows.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction
from typing import cast

import av
import numpy as np

__all__ = [
    "CODECS",
    "CONTAINERS",
    "AudioDecodeError",
    "AudioHeader",
    "DecodedAudio",
    "ENCODINGS",
    "EXTENSIONS",
    "FORMATS_IN_WORDS",
    "decode_audio",
    "encode_audio",
    "probe_audio",
]

#: FFmpeg demuxer names: WAV, FLAC, OGG, WebM/Matroska, MP4/M4A, MP3, raw AAC (ADTS).
CONTAINERS = ("wav", "flac", "ogg", "matroska,webm", "mov,mp4,m4a,3gp,3g2,mj2", "mp3", "aac")
#: FFmpeg decoder names: PCM in its usual widths, μ-law and A-law, FLAC, Vorbis, Opus, AAC, MP3.
CODECS = (
    "pcm_u8",
    "pcm_s16le",
    "pcm_s16be",
    "pcm_s24le",
    "pcm_s32le",
    "pcm_f32le",
    "pcm_f64le",
    "pcm_mulaw",
    "pcm_alaw",
    "flac",
    "vorbis",
    "opus",
    "libopus",
    "aac",
    "mp3",
    "mp3float",
)
#: What a person reads when their file is refused.
FORMATS_IN_WORDS = "WAV (PCM, μ-law, A-law), FLAC, OGG (Vorbis, Opus), WebM/Opus, M4A/AAC or MP3"

#: What `encode_audio` writes: name -> (FFmpeg muxer, encoder, sample rate it is written at).
ENCODINGS: dict[str, tuple[str, str, int]] = {
    "wav": ("wav", "pcm_s16le", 16_000),
    "wav-mulaw": ("wav", "pcm_mulaw", 8_000),
    "wav-alaw": ("wav", "pcm_alaw", 8_000),
    "flac": ("flac", "flac", 16_000),
    "ogg-opus": ("ogg", "libopus", 48_000),
    "webm-opus": ("webm", "libopus", 48_000),
    "m4a-aac": ("mp4", "aac", 44_100),
    "mp3": ("mp3", "libmp3lame", 22_050),
}

_OPTIONS = {"format_whitelist": ",".join(CONTAINERS), "codec_whitelist": ",".join(CODECS)}


#: The file extension the error store keeps each container's bytes under.
EXTENSIONS = {
    "wav": "wav",
    "flac": "flac",
    "ogg": "ogg",
    "matroska,webm": "webm",
    "mov,mp4,m4a,3gp,3g2,mj2": "m4a",
    "mp3": "mp3",
    "aac": "aac",
}


@dataclass(frozen=True)
class DecodedAudio:
    samples: np.ndarray  # float32 mono in [-1, 1]
    sample_rate: int
    container: str = "wav"  # the FFmpeg demuxer that read it

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate if self.sample_rate else 0.0

    @property
    def extension(self) -> str:
        return EXTENSIONS.get(self.container, "bin")


@dataclass(frozen=True)
class AudioHeader:
    """What the container says before a sample is decoded; `duration_s` is None when it does not
    say (a live WebM recording)."""

    container: str
    codec: str
    sample_rate: int
    channels: int
    duration_s: float | None


class AudioDecodeError(ValueError):
    """The bytes are not audio this decoder takes (`code` "audio_undecodable"), or are longer than
    allowed (`code` "too_long"). The message never quotes the bytes."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def _open(data: bytes) -> av.container.InputContainer:
    if not data:
        raise AudioDecodeError("audio_undecodable", "no bytes")
    try:
        return av.open(io.BytesIO(data), mode="r", options=_OPTIONS, metadata_errors="ignore")
    except Exception:  # FFmpeg's errors name the buffer, not the problem; say what is accepted
        raise AudioDecodeError("audio_undecodable", f"not audio in {FORMATS_IN_WORDS}") from None


def _header(container: av.container.InputContainer) -> tuple[av.audio.stream.AudioStream, AudioHeader]:
    if not container.streams.audio:
        raise AudioDecodeError("audio_undecodable", f"no audio stream in the {container.format.name} file")
    stream = container.streams.audio[0]
    ctx = stream.codec_context
    rate, channels = int(ctx.sample_rate or 0), int(ctx.channels or 0)
    if rate <= 0 or channels <= 0:
        raise AudioDecodeError("audio_undecodable", f"{rate} Hz, {channels} channels")
    duration: float | None = None
    if stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    elif container.duration:
        duration = container.duration / av.time_base
    header = AudioHeader(
        container=container.format.name,
        codec=ctx.name,
        sample_rate=rate,
        channels=channels,
        duration_s=duration,
    )
    return stream, header


def probe_audio(data: bytes) -> AudioHeader:
    """The header of `data`, or `AudioDecodeError`; decodes nothing."""
    container = _open(data)
    try:
        return _header(container)[1]
    finally:
        container.close()


def decode_audio(data: bytes, *, max_duration_s: float | None = None) -> DecodedAudio:
    """Decode the first audio stream of `data` to mono float32 at its own sample rate (channels
    are averaged). Raises `AudioDecodeError`: "too_long" when the header or the decoded samples
    pass `max_duration_s`, "audio_undecodable" for anything else."""
    container = _open(data)
    try:
        stream, header = _header(container)
        if (
            max_duration_s is not None
            and header.duration_s is not None
            and header.duration_s > max_duration_s
        ):
            raise AudioDecodeError(
                "too_long", f"{header.duration_s:.1f} s of audio by its header; at most {max_duration_s:g} s"
            )
        cap = None if max_duration_s is None else int(max_duration_s * header.sample_rate) + 1
        pieces: list[np.ndarray] = []
        count = 0
        resampler = av.AudioResampler(format="fltp", rate=header.sample_rate)
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    planes = out.to_ndarray()
                    pieces.append(planes.mean(axis=0, dtype=np.float32))
                    count += planes.shape[1]
                    if cap is not None and count > cap:
                        raise AudioDecodeError(
                            "too_long",
                            f"over {max_duration_s:g} s of audio once decoded; at most {max_duration_s:g} s",
                        )
            for out in resampler.resample(None):
                pieces.append(out.to_ndarray().mean(axis=0, dtype=np.float32))
        except AudioDecodeError:
            raise
        except Exception as exc:  # a corrupt packet, a stream that changes shape midway
            raise AudioDecodeError("audio_undecodable", f"decoding stopped: {type(exc).__name__}") from None
    finally:
        container.close()
    samples = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    return DecodedAudio(
        samples=samples.astype(np.float32, copy=False),
        sample_rate=header.sample_rate,
        container=header.container,
    )


def encode_audio(
    samples: np.ndarray, sample_rate: int, encoding: str, *, channels: int = 1, live: bool = False
) -> bytes:
    """`samples` (mono float32) as a file in one of `ENCODINGS`, resampled to that encoding's rate
    and copied to `channels` channels: what a browser, a phone or a call centre would send. `live`
    writes WebM as a browser's MediaRecorder streams it, with no duration in the header."""
    muxer, codec, rate = ENCODINGS[encoding]
    layout = {1: "mono", 2: "stereo"}[channels]
    planes = np.ascontiguousarray(np.repeat(np.asarray(samples, np.float32)[None, :], channels, axis=0))
    out = io.BytesIO()
    options = {"live": "1"} if live and muxer == "webm" else {}
    with av.open(out, "w", format=muxer, options=options) as container:
        stream = cast(av.audio.stream.AudioStream, container.add_stream(codec, rate=rate, layout=layout))
        frame = av.AudioFrame.from_ndarray(planes, format="fltp", layout=layout)
        frame.rate = sample_rate
        frame.pts, frame.time_base = 0, Fraction(1, sample_rate)  # else the muxer may get no timestamps
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()
