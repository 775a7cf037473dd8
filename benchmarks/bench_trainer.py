"""Trainer throughput: the committed base model fine-tuned on synthetic new-domain speech, on CPU,
on CUDA in float32 and on CUDA in bf16, in one run, with the WER before and after each.

Two steps, because the GPU machine has no espeak-ng:

    python benchmarks/bench_trainer.py prepare --out bench-data          # here: synthesise audio
    python benchmarks/bench_trainer.py run --data bench-data/data.npz \
        --variant cpu:16:10 --variant cuda-fp32:32:200 --variant cuda-bf16:32:200

A variant is `name:batch:steps`, name one of cpu, cuda-fp32, cuda-bf16. Each variant starts from
the same base weights with the same seed, trains through `training.fine_tune` (the pipeline's
trainer), and is scored on the same held-out utterances. Results go to stdout and, with --json, to
a file.
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
    args = parser.parse_args()
    if args.command == "prepare":
        print(prepare(args.out, args.train, args.eval))
        return
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "cpu_threads": torch.get_num_threads(),
    }
    import transformers

    env["transformers"] = transformers.__version__
    print(json.dumps(env))
    rows = []
    for spec in args.variant:
        name, batch, steps = spec.split(":")
        started = time.perf_counter()
        row = run_variant(name, int(batch), int(steps), args.data)
        row["wall_s"] = round(time.perf_counter() - started, 1)
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.json:
        args.json.write_text(json.dumps({"environment": env, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
