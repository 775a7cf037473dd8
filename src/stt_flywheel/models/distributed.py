"""Training on several devices: one process per device under `torchrun`, data-parallel (DDP).

`train_in_processes` writes the job (the model to start from, the dataset, the settings) beside
the output, starts `python -m torch.distributed.run --standalone --nproc-per-node N -m
stt_flywheel.models.distributed JOB` and reads back what rank 0 wrote. Each process loads the same
model and dataset; the `Trainer` sees the `torchrun` environment, wraps the model in DDP and gives
each process its share of every batch (so `batch_size` is per device); only rank 0 saves. On GPUs
the backend is NCCL, one device per process; on CPUs (how the tests run it) gloo.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from stt_flywheel.errors import StateError
from stt_flywheel.models.training import TrainResult, TrainSettings
from stt_flywheel.storage.files import atomic_write_bytes

__all__ = ["train_in_processes"]

JOB_FILE = "distributed-job.json"
RESULT_FILE = "distributed-result.json"
PROGRESS_FILE = "distributed-progress.json"


def train_in_processes(
    start_from: str,
    dataset_dir: str | Path,
    output_dir: str | Path,
    settings: TrainSettings,
    processes: int,
    progress: Callable[[int, int, float | None], None] | None = None,
    poll_s: float = 2.0,
) -> TrainResult:
    """Fine-tune `start_from` on the dataset's train split (held-out loss on its held-out split)
    with `processes` processes; the saved model lands in `output_dir/model`, once. `progress`
    is called as in `fine_tune`, every `poll_s` seconds at most, from what rank 0 writes to
    `output_dir/distributed-progress.json` (and once with the last step)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    job = output_dir / JOB_FILE
    result_file = output_dir / RESULT_FILE
    result_file.unlink(missing_ok=True)
    progress_file = output_dir / PROGRESS_FILE
    progress_file.unlink(missing_ok=True)
    job.write_text(
        json.dumps(
            {
                "start_from": start_from,
                "dataset_dir": str(dataset_dir),
                "output_dir": str(output_dir),
                "settings": asdict(settings),
            }
        )
    )
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={processes}",
        "-m",
        "stt_flywheel.models.distributed",
        str(job),
    ]
    process = subprocess.Popen(command)
    seen: tuple[int, int, float | None] | None = None
    while True:
        try:
            returncode = process.wait(timeout=poll_s)
        except subprocess.TimeoutExpired:
            returncode = None
        if progress is not None:
            now: tuple[int, int, float | None] | None
            try:
                state = json.loads(progress_file.read_text())
                now = (int(state["step"]), int(state["max_steps"]), state.get("loss"))
            except (OSError, ValueError, KeyError, TypeError):
                now = seen
            if now is not None and now != seen:
                seen = now
                progress(*now)
        if returncode is not None:
            break
    if returncode != 0 or not result_file.exists():
        raise StateError(f"distributed training with {processes} processes failed (exit {returncode})")
    data = json.loads(result_file.read_text())
    data["output_dir"] = Path(data["output_dir"])
    return TrainResult(**data)


def _run(job_path: Path) -> None:
    import torch

    from stt_flywheel.data.dataset import load_split
    from stt_flywheel.models import load_model
    from stt_flywheel.models.training import fine_tune

    job = json.loads(job_path.read_text())
    settings = TrainSettings.from_dict(job["settings"])
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if settings.accelerator != "cpu" and torch.cuda.is_available():
        torch.cuda.set_device(local_rank)  # "cuda" below means this process's own device
    model = load_model(job["start_from"], device=settings.accelerator)
    train = load_split(job["dataset_dir"], "train")
    heldout = load_split(job["dataset_dir"], "heldout")
    progress_file = Path(job["output_dir"]) / PROGRESS_FILE

    def report(step: int, max_steps: int, loss: float | None) -> None:
        # rank 0 alone, replaced whole each step: the launcher reads it while training runs
        atomic_write_bytes(
            progress_file, json.dumps({"step": step, "max_steps": max_steps, "loss": loss}).encode()
        )

    result = fine_tune(
        model,
        train,
        job["output_dir"],
        settings,
        eval_examples=heldout or None,
        progress=report if rank == 0 else None,
    )
    ranks = Path(job["output_dir"]) / "ranks"
    ranks.mkdir(exist_ok=True)
    (ranks / f"{rank}.json").write_text(json.dumps({"rank": rank, "saved": result.saved}))
    if rank == 0:
        out: dict[str, Any] = {**asdict(result), "output_dir": str(result.output_dir)}
        # json, not orjson: a NaN loss must come back as NaN, not null
        atomic_write_bytes(Path(job["output_dir"]) / RESULT_FILE, json.dumps(out, default=float).encode())


if __name__ == "__main__":
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_file():
        raise SystemExit(
            "usage: torchrun --nproc-per-node N -m stt_flywheel.models.distributed JOB.json "
            "(written by train_in_processes)"
        )
    _run(Path(sys.argv[1]))
