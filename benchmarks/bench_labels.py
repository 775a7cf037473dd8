"""Learning from fewer corrections: a review budget spent by confidence against one spent at random,
and pseudo-labels on top, each after one training turn from the committed base model.

The world is the demo's: a pool of traffic the base model transcribed (new-domain pharmacy requests
and general ones, synthesised by espeak-ng), with the words each speaker really said standing in for
a reviewer's correction, and a held-out test set of new-domain utterances it never trains on.

For each budget and seed:

- **random**: `budget` predictions of the pool drawn at random;
- **confidence**: `data.proposal.choose`, what `review propose` picks: least sure first, spread over
  domains and speakers;
- **confidence + pseudo-labels**: the same, and the pool's other predictions whose confidence is
  at least `--pseudo-min` as their own labels, drawn half as often (the dataset builder's rule).

A reviewed prediction teaches only where the reviewer changed it (the dataset builder trains on
corrections, not confirmations), so a budget spent on transcripts that were right teaches nothing.
One turn trains a copy of the base model on what the budget bought, for the same number of steps
whatever the budget. Reported: the held-out new-domain WER and the critical terms' recall, the
mean over seeds with the lowest and highest, beside the base model's.

Run with `make bench-labels` (or `python benchmarks/bench_labels.py [--budgets 50 100 200 400]
[--seeds 3] [--steps 150]`); about 40 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from stt_flywheel.config import DEFAULT_BASE_MODEL
from stt_flywheel.data.audio import load_audio
from stt_flywheel.data.manifest import Utterance
from stt_flywheel.data.proposal import Proposal, choose
from stt_flywheel.demo.world import GENERAL, NEW_DOMAIN, synthesize_set
from stt_flywheel.models import SpeechModel, load_model
from stt_flywheel.models.training import TrainSettings, fine_tune
from stt_flywheel.scoring.alignment import align_pairs
from stt_flywheel.scoring.corpus import score_corpus
from stt_flywheel.scoring.text import normalize

CRITICAL = ("metformin", "ibuprofen", "amoxicillin", "lisinopril", "warfarin")


def critical_recall(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """The share of the critical terms' occurrences in the references that the hypotheses got right."""
    found = total = 0
    for alignment in align_pairs([normalize(r) for r in refs], [normalize(h) for h in hyps]):
        for op, ref, _ in alignment.steps:
            if ref in CRITICAL:
                total += 1
                found += op == "C"
    return found / total if total else float("nan")


def evaluate(model: SpeechModel, test: list[Utterance], audios: list[np.ndarray]) -> tuple[float, float]:
    hyps = model.transcribe(audios)
    score, _ = score_corpus([u.text for u in test], hyps, per_utterance=False)
    return score.wer, critical_recall([u.text for u in test], hyps)


def train_turn(
    base: SpeechModel, examples: list[dict[str, Any]], steps: int, seed: int, out: Path
) -> SpeechModel:
    model = copy.copy(base)
    model.model = copy.deepcopy(base.model)
    settings = TrainSettings(
        max_steps=steps,
        learning_rate=3e-4,
        batch_size=16,
        warmup_steps=10,
        seed=seed,
        save_steps=10 * steps,
        logging_steps=steps,
        accelerator="cpu",
    )
    fine_tune(model, examples, out, settings)
    return model


def summary(values: Sequence[float]) -> str:
    return f"{statistics.mean(values):.3f} ({min(values):.3f}–{max(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", type=int, nargs="+", default=[50, 100, 200, 400])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--pool-new", type=int, default=480)
    parser.add_argument("--pool-general", type=int, default=240)
    parser.add_argument("--test", type=int, default=120)
    parser.add_argument("--pseudo-min", type=float, default=0.9)
    args = parser.parse_args()
    console = Console()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pool = synthesize_set("bl-new", NEW_DOMAIN, args.pool_new, 501, root / "pool-new")
        pool += synthesize_set("bl-gen", GENERAL, args.pool_general, 502, root / "pool-gen")
        test = synthesize_set("bl-test", NEW_DOMAIN, args.test, 503, root / "test")
        pool_audio = [load_audio(u.audio).samples for u in pool]
        test_audio = [load_audio(u.audio).samples for u in test]
        base = load_model(DEFAULT_BASE_MODEL, device="cpu")
        heard = base.transcribe_scored(pool_audio)
        now = datetime.now(UTC)
        candidates = [
            Proposal(u.id, now, "1", t.confidence, None, t.text, u.domain or "", u.speaker or "", u.audio)
            for u, t in zip(pool, heard, strict=True)
        ]
        by_id = {u.id: (u, a, t) for u, a, t in zip(pool, pool_audio, heard, strict=True)}
        wrong = sum(normalize(t.text) != normalize(u.text) for u, t in zip(pool, heard, strict=True))
        base_wer, base_recall = evaluate(base, test, test_audio)
        console.print(
            f"pool {len(pool)} predictions ({wrong} wrong), test {len(test)} new-domain utterances; "
            f"base model: WER {base_wer:.3f}, critical recall {base_recall:.3f}",
            highlight=False,
        )

        def examples(ids: list[str], pseudo: bool) -> tuple[list[dict[str, Any]], int]:
            """What the budget bought: the reviewed predictions that were wrong, with the words said;
            with `pseudo`, the confident rest with their own words at half weight."""
            out = []
            for i in ids:
                u, audio, t = by_id[i]
                if normalize(t.text) != normalize(u.text):
                    out.append({"audio": audio, "text": u.text, "weight": 1.0})
            taught = len(out)
            if pseudo:
                chosen = set(ids)
                sure = [
                    c
                    for c in candidates
                    if c.prediction_id not in chosen and (c.confidence or 0) >= args.pseudo_min
                ]
                sure.sort(key=lambda c: -(c.confidence or 0))
                for c in sure[: max(taught, 1)]:  # at most half of the split, as pseudo_label_max_share 0.5
                    out.append({"audio": by_id[c.prediction_id][1], "text": c.hypothesis, "weight": 0.5})
            return out, taught

        results: dict[tuple[str, int], list[tuple[float, float, int]]] = {}
        for budget in args.budgets:
            for seed in range(args.seeds):
                picks = {
                    "random": random.Random(seed).sample([c.prediction_id for c in candidates], budget),
                    "confidence": [c.prediction_id for c in choose(candidates, budget)],
                }
                for name, ids, pseudo in (
                    ("random", picks["random"], False),
                    ("confidence", picks["confidence"], False),
                    ("confidence + pseudo-labels", picks["confidence"], True),
                ):
                    data, taught = examples(ids, pseudo)
                    model = train_turn(base, data, args.steps, seed, root / f"run-{name[:4]}-{budget}-{seed}")
                    wer, recall = evaluate(model, test, test_audio)
                    results.setdefault((name, budget), []).append((wer, recall, taught))
                    console.print(
                        f"  budget {budget}, seed {seed}, {name}: {taught} corrections, "
                        f"{len(data) - taught} pseudo-labels; WER {wer:.3f}, critical recall {recall:.3f}",
                        highlight=False,
                    )
    table = Table(
        title=f"One training turn ({args.steps} steps) per budget, mean over {args.seeds} seeds (lowest–highest); "
        f"base model WER {base_wer:.3f}, critical recall {base_recall:.3f}"
    )
    for col in ("budget", "selection", "corrections used", "held-out new-domain WER", "critical-term recall"):
        table.add_column(col)
    for (name, budget), rows in results.items():
        table.add_row(
            str(budget),
            name,
            f"{statistics.mean(r[2] for r in rows):.0f}",
            summary([r[0] for r in rows]),
            summary([r[1] for r in rows]),
        )
    console.print(table)
    top = max(args.budgets)
    target = statistics.mean(r[0] for r in results[("random", top)])
    reached = [b for b in args.budgets if statistics.mean(r[0] for r in results[("confidence", b)]) <= target]
    console.print(
        f"Random selection's mean WER at {top} corrections: {target:.3f}; confidence selection reaches it "
        + (f"with {min(reached)}." if reached else "with none of the budgets measured.")
        + f" ({(time.perf_counter() - started) / 60:.0f} min)",
        highlight=False,
    )


if __name__ == "__main__":
    main()
