"""`score` and `compare`: sclite-exact WER of transcript files, and a paired comparison of two systems."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flywheel_pipelines.cli.common import JsonOpt, NormalizerOpt, console, print_json

__all__ = ["compare", "score"]


def score(
    ref: Annotated[Path, typer.Option(help="Reference transcripts: sclite trn or JSONL (id, text).")],
    hyp: Annotated[Path, typer.Option(help="Hypotheses, same formats, same utterance ids.")],
    normalizer: NormalizerOpt = "whisper-en/1",
    json: JsonOpt = False,
) -> None:
    """Corpus WER and CER with hits, substitutions, deletions and insertions (sclite-exact counts)."""
    from stt_flywheel.scoring.corpus import match_transcripts, read_transcripts, score_corpus

    refs, hyps = read_transcripts(ref), read_transcripts(hyp)
    ids = match_transcripts(refs, hyps)
    result, _ = score_corpus([refs[k] for k in ids], [hyps[k] for k in ids], normalizer, per_utterance=False)
    if json:
        print_json(result.as_dict() | {"word_errors": result.word_errors})
        return
    console.print(
        f"{result.utterances} utterances, {result.ref_words} reference words, normaliser {result.normalizer}\n"
        f"WER {result.wer:.4f} (raw, without the normaliser, {result.raw_wer:.4f})  CER {result.cer:.4f}\n"
        f"H {result.hits}  S {result.substitutions}  D {result.deletions}  I {result.insertions}  "
        f"errors {result.word_errors}",
        highlight=False,
    )


def compare(
    ref: Annotated[Path, typer.Option(help="Reference transcripts: sclite trn or JSONL (id, text).")],
    hyp_a: Annotated[Path, typer.Option("--hyp-a", help="System A (e.g. the candidate).")],
    hyp_b: Annotated[Path, typer.Option("--hyp-b", help="System B (e.g. production).")],
    normalizer: NormalizerOpt = "whisper-en/1",
    confidence: Annotated[
        float, typer.Option(min=0.5, max=0.9999, help="Confidence of the bootstrap interval (0.5 to 0.9999).")
    ] = 0.95,
    resamples: Annotated[int, typer.Option(min=100, help="Bootstrap resamples (at least 100).")] = 1000,
    json: JsonOpt = False,
) -> None:
    """Paired comparison on the same utterances: ΔWER = WER(A) − WER(B) with its bootstrap interval, and
    two-sided p-values of the Wilcoxon signed-rank, paired t and MAPSSWE tests (as NIST's sc_stats)."""
    from stt_flywheel.config import ValidationPolicy
    from stt_flywheel.evaluation.systems import compare_systems
    from stt_flywheel.scoring.corpus import read_transcripts

    policy = ValidationPolicy(normalizer=normalizer, confidence=confidence, bootstrap_resamples=resamples)
    result = compare_systems(read_transcripts(ref), read_transcripts(hyp_a), read_transcripts(hyp_b), policy)
    if json:
        print_json(result.as_dict())
        return
    iv = result.interval
    lines = [
        f"{result.utterances} utterances, normaliser {result.normalizer}",
        f"WER A {result.wer_a:.4f}   WER B {result.wer_b:.4f}",
        f"ΔWER (A − B) {result.delta_wer:+.4f}, {iv.confidence:.0%} interval "
        f"[{iv.low:+.4f}, {iv.high:+.4f}] ({iv.resamples} resamples by {iv.unit})",
        f"A better on {result.a_better}, worse on {result.a_worse} utterances",
        "two-sided tests (A and B differ, either way):",
    ]
    for name, test in result.tests.items():
        unit = "segments" if name == "mapsswe" else "utterances"
        lines.append(f"  {name}: p = {test.p_value:.3g}, statistic {test.statistic:.4g}, {test.n} {unit}")
    console.print("\n".join(lines), highlight=False)
