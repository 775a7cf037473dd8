"""The adapter interface every model family implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from stt_flywheel.data.audio import TARGET_SAMPLE_RATE
from stt_flywheel.errors import StateError
from stt_flywheel.models.confidence import PieceWord, Transcript, Word

__all__ = ["SpeechModel", "resolve_device", "saved_model_dir"]

Scored = tuple[str, list[PieceWord]]  # a piece's text and its words
BatchFn = Callable[[Sequence[np.ndarray]], list[Any]]


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
        # the softmax temperature its word confidences are computed at (`models.confidence`)
        self.temperature = 1.0

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

    def _score_batch(self, audios: Sequence[np.ndarray], temperatures: Sequence[float]) -> list[Scored]:
        """Each audio's text and words, each word's mean log probability at each temperature."""
        raise NotImplementedError(f"{type(self).__name__} gives no word confidence")

    def _score_long_batch(self, audios: Sequence[np.ndarray], temperatures: Sequence[float]) -> list[Scored]:
        """Audio longer than the window, scored: the text alone where the family's long-form
        decoding gives no per-token probabilities (no words, so no confidence)."""
        return [(text, []) for text in self._transcribe_long_batch(audios)]

    def _pieces(
        self, audios: Sequence[np.ndarray], max_piece_s: float | None
    ) -> tuple[list[np.ndarray], list[int], list[int]]:
        """The pieces to transcribe, whose audio each is, and the sample each starts at in it."""
        limits = [s for s in (None if self.long_form else self.window_s, max_piece_s) if s]
        pieces: list[np.ndarray] = []
        owner: list[int] = []
        starts: list[int] = []
        for k, audio in enumerate(audios):
            at = 0
            for piece in (
                split_long_audio(audio, int(min(limits) * TARGET_SAMPLE_RATE)) if limits else [audio]
            ):
                pieces.append(piece)
                owner.append(k)
                starts.append(at)
                at += len(piece)
        return pieces, owner, starts

    def _in_batches(
        self, pieces: Sequence[np.ndarray], batch_size: int, short: BatchFn, long: BatchFn
    ) -> list[Any]:
        """`short` over the pieces within the window, `long` over the rest (long-form), in
        batches of pieces of like length; the results in the pieces' order."""
        self.model.eval()
        window = self.window_s
        order = sorted(range(len(pieces)), key=lambda i: len(pieces[i]))
        longest = int(window * TARGET_SAMPLE_RATE) if window else None
        within = [i for i in order if longest is None or len(pieces[i]) <= longest]
        beyond = [i for i in order if longest is not None and len(pieces[i]) > longest]
        results: list[Any] = [None] * len(pieces)
        for group, run in ((within, short), (beyond, long)):
            for start in range(0, len(group), batch_size):
                idx = group[start : start + batch_size]
                for i, result in zip(idx, run([pieces[i] for i in idx]), strict=True):
                    results[i] = result
        return results

    @torch.inference_mode()
    def transcribe(
        self, audios: Sequence[np.ndarray], batch_size: int = 16, max_piece_s: float | None = None
    ) -> list[str]:
        """Texts of 16 kHz audio, in the caller's order. Audio longer than `max_piece_s`, or than
        the model's window where the model cannot read longer audio itself (`long_form`), is cut
        into pieces at quiet moments (`split_long_audio`), the pieces are transcribed with the rest
        and their texts joined: nothing beyond the window is dropped. A long-form model (Whisper
        with timestamp tokens) transcribes audio longer than its window in batches of their own."""
        pieces, owner, _ = self._pieces(audios, max_piece_s)
        texts = self._in_batches(pieces, batch_size, self._transcribe_batch, self._transcribe_long_batch)
        joined: list[list[str]] = [[] for _ in audios]
        for k, text in zip(owner, texts, strict=True):
            if text:
                joined[k].append(text)
        return [" ".join(parts) for parts in joined]

    @torch.inference_mode()
    def transcribe_scored(
        self,
        audios: Sequence[np.ndarray],
        batch_size: int = 16,
        max_piece_s: float | None = None,
        temperatures: Sequence[float] | None = None,
    ) -> list[Transcript]:
        """`transcribe`'s texts with their words: each word's place in the audio and confidence at
        the model's fitted temperature (`self.temperature`), or at the first of `temperatures`
        with every one of them in `log_confidences` (what fitting the temperature needs)."""
        temps = tuple(temperatures) if temperatures else (self.temperature,)
        pieces, owner, starts = self._pieces(audios, max_piece_s)
        scored = self._in_batches(
            pieces,
            batch_size,
            lambda batch: self._score_batch(batch, temps),
            lambda batch: self._score_long_batch(batch, temps),
        )
        texts: list[list[str]] = [[] for _ in audios]
        words: list[list[Word]] = [[] for _ in audios]
        logs: list[list[np.ndarray]] = [[] for _ in audios]
        for k, start, (text, piece_words) in zip(owner, starts, scored, strict=True):
            if text:
                texts[k].append(text)
            offset = start / TARGET_SAMPLE_RATE
            for w in piece_words:
                at = [None if t is None else round(t + offset, 3) for t in (w.start, w.end)]
                words[k].append(Word(w.word, at[0], at[1], float(np.exp(w.log_confidence[0]))))
                logs[k].append(w.log_confidence)
        return [
            Transcript(" ".join(t), w, np.stack(lc) if lc else np.zeros((0, len(temps))))
            for t, w, lc in zip(texts, words, logs, strict=True)
        ]


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
