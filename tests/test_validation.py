"""Stage 4 as library calls, with the committed base model and real audio."""

import math
from pathlib import Path

from stt_flywheel.config import ValidationPolicy
from stt_flywheel.evaluation.comparison import compare_models, load_manifest_examples
from stt_flywheel.evaluation.validation import validate_candidate
from stt_flywheel.models import SpeechModel

POLICY = ValidationPolicy(
    min_wer_improvement=0.02, max_p_value=0.05, max_worse_share=0.2, max_empty_share=0.05
)


def test_compare_models_keeps_per_utterance_rows(
    base_model: SpeechModel, untrained_model: SpeechModel, world: dict[str, Path]
) -> None:
    examples = load_manifest_examples(str(world["eval"]))
    comp = compare_models("eval", examples, untrained_model, base_model)
    assert len(comp.rows) == len(examples) == comp.candidate.utterances
    assert {r.id for r in comp.rows} == {e["id"] for e in examples}
    assert sum(r.candidate_errors for r in comp.rows) == (
        comp.candidate.substitutions + comp.candidate.deletions + comp.candidate.insertions
    )
    assert comp.delta_wer > 0.5  # an untrained model is far worse than production


def test_identical_candidate_is_not_an_improvement(base_model: SpeechModel, world: dict[str, Path]) -> None:
    heldout = load_manifest_examples(str(world["traffic-new"]))[:10]
    result = validate_candidate(base_model, base_model, heldout, POLICY)
    assert result.metrics.delta_wer == 0
    assert result.metrics.p_value == 1.0
    assert not result.verdict.passed
    assert {g.name for g in result.verdict.gates if not g.passed} == {"min_wer_improvement", "max_p_value"}


def test_untrained_candidate_is_rejected(
    base_model: SpeechModel, untrained_model: SpeechModel, world: dict[str, Path]
) -> None:
    heldout = load_manifest_examples(str(world["traffic-new"]))[:10]
    # basic-en keeps the junk token whole (whisper-en splits "3o3" into "30 3", which hides the trap)
    policy = POLICY.model_copy(update={"normalizer": "basic-en/1"})
    result = validate_candidate(
        untrained_model, base_model, heldout, policy, load_manifest_examples(str(world["eval"]))
    )
    assert not result.verdict.passed
    # An untrained CTC model answers one junk token per utterance: a WER *lower* than that of a
    # production model that inserts words on new-domain audio. Its CER gives it away.
    assert result.metrics.wer < result.metrics.production_wer
    assert result.metrics.cer > result.metrics.production_cer
    assert "max_cer_increase" in {g.name for g in result.verdict.gates if not g.passed}
    assert result.metrics.eval_wer >= 1.0 > 10 * result.metrics.eval_production_wer
    assert result.metrics.slices["pharmacy"].utterances == 10


def test_first_run_without_production_fails_closed(base_model: SpeechModel, world: dict[str, Path]) -> None:
    heldout = load_manifest_examples(str(world["traffic-new"]))[:4]
    result = validate_candidate(base_model, None, heldout, POLICY)
    assert math.isnan(result.metrics.production_wer)
    assert not result.verdict.passed
