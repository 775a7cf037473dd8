"""Batched transcription beside `transformers.pipeline("automatic-speech-recognition")`, in one run.

The same model, the same audio (synthetic speech of both demo domains, 1.5–6 s), on this
machine's CPU: the committed CTC base model and a small Whisper built from its config. For each:
the adapter's `transcribe` at batch 1 (the reference: no padding at all), at batch 16, and the
pipeline at batch 16; seconds, and how many transcripts differ from batch 1. Run with `make bench`.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from rich.console import Console
from rich.table import Table
from transformers import pipeline

from stt_flywheel.config import DEFAULT_BASE_MODEL
from stt_flywheel.data.audio import load_audio
from stt_flywheel.demo.world import GENERAL, NEW_DOMAIN, synthesize_set
from stt_flywheel.models import SpeechModel, load_model
from stt_flywheel.models.seq2seq import build_whisper_model


def _audio(n: int, out: Path) -> list[np.ndarray]:
    utts = synthesize_set("bench-a", GENERAL, n // 2, 9001, out / "a")
    utts += synthesize_set("bench-b", NEW_DOMAIN, n - n // 2, 9002, out / "b")
    return [load_audio(u.audio).samples for u in utts]


def _timed(fn):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def bench(console: Console, name: str, model: SpeechModel, audios: list[np.ndarray]) -> None:
    model.transcribe(audios[:4], batch_size=4)  # warm-up
    t1, one = _timed(lambda: model.transcribe(audios, batch_size=1))
    t16, sixteen = _timed(lambda: model.transcribe(audios, batch_size=16))
    asr = pipeline(
        "automatic-speech-recognition",
        model=model.model,
        tokenizer=model.processor.tokenizer,
        feature_extractor=model.processor.feature_extractor,
        device="cpu",
    )
    # the same decoding budget as the adapter's (Whisper: at most 96 new tokens, greedy)
    extra = {"generate_kwargs": {"max_new_tokens": 96}} if model.family == "seq2seq" else {}
    asr([audios[0]], batch_size=1, **extra)  # warm-up
    tp, piped = _timed(lambda: [o["text"].strip() for o in asr(list(audios), batch_size=16, **extra)])
    table = Table(title=f"{name}: {len(audios)} utterances, {sum(map(len, audios)) / 16000:.0f} s of audio")
    for col in ("transcriber", "seconds", "utterances/s", "differ from batch 1"):
        table.add_column(col, justify="left" if col == "transcriber" else "right")
    table.add_row("stt-flywheel transcribe, batch 1", f"{t1:.2f}", f"{len(audios) / t1:.1f}", "—")
    table.add_row(
        "stt-flywheel transcribe, batch 16",
        f"{t16:.2f}",
        f"{len(audios) / t16:.1f}",
        str(sum(a != b for a, b in zip(one, sixteen, strict=True))),
    )
    table.add_row(
        "transformers pipeline, batch 16",
        f"{tp:.2f}",
        f"{len(audios) / tp:.1f}",
        str(sum(a != b for a, b in zip(one, piped, strict=True))),
    )
    console.print(table)
    console.print(f"batch 16: the adapter {tp / t16:.2f}× the pipeline's speed")
    if model.family == "seq2seq":
        console.print(
            "(random weights: each transcript is one byte repeated up to the token limit, so the "
            "agreement column says little here; the speed is what this row measures)"
        )


def main() -> None:
    transformers.logging.set_verbosity_error()  # its per-batch notices about generation lengths
    console = Console(width=120)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        audios = _audio(160, Path(tmp))
        bench(console, "CTC (the committed base model)", load_model(DEFAULT_BASE_MODEL, device="cpu"), audios)
        # without timestamp tokens: with random weights a model that has them spends most of its
        # argmaxes on them (1,501 of its 1,865 ids) and writes empty texts, and this row would compare nothing
        whisper = build_whisper_model(timestamps=False)
        bench(console, "Whisper (d_model 64, 2 + 2 layers, random weights)", whisper, audios[:48])


if __name__ == "__main__":
    main()
