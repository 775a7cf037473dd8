"""Batched transcription beside `transformers.pipeline("automatic-speech-recognition")`, in one run.

The same model, the same audio (synthetic speech of both demo domains, 1.5–6 s), on this
machine's CPU: the committed CTC base model and a small Whisper built from its config. For each:
the adapter's `transcribe` at batch 1 (the reference: no padding at all), at batch 16, and the
pipeline at batch 16; seconds, and how many transcripts differ from batch 1. Run with `make bench`.

`python benchmarks/bench_transcribe.py whisper --device cuda --shape small --variant bf16-static ...`
measures batched generation of a Whisper of a published shape (random weights, built from its
config: no download) on noise of 5–25 s: utterances/s, generated tokens/s and peak memory for
each variant `precision[-static][-compile]` (fp32 or bf16; the static key/value cache; the
forward compiled with CUDA graphs), and how many transcripts differ from the same variant at batch 1.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

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
from stt_flywheel.models.seq2seq import WHISPER_SHAPES, build_whisper_model


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


def whisper_variant(
    spec: str, shape: str, device: str, audios: list[np.ndarray], batch: int
) -> dict[str, Any]:
    """One `precision[-static][-compile]` variant: batched generation timed after a warm-up pass
    (which also compiles), then the first `batch` utterances one at a time for the agreement."""
    precision, *switches = spec.split("-")
    if precision not in ("fp32", "bf16") or not set(switches) <= {"static", "compile"}:
        raise SystemExit(f"bad variant {spec!r}: precision[-static][-compile], e.g. bf16-static-compile")
    # without timestamp tokens, so random weights write text (bytes) to the token limit rather than
    # timestamps that decode to nothing: every variant generates the same amount
    sizes = WHISPER_SHAPES[shape] if shape != "test" else {}
    model = build_whisper_model(**sizes, timestamps=False)
    model.model.to(device, dtype=torch.bfloat16 if precision == "bf16" else torch.float32)
    model.device = model.feature_device = device
    if "static" in switches:
        model.generation_cache = "static"
    if "compile" in switches:
        model.model.forward = torch.compile(model.model.forward, mode="reduce-overhead", fullgraph=True)

    generated: list[int] = []  # output ids of each generate call, the padding left out
    inner, pad = model.model.generate, model.model.generation_config.pad_token_id

    def counting(*args: Any, **kwargs: Any) -> Any:
        ids = inner(*args, **kwargs)
        generated.append(int((ids != pad).sum()))
        return ids

    model.model.generate = counting

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    started = time.perf_counter()
    model.transcribe(audios[:batch], batch_size=batch)  # warm-up (and compilation)
    sync()
    warm_s = time.perf_counter() - started
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    generated.clear()
    started = time.perf_counter()
    texts = model.transcribe(audios, batch_size=batch)
    sync()
    seconds = time.perf_counter() - started
    tokens = sum(generated)
    alone = [model.transcribe([a], batch_size=1)[0] for a in audios[:batch]]
    return {
        "variant": spec,
        "shape": shape,
        "batch": batch,
        "utterances": len(audios),
        "audio_s": round(sum(map(len, audios)) / 16_000, 1),
        "warmup_s": round(warm_s, 1),
        "seconds": round(seconds, 2),
        "utterances_per_s": round(len(audios) / seconds, 1),
        "tokens_per_s": round(tokens / seconds),
        "peak_mib": round(torch.cuda.max_memory_allocated() / 2**20) if device.startswith("cuda") else None,
        "differ_from_batch_1": sum(a != b for a, b in zip(alone, texts[:batch], strict=True)),
    }


def main_whisper(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="bench_transcribe.py whisper")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--shape", choices=[*sorted(WHISPER_SHAPES), "test"], default="small")
    p.add_argument("--variant", action="append", required=True, help="precision[-static][-compile]")
    p.add_argument("--utterances", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    audios = [
        rng.normal(0, 0.1, int(16_000 * s)).astype(np.float32) for s in rng.uniform(5, 25, args.utterances)
    ]
    rows = []
    for spec in args.variant:
        try:
            rows.append(whisper_variant(spec, args.shape, args.device, audios, args.batch))
        except (RuntimeError, ValueError) as e:  # out of memory, a compile failure: the others still run
            rows.append({"variant": spec, "error": f"{type(e).__name__}: {e}"[:500]})
        print(json.dumps(rows[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


def main() -> None:
    import sys

    transformers.logging.set_verbosity_error()  # its per-batch notices about generation lengths
    if sys.argv[1:2] == ["whisper"]:
        main_whisper(sys.argv[2:])
        return
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
