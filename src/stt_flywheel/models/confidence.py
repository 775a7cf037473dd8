"""Word confidence: how sure the model is of each word it wrote, and its calibration.

A word's raw confidence is the geometric mean of the probabilities the model gave the word's
pieces, at a softmax temperature T:

- CTC: the posterior of the frame's chosen token on each of the word's frames (from its first
  character's first frame to its last character's last, blanks between them included);
- Whisper: the probability of each of the word's tokens when it was chosen (greedy decoding).

An utterance's confidence is its least sure word's: where an error most likely is. (The product of
its words', the chance that every word is right were they independent, ranked transcripts by their
length as much as by their errors: with a calibrated model it found 345 of the 400 wrong ones
among the 400 it ranked lowest, where the least sure word found all 400.) An utterance without
words has none.

T does not change what the model writes (the chosen token is the most probable at any T), only how
sure it says it is. The trainer fits T per version on held-out data (`fit_temperature`: the T whose
confidences best predict which words were right, by the mean log loss) and saves it beside the
model (`calibration.json`); a model without one serves T = 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from stt_flywheel.scoring.alignment import align_pairs
from stt_flywheel.scoring.text import DEFAULT_SCORING_NORMALIZER, get_normalizer

__all__ = [
    "CALIBRATION_FILE",
    "TEMPERATURES",
    "PieceWord",
    "Transcript",
    "Word",
    "calibrate",
    "calibrate_saved",
    "calibration_summary",
    "correct_words",
    "expected_calibration_error",
    "fit_temperature",
    "read_calibration",
    "read_temperature",
    "reliability",
    "write_temperature",
]

CALIBRATION_FILE = "calibration.json"
# The temperatures `fit_temperature` chooses among: 0.25 to 16, evenly on a log scale, 1 among them.
TEMPERATURES: tuple[float, ...] = tuple(float(2 ** (k / 8)) for k in range(-16, 33))


@dataclass(frozen=True)
class Word:
    """One word of a transcript: where it lies in the audio (seconds; None where the model family
    gives no word timing) and how sure the model is of it (0–1, calibrated)."""

    word: str
    start: float | None
    end: float | None
    confidence: float

    def as_dict(self) -> dict[str, object]:
        return {"word": self.word, "start": self.start, "end": self.end, "confidence": self.confidence}


@dataclass(frozen=True)
class PieceWord:
    """A word as a model's batch gives it: times within its piece of audio, and the mean log
    probability of its pieces at each temperature asked for."""

    word: str
    start: float | None
    end: float | None
    log_confidence: np.ndarray  # (temperatures,)


@dataclass(frozen=True)
class Transcript:
    """A transcript with its words; `log_confidences` (words × temperatures) where asked for."""

    text: str
    words: list[Word] = field(default_factory=list)
    log_confidences: np.ndarray | None = None

    @property
    def confidence(self) -> float | None:
        """How sure the model is of its least sure word; None without words."""
        return min((w.confidence for w in self.words), default=None)


def read_temperature(model_dir: str | Path) -> float:
    """The temperature fitted for a saved model, 1.0 when it has none."""
    path = Path(model_dir) / CALIBRATION_FILE
    if not path.exists():
        return 1.0
    value = orjson.loads(path.read_bytes()).get("temperature")
    return float(value) if isinstance(value, int | float) and value > 0 else 1.0


def write_temperature(model_dir: str | Path, temperature: float, evidence: dict[str, object]) -> None:
    """Save the fitted temperature beside the model, with what it was fitted on."""
    body = {"temperature": temperature, **evidence}
    (Path(model_dir) / CALIBRATION_FILE).write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2))


def _log_loss(confidence: np.ndarray, correct: np.ndarray) -> float:
    p = np.clip(confidence, 1e-6, 1 - 1e-6)
    return float(-np.mean(np.where(correct, np.log(p), np.log1p(-p))))


def fit_temperature(
    log_confidences: np.ndarray, correct: np.ndarray, temperatures: Sequence[float] = TEMPERATURES
) -> tuple[float, dict[float, float]]:
    """The temperature (among `temperatures`, the columns of `log_confidences`: one row per word)
    whose confidences have the least mean log loss against `correct` (whether each word was right),
    and the loss at each. With no word, 1.0."""
    if len(correct) == 0:
        return 1.0, {}
    losses = {t: _log_loss(np.exp(log_confidences[:, k]), correct) for k, t in enumerate(temperatures)}
    return min(losses, key=lambda t: (losses[t], abs(math.log(t)))), losses


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Per equal-width bin of confidence with words in it: its range, how many words, their mean
    confidence and the share of them that were right (a reliability diagram's points)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    out = []
    for b in range(bins):
        mask = which == b
        if mask.any():
            out.append(
                {
                    "low": float(edges[b]),
                    "high": float(edges[b + 1]),
                    "words": int(mask.sum()),
                    "confidence": float(confidence[mask].mean()),
                    "accuracy": float(correct[mask].mean()),
                }
            )
    return out


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """The words' mean gap between confidence and accuracy, bin by bin, weighed by the bins' sizes."""
    if len(correct) == 0:
        return math.nan
    return float(
        sum(p["words"] * abs(p["confidence"] - p["accuracy"]) for p in reliability(confidence, correct, bins))
        / len(correct)
    )


def correct_words(
    words: Sequence[Sequence[str]], references: Sequence[str], normalizer: str = DEFAULT_SCORING_NORMALIZER
) -> list[list[bool | None]]:
    """Whether each transcript's each word was right against its reference: normalised alone (as
    the scoring normaliser would), its tokens aligned with the normalised reference, right when
    every one of them is a hit. None for a word the normaliser leaves nothing of."""
    norm = get_normalizer(normalizer)
    flat = [w for ws in words for w in ws]
    normed = norm.many([*references, *flat])
    refs, hyp_words = normed[: len(references)], iter(normed[len(references) :])
    hyps, owners = [], []
    for ws in words:
        tokens: list[str] = []
        owner: list[int] = []
        for k in range(len(ws)):
            for token in next(hyp_words).split():
                tokens.append(token)
                owner.append(k)
        hyps.append(" ".join(tokens))
        owners.append(owner)
    out = []
    for ws, owner, alignment in zip(words, owners, align_pairs(refs, hyps), strict=True):
        right: list[bool | None] = [None] * len(ws)
        at = 0
        for op, _, hyp in alignment.steps:
            if hyp is None:  # a reference word the hypothesis left out: no word of it to blame
                continue
            k = owner[at]
            right[k] = op == "C" and right[k] is not False
            at += 1
        out.append(right)
    return out


def calibrate(
    model: Any,
    examples: Sequence[dict[str, Any]],
    model_dir: str | Path,
    normalizer: str = DEFAULT_SCORING_NORMALIZER,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Fit `model`'s temperature on held-out `examples` (`{"audio", "text"}`), save it beside the
    model in `model_dir` and set it on `model`; returns what it was fitted on: how many words,
    the temperature, the expected calibration error and the reliability diagram at T = 1 and at
    the fitted T. Without a scored word, T stays 1."""
    transcripts = model.transcribe_scored(
        [e["audio"] for e in examples], batch_size=batch_size, temperatures=TEMPERATURES
    )
    right = correct_words(
        [[w.word for w in t.words] for t in transcripts], [e["text"] for e in examples], normalizer
    )
    logs = [
        t.log_confidences[k]
        for t, oks in zip(transcripts, right, strict=True)
        for k, ok in enumerate(oks)
        if ok is not None and t.log_confidences is not None
    ]
    correct = np.array([ok for oks in right for ok in oks if ok is not None], dtype=bool)
    matrix = np.array(logs).reshape(len(logs), len(TEMPERATURES))
    temperature, _ = fit_temperature(matrix, correct)
    unit, fitted = (
        np.exp(matrix[:, TEMPERATURES.index(1.0)]),
        np.exp(matrix[:, TEMPERATURES.index(temperature)]),
    )
    evidence = {
        "words": len(correct),
        "accuracy": float(correct.mean()) if len(correct) else math.nan,
        "ece_before": expected_calibration_error(unit, correct),
        "ece_after": expected_calibration_error(fitted, correct),
        "reliability_before": reliability(unit, correct),
        "reliability_after": reliability(fitted, correct),
    }
    write_temperature(model_dir, temperature, evidence)
    model.temperature = temperature
    return {"temperature": temperature, **evidence}


def calibrate_saved(
    model_dir: Path, heldout: Sequence[dict[str, Any]], normalizer: str, device: str = "auto"
) -> dict[str, float] | None:
    """`calibrate` the model saved in `model_dir` on the held-out split (its words against the
    corrections); the temperature, how many words and the error before and after. None without
    held-out examples, and where the model answered no word to score (T stays 1)."""
    if not heldout:
        return None
    from stt_flywheel.models import load_model

    return calibration_summary(
        calibrate(load_model(model_dir, device=device), heldout, model_dir, normalizer)
    )


def calibration_summary(evidence: dict[str, Any]) -> dict[str, float] | None:
    """What a run records of `calibrate`'s evidence; None when no word was scored (a model that
    answered nothing, or only long-form answers without words): there is no error to state."""
    if not evidence["words"]:
        return None
    return {k: float(evidence[k]) for k in ("temperature", "words", "ece_before", "ece_after")}


def read_calibration(model_dir: str | Path) -> dict[str, Any] | None:
    """What `calibrate` saved beside a model, None when it was never calibrated."""
    path = Path(model_dir) / CALIBRATION_FILE
    return dict(orjson.loads(path.read_bytes())) if path.exists() else None
