"""Fine-tuning with the transformers `Trainer`: dynamic padding, checkpoints, resume, bf16 on GPU.

The trainer is family-agnostic: the adapter supplies the collator, the `Trainer` does the rest.
A run whose output directory already holds a complete checkpoint resumes from it, so a retried
pipeline task continues instead of starting over.

`method="lora"` trains low-rank adapters (PEFT) on the named modules and merges them into the
weights before saving, so a LoRA-trained version is an ordinary model directory: serving,
validation and the registry never see an adapter. `spec_augment` masks random bands of time and
frequency in each training batch (Park et al., 2019); `gradient_checkpointing` recomputes
activations in the backward pass to trade time for memory.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, WeightedRandomSampler
from transformers import Trainer, TrainerCallback, TrainingArguments

from stt_flywheel.data.audio import TARGET_SAMPLE_RATE, resample
from stt_flywheel.errors import InputError, StateError
from stt_flywheel.models.base import SpeechModel, resolve_device, saved_model_dir

__all__ = ["TrainResult", "TrainSettings", "TrainingDiverged", "fine_tune"]


class TrainingDiverged(RuntimeError):
    """Training left non-finite weights; nothing was saved."""


@dataclass(frozen=True)
class TrainSettings:
    max_steps: int = 300
    learning_rate: float = 5e-4
    batch_size: int = 16
    warmup_steps: int = 30
    weight_decay: float = 0.01
    seed: int = 0
    save_steps: int = 100
    logging_steps: int = 25
    accelerator: str = "auto"  # auto | cpu | cuda
    bf16: str = "auto"  # auto | on | off
    dataloader_workers: int = 0
    speed_perturbation: tuple[float, ...] = ()  # e.g. (0.9, 1.0, 1.1): each example is re-timed at random
    wise_ft_alpha: float = 1.0  # < 1: interpolate the result with the starting weights (WiSE-FT)
    method: str = "full"  # full | lora
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "out_proj", "o_proj")
    gradient_checkpointing: bool = False
    spec_augment: bool = False
    torch_compile: bool = False
    processes: int = 0  # how many train it: read by the caller (models.distributed), not here
    language: str = "en"  # multilingual models: the default language (a record's `language` wins)
    task: str = "transcribe"  # or translate (Whisper)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainSettings:
        """From the config's `training` section or a JSON copy of these settings (lists become tuples)."""
        return cls(
            **{
                **values,
                "speed_perturbation": tuple(values.get("speed_perturbation", ())),
                "lora_target_modules": tuple(values.get("lora_target_modules", cls.lora_target_modules)),
            }
        )


@dataclass
class TrainResult:
    output_dir: Path
    train_loss: float
    eval_loss: float | None
    steps: int
    runtime_s: float
    samples_per_second: float
    device: str
    bf16: bool
    resumed_from: str | None
    log_history: list[dict[str, Any]] = field(default_factory=list)
    trainable_parameters: int = 0
    total_parameters: int = 0
    processes: int = 1  # data-parallel processes that trained it (see models.distributed)
    saved: bool = True  # whether this process saved the model (under DDP only rank 0 does)
    # The held-out loss of the weights saved: after WiSE-FT's interpolation (`wise_ft_alpha` < 1)
    # it differs from `eval_loss`, which the fine-tuned weights had before it.
    saved_eval_loss: float | None = None
    wise_ft_alpha: float = 1.0

    def metrics(self) -> dict[str, float]:
        out = {
            "train_loss": self.train_loss,
            "steps": float(self.steps),
            "train_runtime_s": self.runtime_s,
            "train_samples_per_second": self.samples_per_second,
        }
        if self.eval_loss is not None:
            out["eval_loss"] = self.eval_loss
        if self.saved_eval_loss is not None:
            out["saved_eval_loss"] = self.saved_eval_loss
        return out


class _Examples(Dataset):
    """Training examples, optionally speed-perturbed (resampled so they play faster or slower)."""

    def __init__(
        self, examples: Sequence[dict[str, Any]], speeds: Sequence[float] = (), seed: int = 0
    ) -> None:
        self.examples = examples
        self.speeds = tuple(speeds)
        self.rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        example = self.examples[i]
        if not self.speeds:
            return example
        speed = self.rng.choice(self.speeds)
        if speed == 1.0:
            return example
        audio = resample(np.asarray(example["audio"], dtype=np.float32), round(TARGET_SAMPLE_RATE * speed))
        return {**example, "audio": audio}


class _WeightedTrainer(Trainer):
    """The `Trainer`, drawing each training example in proportion to its `weight` (a
    pseudo-label's below a correction's 1), with replacement, from a seeded generator; as
    the `Trainer` does when every weight is 1."""

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        weights = [float(e.get("weight", 1.0)) for e in getattr(dataset, "examples", [])]
        if not weights or all(w == 1.0 for w in weights):
            return super()._get_train_sampler(train_dataset)
        generator = torch.Generator().manual_seed(self.args.seed)
        return WeightedRandomSampler(weights, num_samples=len(weights), replacement=True, generator=generator)


def _check_finite(module: torch.nn.Module, log_history: list[dict[str, Any]]) -> None:
    """Refuse to save a model whose weights went NaN/inf: it would only transcribe nothing.

    (A library mismatch once did this silently: the loss logged 0 while every gradient was NaN.)
    """
    bad = [name for name, p in module.named_parameters() if not torch.isfinite(p).all()]
    if not bad:
        return
    nan_steps = [
        int(entry.get("step", -1))
        for entry in log_history
        if "grad_norm" in entry and not math.isfinite(float(entry["grad_norm"]))
    ]
    first = f"; the gradient norm was first non-finite at step {nan_steps[0]}" if nan_steps else ""
    raise TrainingDiverged(
        f"training diverged: {len(bad)} of {sum(1 for _ in module.parameters())} weight tensors are "
        f"non-finite (e.g. {bad[0]}){first}; the model was not saved"
    )


def _use_bf16(setting: str, device: str) -> bool:
    if setting == "off":
        return False
    supported = device == "cuda" and torch.cuda.is_bf16_supported()
    if setting == "on" and not supported:
        raise StateError("bf16 requested but the device does not support it")
    return supported


class _Progress(TrainerCallback):
    """Reports each finished step, with the last logged training loss."""

    def __init__(self, report: Callable[[int, int, float | None], None]) -> None:
        self.report = report
        self.loss: float | None = None

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kw: Any
    ) -> None:
        if logs and "loss" in logs:
            self.loss = float(logs["loss"])

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.report(int(state.global_step), int(state.max_steps), self.loss)


def _last_complete_checkpoint(checkpoints: Path) -> str | None:
    """The newest checkpoint whose save finished, and none newer: the `Trainer` writes
    `trainer_state.json` last, so a checkpoint without a readable one was cut off (a `kill -9`,
    a preempted machine) and is removed rather than resumed from."""
    if not checkpoints.is_dir():
        return None
    found = sorted(
        (int(d.name.split("-")[1]), d)
        for d in checkpoints.iterdir()
        if d.is_dir() and d.name.startswith("checkpoint-") and d.name.split("-")[1].isdigit()
    )
    for _, directory in reversed(found):
        try:
            json.loads((directory / "trainer_state.json").read_text())
        except (OSError, ValueError):
            shutil.rmtree(directory, ignore_errors=True)
            continue
        return str(directory)
    return None


def spec_augment(
    features: torch.Tensor,
    time_axis: int,
    generator: torch.Generator,
    time_masks: int = 2,
    max_time_share: float = 0.05,
    freq_masks: int = 2,
    max_freq_bins: int = 15,
) -> torch.Tensor:
    """SpecAugment's masks on a batch of features `(batch, …)`: per example, `freq_masks` bands of
    up to `max_freq_bins` mel bins and `time_masks` spans of up to `max_time_share` of the frames
    are set to zero (the features' mean after normalisation). Returns a masked copy."""
    out = features.clone()
    freq_axis = 2 if time_axis == 1 else 1
    frames, bins = features.shape[time_axis], features.shape[freq_axis]
    longest = max(1, int(frames * max_time_share))
    for b in range(features.shape[0]):
        view = out[b].transpose(0, 1) if time_axis == 2 else out[b]  # (time, freq)
        for _ in range(freq_masks):
            width = int(torch.randint(0, max_freq_bins + 1, (1,), generator=generator))
            start = int(torch.randint(0, max(1, bins - width), (1,), generator=generator))
            view[:, start : start + width] = 0.0
        for _ in range(time_masks):
            width = int(torch.randint(0, longest + 1, (1,), generator=generator))
            start = int(torch.randint(0, max(1, frames - width), (1,), generator=generator))
            view[start : start + width, :] = 0.0
    return out


class _AugmentingCollator:
    """The adapter's collator, then SpecAugment on `input_features` (training batches only)."""

    def __init__(self, model: SpeechModel, seed: int) -> None:
        self.collate = model.collate
        self.time_axis = model.feature_time_axis
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.collate(examples)
        batch["input_features"] = spec_augment(batch["input_features"], self.time_axis, self.generator)
        return batch


def _wrap_lora(module: torch.nn.Module, settings: TrainSettings) -> torch.nn.Module:
    """The model with LoRA adapters on the configured modules (the rest frozen)."""
    from peft import LoraConfig, get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, _ in module.named_modules()}
    targets = [m for m in settings.lora_target_modules if m in present]
    if not targets:
        raise InputError(
            f"training.lora_target_modules {list(settings.lora_target_modules)} name no module of this "
            f"model; its linear layers include {sorted(_linear_names(module))}"
        )
    config = LoraConfig(
        r=settings.lora_rank,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=targets,
        bias="none",
    )
    return get_peft_model(module, config)


def _linear_names(module: torch.nn.Module) -> set[str]:
    return {n.rsplit(".", 1)[-1] for n, m in module.named_modules() if isinstance(m, torch.nn.Linear)}


def fine_tune(
    model: SpeechModel,
    train: Sequence[dict[str, Any]],
    output_dir: str | Path,
    settings: TrainSettings = TrainSettings(),
    eval_examples: Sequence[dict[str, Any]] | None = None,
    progress: Callable[[int, int, float | None], None] | None = None,
) -> TrainResult:
    """Train `model` in place on examples `{"audio": float32 16 kHz, "text": str}`; save into
    `output_dir/model`. `progress(step, max_steps, last_logged_loss)` is called after each step."""
    if not train:
        raise InputError("no training examples")
    if settings.method not in ("full", "lora"):
        raise InputError(f"training method must be full or lora, not {settings.method!r}")
    output_dir = Path(output_dir)
    device = resolve_device(settings.accelerator)
    processes = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun (models.distributed)
    bf16 = _use_bf16(settings.bf16, device)
    checkpoints = output_dir / "checkpoints"
    last = _last_complete_checkpoint(checkpoints)
    args = _training_arguments(settings, checkpoints, device, bf16, processes)
    # The starting weights are only kept when WiSE-FT needs them (a second copy of the model).
    start_weights = (
        {k: v.detach().clone() for k, v in model.model.state_dict().items()}
        if settings.wise_ft_alpha < 1.0
        else {}
    )
    model.configure_language(settings.language, settings.task)
    # log-mels on the accelerator when the collator runs in this process; worker processes use the CPU
    model.feature_device = device if settings.dataloader_workers == 0 else "cpu"
    total = sum(p.numel() for p in model.model.parameters())
    trained = _wrap_lora(model.model, settings) if settings.method == "lora" else model.model
    trainable = sum(p.numel() for p in trained.parameters() if p.requires_grad)
    trainer = _WeightedTrainer(
        model=trained,
        args=args,
        train_dataset=_Examples(train, settings.speed_perturbation, settings.seed),
        data_collator=_AugmentingCollator(model, settings.seed) if settings.spec_augment else model.collate,
        callbacks=[_Progress(progress)] if progress else None,
    )
    started = time.perf_counter()
    out = trainer.train(resume_from_checkpoint=last)
    runtime = time.perf_counter() - started
    eval_loss = saved_eval_loss = None
    if eval_examples:
        trainer.data_collator = model.collate  # held-out loss on unmasked features
        eval_loss = float(trainer.evaluate(eval_dataset=_Examples(eval_examples))["eval_loss"])
    log_history = list(trainer.state.log_history)
    saved = _finish(model, trained, trainer, settings, start_weights, output_dir)
    if eval_examples:  # the weights saved: WiSE-FT moved them after the measurement above
        saved_eval_loss = eval_loss
        if start_weights:
            trainer.model = model.model
            saved_eval_loss = float(trainer.evaluate(eval_dataset=_Examples(eval_examples))["eval_loss"])
    train_loss = float(out.training_loss)
    samples = settings.max_steps * settings.batch_size * processes
    return TrainResult(
        output_dir=saved_model_dir(output_dir),
        train_loss=train_loss if math.isfinite(train_loss) else float("nan"),
        eval_loss=eval_loss,
        saved_eval_loss=saved_eval_loss,
        wise_ft_alpha=settings.wise_ft_alpha,
        steps=int(out.global_step),
        runtime_s=runtime,
        samples_per_second=samples / runtime if runtime > 0 else 0.0,
        device=device,
        bf16=bf16,
        resumed_from=last,
        log_history=log_history,
        trainable_parameters=trainable,
        total_parameters=total,
        processes=processes,
        saved=saved,
    )


def _training_arguments(
    settings: TrainSettings, checkpoints: Path, device: str, bf16: bool, processes: int
) -> TrainingArguments:
    """The Trainer's arguments for these settings, on this device, in this many processes."""
    return TrainingArguments(
        output_dir=str(checkpoints),
        max_steps=settings.max_steps,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        warmup_steps=settings.warmup_steps,
        weight_decay=settings.weight_decay,
        lr_scheduler_type="linear",
        logging_steps=settings.logging_steps,
        save_steps=settings.save_steps,
        save_total_limit=2,
        eval_strategy="no",
        seed=settings.seed,
        data_seed=settings.seed,
        bf16=bf16,
        use_cpu=device == "cpu",
        dataloader_num_workers=settings.dataloader_workers,
        remove_unused_columns=False,
        report_to=[],
        disable_tqdm=True,
        max_grad_norm=1.0,
        ddp_backend="gloo" if processes > 1 and device == "cpu" else None,
        activation_checkpointing=settings.gradient_checkpointing,
        torch_compile=settings.torch_compile,
        # non-reentrant: also right when the inputs of a checkpointed block need no gradient (LoRA)
        activation_checkpointing_kwargs={"use_reentrant": False} if settings.gradient_checkpointing else None,
    )


def _finish(
    model: SpeechModel,
    trained: torch.nn.Module,
    trainer: Trainer,
    settings: TrainSettings,
    start_weights: dict[str, torch.Tensor],
    output_dir: Path,
) -> bool:
    """After the last step: fold LoRA adapters in, refuse non-finite weights, interpolate towards
    the start (WiSE-FT), and save on the first process; whether this process saved."""
    if settings.method == "lora":
        # the adapters folded into the weights: what is saved is an ordinary model of the same shape
        model.model = trained.merge_and_unload()  # type: ignore[operator]
    if settings.gradient_checkpointing:
        model.model.activation_checkpointing_disable()
    model.feature_device = model.device
    _check_finite(model.model, trainer.state.log_history)
    if start_weights:
        interpolate_weights(model.model, start_weights, settings.wise_ft_alpha)
    saved = bool(trainer.is_world_process_zero())
    if saved:
        model.save(saved_model_dir(output_dir))
    return saved


@torch.no_grad()
def interpolate_weights(model: torch.nn.Module, start: dict[str, torch.Tensor], alpha: float) -> None:
    """θ ← α·θ_fine-tuned + (1 − α)·θ_start for every floating-point tensor.

    Weight-space ensembling with the starting model (Wortsman et al., 2022, "WiSE-FT") keeps most
    of the fine-tuning gain on the new data while giving back much of what was forgotten.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"wise_ft_alpha must lie in [0, 1], got {alpha}")
    state = model.state_dict()
    for name, tensor in state.items():
        if tensor.is_floating_point():
            tensor.copy_(alpha * tensor + (1.0 - alpha) * start[name].to(tensor.device, tensor.dtype))
