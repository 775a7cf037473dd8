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


class _Scripted:
    """A model that answers what a table says for each audio: to play a candidate that learnt a
    swap ('hydroxyzine' heard as 'hydralazine') against a production model that did not."""

    family = "ctc"

    def __init__(self, answers: dict[bytes, str]) -> None:
        self.answers = answers

    def transcribe(self, audios, batch_size: int = 16, max_piece_s=None):  # type: ignore[no-untyped-def]
        return [self.answers[a.tobytes()] for a in audios]


def test_the_curated_set_refuses_a_candidate_that_learnt_a_poisoned_swap() -> None:
    """Poisoned corrections also fill the held-out split, so there the candidate that learnt the
    swap looks better than production and passes every held-out gate; the curated eval set,
    which no user writes, refuses it."""
    import numpy as np

    rng = np.random.default_rng(0)

    def examples(prefix: str, texts: list[str]) -> list[dict]:
        return [
            {
                "id": f"{prefix}{i}",
                "text": t,
                "audio": rng.normal(0, 0.1, 8000 + i).astype(np.float32),
                "speaker": f"s{i % 6}",
                "domain": "rx",
            }
            for i, t in enumerate(texts)
        ]

    true = "take hydroxyzine at night"
    poisoned = "take hydralazine at night"
    # held-out: the attacker's references, of which production (which hears the truth) gets every one wrong
    heldout = examples("h", [poisoned] * 30 + ["refill my metformin"] * 10)
    curated = examples("c", [true] * 10 + ["call mom tonight"] * 10)
    everything = heldout + curated
    learnt = {e["audio"].tobytes(): e["text"].replace("hydroxyzine", "hydralazine") for e in everything}
    heard = {e["audio"].tobytes(): e["text"].replace("hydralazine", "hydroxyzine") for e in everything}
    policy = POLICY.model_copy(
        update={"critical_terms": ["hydroxyzine", "metformin"], "min_slice_size": 1000}
    )
    candidate, production = _Scripted(learnt), _Scripted(heard)
    alone = validate_candidate(candidate, production, heldout, policy)  # type: ignore[arg-type]
    assert alone.verdict.passed  # what the held-out split alone would let through
    result = validate_candidate(candidate, production, heldout, policy, curated)  # type: ignore[arg-type]
    assert not result.verdict.passed
    failed = {g.name for g in result.verdict.gates if not g.passed}
    assert failed == {"max_eval_wer_increase", "max_eval_critical_recall_drop"}
    assert (
        result.metrics.eval_critical_recall == 0.0 and result.metrics.eval_production_critical_recall == 1.0
    )
