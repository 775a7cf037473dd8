"""Word confidence on the committed base model: how well it tells right words from wrong ones, and
its calibration before and after the temperature fit.

The utterances are synthesised (espeak-ng) from the demo world's general and new-domain sentences:
the model is right about most general words and wrong about many new-domain ones. Words are judged
right or wrong against the sentence (`models.confidence.correct_words`); the temperature is fitted
on every other utterance's words and the calibration error measured on the rest.

Run with `make bench` (or `python benchmarks/bench_confidence.py [--utterances N]`).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from stt_flywheel.config import DEFAULT_BASE_MODEL
from stt_flywheel.data.audio import load_audio
from stt_flywheel.demo.world import GENERAL, NEW_DOMAIN, synthesize_set
from stt_flywheel.models import load_model
from stt_flywheel.models.confidence import (
    TEMPERATURES,
    correct_words,
    expected_calibration_error,
    fit_temperature,
)


def auc(right: np.ndarray, score: np.ndarray) -> float:
    """The chance that a right word has a higher confidence than a wrong one (ties count half)."""
    good, bad = score[right], score[~right]
    greater = (good[:, None] > bad[None, :]).sum() + 0.5 * (good[:, None] == bad[None, :]).sum()
    return float(greater / (len(good) * len(bad)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--utterances", type=int, default=40, help="per domain")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        utts = synthesize_set("b-gen", GENERAL, args.utterances, 91, Path(tmp) / "g")
        utts += synthesize_set("b-new", NEW_DOMAIN, args.utterances, 92, Path(tmp) / "n")
        audios = [load_audio(u.audio).samples for u in utts]
    model = load_model(DEFAULT_BASE_MODEL, device="cpu")
    transcripts = model.transcribe_scored(audios, temperatures=TEMPERATURES)
    right = correct_words([[w.word for w in t.words] for t in transcripts], [u.text for u in utts])
    rows = [
        (k % 2, t.log_confidences[i], ok)
        for k, (t, oks) in enumerate(zip(transcripts, right, strict=True))
        for i, ok in enumerate(oks)
        if ok is not None and t.log_confidences is not None
    ]
    half = np.array([h for h, _, _ in rows]) == 0
    logs = np.array([lc for _, lc, _ in rows])
    ok = np.array([o for _, _, o in rows], dtype=bool)
    temperature, _ = fit_temperature(logs[half], ok[half])
    unit, fitted = TEMPERATURES.index(1.0), TEMPERATURES.index(temperature)
    table = Table(title=f"Word confidence, committed base model, {len(utts)} utterances, {len(ok)} words")
    for col in ("", "T = 1", f"fitted T = {temperature:.2f}"):
        table.add_column(col)
    table.add_row("share of words right", f"{ok.mean():.3f}", "")
    table.add_row(
        "AUC: right vs wrong words (all)",
        f"{auc(ok, logs[:, unit]):.3f}",
        f"{auc(ok, logs[:, fitted]):.3f}",
    )
    table.add_row(
        "mean confidence, right / wrong",
        f"{np.exp(logs[ok, unit]).mean():.3f} / {np.exp(logs[~ok, unit]).mean():.3f}",
        f"{np.exp(logs[ok, fitted]).mean():.3f} / {np.exp(logs[~ok, fitted]).mean():.3f}",
    )
    table.add_row(
        "expected calibration error (other half)",
        f"{expected_calibration_error(np.exp(logs[~half, unit]), ok[~half]):.3f}",
        f"{expected_calibration_error(np.exp(logs[~half, fitted]), ok[~half]):.3f}",
    )
    Console().print(table)


if __name__ == "__main__":
    main()
