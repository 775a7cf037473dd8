"""What one hostile or careless input costs, before and after the limits, side by side.

Each case runs in a fresh Python process, and its figure is that process's peak resident memory
(`VmHWM`, which starts afresh at exec, unlike `ru_maxrss`, which keeps the parent's peak at fork)
and wall time, so allocations by numpy, FFmpeg and torch all count.

1. The dataset stage reading one record's audio: a real 1-hour WAV (115 MB) and a FLAC whose
   header claims 2^36 samples. "decode whole" is `decode_audio` on the file's bytes with no limit;
   "read_training_audio" is what the stage does (roots, size cap, duration by the header and while
   decoding).
2. The serving process transcribing one long WAV (300 s): whole, as before, against pieces of
   `serving.chunk_s` (30 s), with the committed demo model.
3. Each format users record in (`stt_flywheel.data.decode.ENCODINGS`): 10 minutes of it, decoded
   whole against `read_training_audio` (30 s limit). WebM is written as a browser streams it, with
   no duration in its header, so only counting the samples as they are decoded stops it.

Run with `make bench` (or `python benchmarks/bench_limits.py`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from rich.console import Console
from rich.table import Table

CASE = r"""
import json, sys, time
from pathlib import Path
kind, path, roots = sys.argv[1], sys.argv[2], sys.argv[3]
start = time.perf_counter()
outcome = "ok"
try:
    if kind == "decode-whole":
        from stt_flywheel.data.audio import decode_audio
        audio = decode_audio(Path(path).read_bytes())
        outcome = f"decoded {audio.duration_s:.0f} s"
    elif kind == "read-training-audio":
        from stt_flywheel.data.audio import AudioLimits, AudioRejected, read_training_audio
        try:
            audio = read_training_audio(path, AudioLimits(roots=(roots,)))
            outcome = f"decoded {audio.duration_s:.0f} s"
        except AudioRejected as exc:
            outcome = f"quarantined: {exc.code}"
    else:
        from stt_flywheel.config import DEFAULT_BASE_MODEL
        from stt_flywheel.data.audio import load_audio
        from stt_flywheel.models import load_model
        model = load_model(DEFAULT_BASE_MODEL, device="cpu")
        samples = load_audio(path).samples
        if kind == "serve-whole":
            text = model.transcribe([samples])[0]
        else:
            text = model.transcribe([samples], batch_size=16, max_piece_s=30.0)[0]
        outcome = f"{len(text.split())} words"
except MemoryError:
    outcome = "MemoryError"
except Exception as exc:
    outcome = f"{type(exc).__name__}: {str(exc)[:60]}"
print(json.dumps({"outcome": outcome, "seconds": time.perf_counter() - start,
                  "peak_mib": next(int(l.split()[1]) for l in open("/proc/self/status")
                                   if l.startswith("VmHWM")) / 1024}))
"""


def _run(kind: str, path: Path, roots: Path) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", CASE, kind, str(path), str(roots)], capture_output=True, text=True, timeout=900
    )
    if out.returncode != 0:
        return {
            "outcome": f"process died ({out.returncode}): {out.stderr.strip()[-80:]}",
            "seconds": 0,
            "peak_mib": 0,
        }
    return json.loads(out.stdout.strip().splitlines()[-1])


def _forged_flac(target: Path) -> Path:
    sf.write(target, np.zeros(16_000, dtype=np.float32), 16_000, format="FLAC")
    raw = bytearray(target.read_bytes())
    samples = 2**36 - 1
    raw[21] = (raw[21] & 0xF0) | ((samples >> 32) & 0x0F)
    raw[22:26] = (samples & 0xFFFFFFFF).to_bytes(4, "big")
    target.write_bytes(bytes(raw))
    return target


def _long_wav(target: Path, seconds: int, rng: np.random.Generator) -> Path:
    with sf.SoundFile(target, "w", samplerate=16_000, channels=1, subtype="PCM_16") as fh:
        for _ in range(seconds // 60):
            fh.write((rng.standard_normal(16_000 * 60) * 0.05).astype(np.float32))
    return target


def _formats(root: Path, seconds: int, rng: np.random.Generator) -> list[tuple[str, str, str, Path]]:
    from stt_flywheel.data.decode import ENCODINGS, encode_audio

    noise = (rng.standard_normal(16_000 * seconds) * 0.05).astype(np.float32)
    cases = []
    for encoding, (muxer, _, _) in ENCODINGS.items():
        path = root / f"ten-minutes.{encoding}"
        path.write_bytes(encode_audio(noise, 16_000, encoding, live=muxer == "webm"))
        name = f"dataset: {seconds // 60} min {encoding} ({path.stat().st_size / 1e6:.1f} MB)"
        cases += [
            (name, "decode whole (no limit)", "decode-whole", path),
            (name, "read_training_audio (now)", "read-training-audio", path),
        ]
    return cases


def main() -> None:
    console = Console()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        hour = _long_wav(root / "one-hour.wav", 3600, rng)
        forged = _forged_flac(root / "forged.flac")
        five_minutes = _long_wav(root / "five-minutes.wav", 300, rng)
        table = Table(title="One input's cost: peak resident memory of the process, and wall time")
        for col in ("input", "path", "outcome", "peak MiB", "seconds"):
            table.add_column(col)
        cases = [
            ("dataset: 1-hour WAV (115 MB)", "decode whole (no limit)", "decode-whole", hour),
            ("dataset: 1-hour WAV (115 MB)", "read_training_audio (now)", "read-training-audio", hour),
            ("dataset: FLAC claiming 2^36 samples", "decode whole (no limit)", "decode-whole", forged),
            (
                "dataset: FLAC claiming 2^36 samples",
                "read_training_audio (now)",
                "read-training-audio",
                forged,
            ),
            ("serving: 300 s WAV", "transcribe whole (no limit)", "serve-whole", five_minutes),
            ("serving: 300 s WAV", "30 s pieces (now)", "serve-pieces", five_minutes),
            *_formats(root, 600, rng),
        ]
        for name, path_name, kind, path in cases:
            r = _run(kind, path, root)
            table.add_row(name, path_name, str(r["outcome"]), f"{r['peak_mib']:.0f}", f"{r['seconds']:.2f}")
        console.print(table)


if __name__ == "__main__":
    main()
