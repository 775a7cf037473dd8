"""Trainer throughput: the committed base model fine-tuned on synthetic new-domain speech, on CPU,
on CUDA in float32 and on CUDA in bf16, in one run, with the WER before and after each; and a
production-shaped Whisper (built from its published shape with random weights: no download),
fully and with LoRA, in float32 and bf16, with model FLOPs utilisation.

Two steps, because the GPU machine has no espeak-ng:

    python benchmarks/bench_trainer.py prepare --out bench-data          # here: synthesise audio
    python benchmarks/bench_trainer.py run --data bench-data/data.npz \
        --variant cpu:16:10 --variant cuda-fp32:32:200 --variant cuda-bf16:32:200
    python benchmarks/bench_trainer.py whisper --data bench-data/data.npz --shape small \
        --variant full-fp32:32:25 --variant full-bf16:32:25 --variant lora-bf16:32:25

A `run` variant is `name:batch:steps`, name one of cpu, cuda-fp32, cuda-bf16. Each variant starts
from the same base weights with the same seed, trains through `training.fine_tune` (the
pipeline's trainer), and is scored on the same held-out utterances.

A `whisper` variant is `method-precision[-gc]:batch:steps` (method full or lora, precision fp32
or bf16, `-gc` for gradient checkpointing). Throughput is timed over the steps after the first
`--warmup` ones (CUDA synchronised where the clock is read). FLOPs are counted, not estimated: one
training step of the same batch under `torch.utils.flop_counter` (forward and backward, no
checkpointing, so recomputation is not counted as useful work); MFU = counted FLOPs per second
over the device's dense peak for the precision (`--peak-tflops`, else a table of known GPUs).
Results go to stdout and, with --json, to a file.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import stt_flywheel
from stt_flywheel.models import load_model
from stt_flywheel.models.seq2seq import WHISPER_SHAPES, build_whisper_model
from stt_flywheel.models.training import TrainSettings, fine_tune
from stt_flywheel.scoring.corpus import score_corpus

# The committed base model (not through config: the GPU machine has no pydantic).
BASE_MODEL = Path(stt_flywheel.__file__).parent / "assets" / "base_model"
VARIANTS = {
    "cpu": ("cpu", "off"),
    "cuda-fp32": ("cuda", "off"),
    "cuda-bf16": ("cuda", "on"),
}


def prepare(out: Path, train: int, evals: int) -> Path:
    """Synthesise train/eval sets of the demo's new domain into one int16 npz (it travels light)."""
    from stt_flywheel.data.audio import load_audio
    from stt_flywheel.demo.world import NEW_DOMAIN, synthesize_set

    sets = {
        "train": synthesize_set("bench-train", NEW_DOMAIN, train, 7001, out / "train"),
        "eval": synthesize_set("bench-eval", NEW_DOMAIN, evals, 7002, out / "eval"),
    }
    arrays: dict[str, Any] = {}
    for name, utts in sets.items():
        audio = [load_audio(u.audio).samples for u in utts]
        arrays[f"{name}_audio"] = np.concatenate([np.round(a * 32767).astype(np.int16) for a in audio])
        arrays[f"{name}_offsets"] = np.cumsum([0] + [len(a) for a in audio])
        arrays[f"{name}_text"] = np.array([u.text for u in utts])
    path = out / "data.npz"
    np.savez_compressed(path, **arrays)
    return path


def _load(data: Path, name: str) -> tuple[list[np.ndarray], list[str]]:
    z = np.load(data)
    audio, offsets = z[f"{name}_audio"], z[f"{name}_offsets"]
    clips = [audio[a:b].astype(np.float32) / 32767 for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    return clips, [str(t) for t in z[f"{name}_text"]]


def run_variant(name: str, batch: int, steps: int, data: Path) -> dict[str, Any]:
    accelerator, bf16 = VARIANTS[name]
    train_audio, train_text = _load(data, "train")
    eval_audio, eval_text = _load(data, "eval")
    model = load_model(BASE_MODEL, device=accelerator)
    before, _ = score_corpus(eval_text, model.transcribe(eval_audio))
    examples = [{"audio": a, "text": t} for a, t in zip(train_audio, train_text, strict=True)]
    settings = TrainSettings(
        max_steps=steps,
        batch_size=batch,
        learning_rate=5e-4,
        warmup_steps=min(30, steps // 5),
        save_steps=10**9,
        logging_steps=max(1, steps // 4),
        accelerator=accelerator,
        bf16=bf16,
    )
    if accelerator == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as tmp:
        result = fine_tune(model, examples, Path(tmp), settings)
    after, _ = score_corpus(eval_text, model.transcribe(eval_audio))
    seconds_of_audio = sum(len(a) for a in train_audio) / 16000 / len(train_audio) * batch * steps
    return {
        "variant": name,
        "device": result.device,
        "bf16": result.bf16,
        "batch": batch,
        "steps": result.steps,
        "train_s": round(result.runtime_s, 2),
        "samples_per_s": round(result.samples_per_second, 1),
        "audio_s_per_s": round(seconds_of_audio / result.runtime_s, 1),
        "train_loss": round(result.train_loss, 4),
        "wer_before": round(before.wer, 4),
        "wer_after": round(after.wer, 4),
        "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20) if accelerator == "cuda" else None,
    }


# Dense peak TFLOP/s by precision (vendor datasheets, SXM parts, no sparsity). fp32 is the plain
# (non-tensor-core) rate: torch leaves TF32 off for matrix products unless asked.
PEAK_TFLOPS = {
    "H100": {"bf16": 989.4, "fp32": 66.9},
    "H200": {"bf16": 989.4, "fp32": 66.9},
    "A100": {"bf16": 312.0, "fp32": 19.5},
}


def _peak(precision: str, override: float | None) -> float | None:
    if override:
        return override
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((p[precision] for gpu, p in PEAK_TFLOPS.items() if gpu in name), None)


def diagnose_whisper(shape_name: str, batch: int, data: Path, peak_override: float | None) -> dict[str, Any]:
    """Where a bf16 step's time goes: the collator alone, and a bare step (autocast forward,
    backward, fused AdamW) on one batch already on the GPU, without the `Trainer` around it."""
    shape = WHISPER_SHAPES[shape_name]
    audio, text = _load(data, "train")
    examples = [{"audio": a, "text": t} for a, t in zip(audio[:batch], text[:batch], strict=True)]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sync = torch.cuda.synchronize if device == "cuda" else lambda: None
    model = build_whisper_model(**shape)
    model.model.to(device).train()
    model.feature_device = device
    times = []
    for _ in range(6):
        started = time.perf_counter()
        batch_in = model.collate(examples)
        times.append(time.perf_counter() - started)
    inputs = {k: v.to(device) for k, v in batch_in.items()}
    optimizer = torch.optim.AdamW(model.model.parameters(), lr=1e-5, fused=True)
    step_times = []
    for i in range(15):
        sync()
        started = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = model.model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        if i >= 5:
            step_times.append(time.perf_counter() - started)
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.autocast(device, dtype=torch.bfloat16):
        model.model(**inputs).loss.backward()
    step = float(np.median(step_times))
    peak = _peak("bf16", peak_override)
    achieved = counter.get_total_flops() / step / 1e12
    return {
        "diagnose": shape_name,
        "batch": batch,
        "collate_ms": round(1000 * float(np.median(times[1:])), 1),
        "bare_step_ms": round(1000 * step, 1),
        "bare_tflops": round(achieved, 1),
        "bare_mfu": round(achieved / peak, 3) if peak else None,
    }


def _whisper_settings(spec: str, steps: int, batch: int, workers: int = 0) -> TrainSettings:
    method, precision, *rest = spec.split("-")
    if (
        method not in ("full", "lora")
        or precision not in ("fp32", "bf16")
        or not set(rest) <= {"gc", "compile"}
    ):
        raise SystemExit(f"bad whisper variant {spec!r}: method-precision[-gc][-compile], e.g. lora-bf16-gc")
    return TrainSettings(
        max_steps=steps,
        batch_size=batch,
        learning_rate=1e-4 if method == "full" else 1e-3,
        warmup_steps=0,
        save_steps=10**9,
        logging_steps=10**9,
        accelerator="cuda" if torch.cuda.is_available() else "cpu",
        bf16="on" if precision == "bf16" else "off",
        method=method,
        gradient_checkpointing="gc" in rest,
        torch_compile="compile" in rest,
        dataloader_workers=workers,
    )


def _count_step_flops(shape: dict[str, int], settings: TrainSettings, examples: list[dict[str, Any]]) -> int:
    """FLOPs of one training step as the trainer runs it (forward + backward), counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build_whisper_model(**shape)
    one = TrainSettings(
        **{**settings.__dict__, "max_steps": 1, "gradient_checkpointing": False, "torch_compile": False}
    )
    counter = FlopCounterMode(display=False)
    with counter, tempfile.TemporaryDirectory() as tmp:
        fine_tune(model, examples, Path(tmp), one)
    del model
    return int(counter.get_total_flops())


def run_whisper(
    spec: str,
    shape_name: str,
    batch: int,
    steps: int,
    warmup: int,
    data: Path,
    peak_override: float | None,
    workers: int = 0,
) -> dict[str, Any]:
    shape = WHISPER_SHAPES[shape_name]
    settings = _whisper_settings(spec, steps, batch, workers)
    audio, text = _load(data, "train")
    examples = [{"audio": a, "text": t} for a, t in zip(audio, text, strict=True)]
    cuda = settings.accelerator == "cuda"
    flops = _count_step_flops(shape, settings, examples[:batch])
    model = build_whisper_model(**shape)
    stamps: list[float] = []

    def step_done(step: int, max_steps: int, loss: float | None) -> None:
        # synchronise only where the clock is read: a wait at every step would stop the next
        # batch's collation from overlapping the GPU's work, as it does in a real run
        if cuda and step in (warmup + 1, max_steps):
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as tmp:
        result = fine_tune(model, examples, Path(tmp), settings, progress=step_done)
    timed = len(stamps) - 1 - warmup
    if timed < 1:
        raise SystemExit(f"{spec}: {steps} steps leave none to time after {warmup} warm-up steps")
    seconds = stamps[-1] - stamps[warmup]
    samples_per_s = timed * batch / seconds
    mean_audio_s = sum(len(a) for a in audio) / 16000 / len(audio)
    achieved = flops / batch * samples_per_s / 1e12
    peak = _peak(spec.split("-")[1], peak_override)
    return {
        "variant": spec,
        "shape": shape_name,
        "parameters_m": round(result.total_parameters / 1e6, 1),
        "trainable_m": round(result.trainable_parameters / 1e6, 2),
        "device": result.device,
        "batch": batch,
        "workers": workers,
        "timed_steps": timed,
        "step_s": round(seconds / timed, 4),
        "samples_per_s": round(samples_per_s, 1),
        "audio_s_per_s": round(samples_per_s * mean_audio_s, 1),
        "gflop_per_sample": round(flops / batch / 1e9, 1),
        "tflops": round(achieved, 1),
        "mfu": round(achieved / peak, 3) if peak else None,
        "peak_tflops": peak,
        "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20) if cuda else None,
        "train_loss": round(result.train_loss, 3),
    }


def _environment() -> dict[str, Any]:
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "cpu_threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--train", type=int, default=192)
    p.add_argument("--eval", type=int, default=64)
    r = sub.add_parser("run")
    r.add_argument("--data", type=Path, required=True)
    r.add_argument("--variant", action="append", required=True, help="name:batch:steps")
    r.add_argument("--json", type=Path)
    w = sub.add_parser("whisper")
    w.add_argument("--data", type=Path, required=True)
    w.add_argument("--shape", choices=sorted(WHISPER_SHAPES), default="small")
    w.add_argument("--variant", action="append", required=True, help="method-precision[-gc]:batch:steps")
    w.add_argument("--warmup", type=int, default=5, help="steps left out of the timing")
    w.add_argument("--peak-tflops", type=float, help="the device's dense peak, for MFU")
    w.add_argument("--workers", type=int, default=0, help="dataloader worker processes (collation)")
    w.add_argument("--diagnose", type=int, metavar="BATCH", help="first time the collator and a bare step")
    w.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.command == "prepare":
        print(prepare(args.out, args.train, args.eval))
        return
    env = _environment()
    print(json.dumps(env))
    rows = []
    if args.command == "whisper" and args.diagnose:
        try:
            rows.append(diagnose_whisper(args.shape, args.diagnose, args.data, args.peak_tflops))
        except (RuntimeError, ValueError) as e:
            rows.append({"diagnose": args.shape, "error": f"{type(e).__name__}: {e}"[:500]})
        print(json.dumps(rows[-1]), flush=True)
    for spec in args.variant:
        name, batch, steps = spec.split(":")
        started = time.perf_counter()
        if args.command == "whisper":
            try:
                row = run_whisper(
                    name,
                    args.shape,
                    int(batch),
                    int(steps),
                    args.warmup,
                    args.data,
                    args.peak_tflops,
                    args.workers,
                )
            except (RuntimeError, ValueError) as e:  # out of memory, say: the other variants still run
                row = {"variant": name, "batch": int(batch), "error": f"{type(e).__name__}: {e}"[:500]}
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
        else:
            row = run_variant(name, int(batch), int(steps), args.data)
        row["wall_s"] = round(time.perf_counter() - started, 1)
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.json:
        args.json.write_text(json.dumps({"environment": env, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
