"""The adapter interface every model family implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from stt_flywheel.errors import StateError

__all__ = ["SpeechModel", "resolve_device", "saved_model_dir"]


def saved_model_dir(artifact_dir: str | Path) -> Path:
    """Where a trained model lies inside its Model artifact: `<artifact>/model`, beside the checkpoints.

    The trainer saves there and every reader (the stages, the run ledger, `registry promote --run`)
    asks this function, so the layout is written down once.
    """
    return Path(artifact_dir) / "model"


def resolve_device(device: str = "auto") -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise StateError("accelerator 'cuda' requested but no CUDA device is available")
    return device


class SpeechModel(ABC):
    """A speech-to-text model with its processor.

    `transcribe` decodes in batches sorted by length (padding costs compute), and returns texts in
    the caller's order. `collate` turns raw (audio, text) examples into a padded training batch.
    """

    family: ClassVar[str]
    feature_time_axis: ClassVar[int]  # the time axis of `input_features` in a collated batch

    def __init__(self, model: Any, processor: Any, device: str = "cpu") -> None:
        self.model = model
        self.processor = processor
        self.device = device
        # where log-mel features are computed (the feature extractors run their STFT in torch):
        # the model's device, except in dataloader worker processes, which must not touch CUDA
        self.feature_device = device
        self.model.to(device)

    @classmethod
    @abstractmethod
    def load(cls, model_dir: str | Path, device: str = "auto") -> SpeechModel: ...

    @abstractmethod
    def _transcribe_batch(self, audios: Sequence[np.ndarray]) -> list[str]: ...

    @abstractmethod
    def collate(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Batch examples with keys `audio` (float32 16 kHz) and `text` into model inputs + labels."""

    def save(self, out_dir: str | Path) -> None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(out_dir))
        self.processor.save_pretrained(str(out_dir))

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @torch.inference_mode()
    def transcribe(self, audios: Sequence[np.ndarray], batch_size: int = 16) -> list[str]:
        self.model.eval()
        order = sorted(range(len(audios)), key=lambda i: len(audios[i]))
        out: list[str] = [""] * len(audios)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            for i, text in zip(idx, self._transcribe_batch([audios[i] for i in idx]), strict=True):
                out[i] = text
        return out
