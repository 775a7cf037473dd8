"""The adapter interface every model family implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from stt_flywheel.data.audio import TARGET_SAMPLE_RATE
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

    @torch.inference_mode()
    def reference_losses(self, audios: Sequence[np.ndarray], texts: Sequence[str]) -> list[float]:
        """The model's training loss on each (audio, reference text) pair, one pair at a time (its
        mean per label, so no pair is weighed by the padding of another): how sure the model is
        of each reference, lower being surer."""
        self.model.eval()
        losses = []
        for audio, text in zip(audios, texts, strict=True):
            batch = self.collate([{"audio": audio, "text": text}])
            losses.append(float(self.model(**{k: v.to(self.device) for k, v in batch.items()}).loss))
        return losses

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def configure_language(self, language: str, task: str) -> None:
        """What a multilingual model transcribes by default, saved with it; a model of one
        language (the CTC family) has nothing to set."""
        return None

    @property
    def window_s(self) -> float | None:
        """The longest audio the model hears at once (Whisper: 30 s), None when it has no limit."""
        return None

    @property
    def long_form(self) -> bool:
        """Whether it transcribes audio longer than its window itself (`_transcribe_long_batch`)."""
        return False

    def _transcribe_long_batch(self, audios: Sequence[np.ndarray]) -> list[str]:
        raise NotImplementedError(f"{type(self).__name__} has no long-form transcription")

    @torch.inference_mode()
    def transcribe(
        self, audios: Sequence[np.ndarray], batch_size: int = 16, max_piece_s: float | None = None
    ) -> list[str]:
        """Texts of 16 kHz audio, in the caller's order. Audio longer than `max_piece_s`, or than
        the model's window where the model cannot read longer audio itself (`long_form`), is cut
        into pieces at quiet moments (`split_long_audio`), the pieces are transcribed with the rest
        and their texts joined: nothing beyond the window is dropped. A long-form model (Whisper
        with timestamp tokens) transcribes audio longer than its window in batches of their own."""
        window = self.window_s
        limits = [s for s in (None if self.long_form else window, max_piece_s) if s]
        pieces: list[np.ndarray] = []
        owner: list[int] = []
        for k, audio in enumerate(audios):
            cut = split_long_audio(audio, int(min(limits) * TARGET_SAMPLE_RATE)) if limits else [audio]
            pieces.extend(cut)
            owner.extend([k] * len(cut))
        self.model.eval()
        order = sorted(range(len(pieces)), key=lambda i: len(pieces[i]))
        longest = int(window * TARGET_SAMPLE_RATE) if window else None
        short = [i for i in order if longest is None or len(pieces[i]) <= longest]
        long = [i for i in order if longest is not None and len(pieces[i]) > longest]
        texts: list[str] = [""] * len(pieces)
        for group, transcribe in ((short, self._transcribe_batch), (long, self._transcribe_long_batch)):
            for start in range(0, len(group), batch_size):
                idx = group[start : start + batch_size]
                for i, text in zip(idx, transcribe([pieces[i] for i in idx]), strict=True):
                    texts[i] = text
        joined: list[list[str]] = [[] for _ in audios]
        for k, text in zip(owner, texts, strict=True):
            if text:
                joined[k].append(text)
        return [" ".join(parts) for parts in joined]


def split_long_audio(audio: np.ndarray, max_samples: int, search_s: float = 5.0) -> list[np.ndarray]:
    """`audio` in consecutive pieces of at most `max_samples`, each cut at the quietest 20 ms of
    the last `search_s` seconds before the limit (a pause between words, where there is one)
    rather than at the limit itself, so a word is rarely split in two. Together the pieces are
    the whole audio, in order; audio within the limit is one piece."""
    max_samples = max(1, max_samples)
    if len(audio) <= max_samples:
        return [audio]
    frame = TARGET_SAMPLE_RATE // 50
    pieces = []
    start = 0
    while len(audio) - start > max_samples:
        end = start + max_samples
        lo = max(start + frame, end - int(search_s * TARGET_SAMPLE_RATE))
        window = np.asarray(audio[lo:end], dtype=np.float64)
        frames = len(window) // frame
        if frames >= 1:
            energy = (window[: frames * frame].reshape(frames, frame) ** 2).sum(axis=1)
            # the latest of the quietest frames: pieces as long as the limit allows
            quiet = frames - 1 - int(np.argmin(energy[::-1]))
            end = lo + quiet * frame + frame // 2
        pieces.append(audio[start:end])
        start = end
    pieces.append(audio[start:])
    return pieces
