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
    result, _ = score_corpus([refs[k] for k in ids], [hyps[k] for k in ids], normalizer)
    if json:
        print_json(result.as_dict() | {"word_errors": result.word_errors})
        return
    console.print(
        f"{result.utterances} utterances, {result.ref_words} reference words, normaliser {result.normalizer}\n"
        f"WER {result.wer:.4%} (raw {result.raw_wer:.4%})  CER {result.cer:.4%}\n"
        f"H {result.hits}  S {result.substitutions}  D {result.deletions}  I {result.insertions}  "
        f"errors {result.word_errors}",
        highlight=False,
    )


def compare(
    ref: Annotated[Path, typer.Option(help="Reference transcripts: sclite trn or JSONL (id, text).")],
    hyp_a: Annotated[Path, typer.Option("--hyp-a", help="System A (e.g. the candidate).")],
    hyp_b: Annotated[Path, typer.Option("--hyp-b", help="System B (e.g. production).")],
    normalizer: NormalizerOpt = "whisper-en/1",
    confidence: Annotated[float, typer.Option(help="Confidence of the bootstrap interval.")] = 0.95,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples.")] = 1000,
    json: JsonOpt = False,
) -> None:
    """Paired comparison on the same utterances: ΔWER = WER(A) − WER(B) with its bootstrap interval, and the
    p-values of the Wilcoxon signed-rank, paired t and MAPSSWE tests."""
    from stt_flywheel.config import ValidationPolicy
    from stt_flywheel.evaluation.comparison import comparison_from_texts, summarize_comparison
    from stt_flywheel.scoring.corpus import match_transcripts, read_transcripts

    refs = read_transcripts(ref)
    a, b = read_transcripts(hyp_a), read_transcripts(hyp_b)
    ids = match_transcripts(refs, a, "system A")
    match_transcripts(refs, b, "system B")
    policy = ValidationPolicy(normalizer=normalizer, confidence=confidence, bootstrap_resamples=resamples)
    examples = [{"id": k, "text": refs[k]} for k in ids]
    comp = comparison_from_texts(
        "compare", examples, [a[k] for k in ids], [b[k] for k in ids], policy.normalizer
    )
    metrics, details = summarize_comparison(comp, policy)
    out = {
        "utterances": len(ids),
        "normalizer": details["normalizer"],
        "wer_a": metrics["wer"],
        "wer_b": metrics["production_wer"],
        "delta_wer": metrics["delta_wer"],
        "interval": details["interval"],
        "p_values": {name: t["p_value"] for name, t in details["tests"].items()},
        "a_better": details["tests"]["wilcoxon"]["better"],
        "a_worse": details["tests"]["wilcoxon"]["worse"],
        "newly_broken": metrics.get("newly_broken"),
        "newly_fixed": metrics.get("newly_fixed"),
    }
    if json:
        print_json(out)
        return
    iv = out["interval"]
    console.print(
        f"{out['utterances']} utterances, normaliser {out['normalizer']}\n"
        f"WER A {out['wer_a']:.4%}   WER B {out['wer_b']:.4%}\n"
        f"ΔWER (A − B) {out['delta_wer']:+.4%}, {iv['confidence']:.0%} interval "
        f"[{iv['low']:+.4%}, {iv['high']:+.4%}] ({iv['resamples']} resamples by {iv['unit']})\n"
        f"A better on {out['a_better']}, worse on {out['a_worse']} utterances\n"
        + "\n".join(f"p ({name}): {p:.3g}" for name, p in out["p_values"].items()),
        highlight=False,
    )
