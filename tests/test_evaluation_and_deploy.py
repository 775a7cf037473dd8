"""Stages 4-6 as library calls, with the committed base model and real audio."""

import math
from pathlib import Path

import pytest

from stt_flywheel.config import RegressionSuite, ValidationPolicy
from stt_flywheel.deployment.endpoint import LocalEndpoint
from stt_flywheel.deployment.registry import LocalRegistry, RegistryError
from stt_flywheel.deployment.strategies import manual_promotion, promote_candidate
from stt_flywheel.evaluation.comparison import compare_models, load_manifest_examples
from stt_flywheel.evaluation.regression import run_regression_suites
from stt_flywheel.evaluation.validation import validate_candidate
from stt_flywheel.models import SpeechModel, load_model
from stt_flywheel.models.ctc import build_ctc_model

POLICY = ValidationPolicy(
    min_wer_improvement=0.02, max_p_value=0.05, max_worse_share=0.2, max_empty_share=0.05
)


@pytest.fixture(scope="module")
def base(base_model_dir: Path) -> SpeechModel:
    return load_model(base_model_dir, device="cpu")


@pytest.fixture(scope="module")
def untrained() -> SpeechModel:
    return build_ctc_model(seed=1)


def test_compare_models_keeps_per_utterance_rows(
    base: SpeechModel, untrained: SpeechModel, world: dict[str, Path]
) -> None:
    examples = load_manifest_examples(str(world["eval"]))
    comp = compare_models("eval", examples, untrained, base)
    assert len(comp.rows) == len(examples) == comp.candidate.utterances
    assert {r.id for r in comp.rows} == {e["id"] for e in examples}
    assert sum(r.candidate_errors for r in comp.rows) == (
        comp.candidate.substitutions + comp.candidate.deletions + comp.candidate.insertions
    )
    assert comp.delta_wer > 0.5  # an untrained model is far worse than production


def test_identical_candidate_is_not_an_improvement(base: SpeechModel, world: dict[str, Path]) -> None:
    heldout = load_manifest_examples(str(world["traffic-new"]))[:10]
    result = validate_candidate(base, base, heldout, POLICY)
    assert result.metrics["delta_wer"] == 0 and result.metrics["p_value"] == 1.0
    assert not result.verdict.passed
    assert {g.name for g in result.verdict.gates if not g.passed} == {"min_wer_improvement", "max_p_value"}


def test_untrained_candidate_is_rejected(
    base: SpeechModel, untrained: SpeechModel, world: dict[str, Path]
) -> None:
    heldout = load_manifest_examples(str(world["traffic-new"]))[:10]
    # basic-en keeps the junk token whole (whisper-en splits "3o3" into "30 3", which hides the trap)
    policy = POLICY.model_copy(update={"normalizer": "basic-en/1"})
    result = validate_candidate(untrained, base, heldout, policy, load_manifest_examples(str(world["eval"])))
    assert not result.verdict.passed
    # An untrained CTC model answers one junk token per utterance: a WER *lower* than that of a
    # production model that inserts words on new-domain audio. Its CER gives it away.
    assert result.metrics["wer"] < result.metrics["production_wer"]
    assert result.metrics["cer"] > result.metrics["production_cer"]
    assert "max_cer_increase" in {g.name for g in result.verdict.gates if not g.passed}
    assert result.metrics["eval_wer"] >= 1.0 > 10 * result.metrics["eval_production_wer"]
    assert result.metrics["slice_pharmacy_utterances"] == 10


def test_first_run_without_production_fails_closed(base: SpeechModel, world: dict[str, Path]) -> None:
    heldout = load_manifest_examples(str(world["traffic-new"]))[:4]
    result = validate_candidate(base, None, heldout, POLICY)
    assert math.isnan(result.metrics["production_wer"]) and not result.verdict.passed


def test_regression_suites(base: SpeechModel, untrained: SpeechModel, world: dict[str, Path]) -> None:
    suite_ids = [e["id"] for e in load_manifest_examples(str(world["suite-critical"]))]
    suites = [
        RegressionSuite(
            name="general", data=world["suite-general"], reference="production", max_relative_degradation=0.1
        ),
        RegressionSuite(name="fixed", data=world["suite-edge"], reference=0.9, max_relative_degradation=0.0),
        RegressionSuite(
            name="critical",
            data=world["suite-critical"],
            kind="critical",
            must_pass=[*suite_ids[:2], "ghost"],
        ),
    ]
    results, verdict = run_regression_suites(base, base, suites)
    by_name = {r.name: r for r in results}
    assert by_name["general"].passed and by_name["fixed"].passed
    assert by_name["general"].candidate_wer == by_name["general"].reference_wer
    assert (
        not by_name["critical"].passed and "ghost" in verdict.reasons[0]
    )  # a must-pass id missing from the suite
    bad, bad_verdict = run_regression_suites(untrained, base, suites[:1])
    assert not bad_verdict.passed and not bad[0].passed
    _, none_verdict = run_regression_suites(base, base, [])
    assert not none_verdict.passed and none_verdict.reasons == ["no regression suites configured"]
    _, no_prod = run_regression_suites(base, None, suites[:1])
    assert not no_prod.passed


@pytest.fixture
def registry(tmp_path: Path, base_model_dir: Path) -> LocalRegistry:
    reg = LocalRegistry(tmp_path / "r.sqlite", tmp_path / "models")
    v1 = reg.register(base_model_dir)
    reg.promote(v1.version)
    LocalEndpoint(reg, "ep").deploy(v1.version)
    return reg


PASS = {"stage": "validation", "passed": True, "reasons": ["ok"]}
FAIL = {"stage": "regression", "passed": False, "reasons": ["general: WER too high"]}


def _promote(registry: LocalRegistry, model_dir: Path, validation: dict, regression: dict, auto: bool = True):
    return promote_candidate(
        registry,
        LocalEndpoint(registry, "ep"),
        str(model_dir),
        validation=validation,
        regression=regression,
        auto_deploy=auto,
        keep_versions=3,
        dataset_version="ds-x",
        data_watermark="2026-11-01T00:00:00+00:00",
        run_id="run-1",
        metrics={"wer": 0.1},
    )


def test_deployer_rechecks_verdicts(registry: LocalRegistry, base_model_dir: Path) -> None:
    outcome = _promote(registry, base_model_dir, PASS, FAIL)
    assert outcome.action == "rejected" and outcome.reasons == ["regression: general: WER too high"]
    assert registry.aliases() == {"default": 1} and len(registry.versions()) == 1
    assert _promote(registry, base_model_dir, {}, PASS).action == "rejected"  # a missing verdict rejects


def test_deployer_promotes_and_is_idempotent(registry: LocalRegistry, base_model_dir: Path) -> None:
    outcome = _promote(registry, base_model_dir, PASS, PASS)
    assert (outcome.action, outcome.version, outcome.replaced) == ("deployed", 2, 1)
    assert registry.aliases() == {"default": 2, "previous": 1}
    assert LocalEndpoint(registry, "ep").traffic() == {2: 100}
    v2 = registry.get(2)
    assert (
        v2.watermark is not None
        and v2.evaluation["validation"]["passed"]
        and v2.lineage["parent_version"] == 1
    )
    again = _promote(registry, base_model_dir, PASS, PASS)  # a retried deploy task
    assert again.version == 2 and len(registry.versions()) == 2
    assert "Deployed version 2" in outcome.to_markdown()


def test_deployer_without_auto_deploy_only_registers(registry: LocalRegistry, base_model_dir: Path) -> None:
    outcome = _promote(registry, base_model_dir, PASS, PASS, auto=False)
    assert outcome.action == "registered"
    assert registry.aliases() == {"default": 1, "candidate": 2}
    assert LocalEndpoint(registry, "ep").traffic() == {1: 100}


REJECTED = {
    "stage": "validation",
    "passed": False,
    "reasons": ["x"],
    "gates": [{"name": "min_wer_improvement", "passed": False}, {"name": "max_p_value", "passed": True}],
}


def test_forced_promotion_needs_a_reason_and_records_what_it_overrode(
    registry: LocalRegistry, base_model_dir: Path
) -> None:
    endpoint = LocalEndpoint(registry, "ep")
    evaluation = {"validation": REJECTED, "regression": PASS}
    with pytest.raises(RegistryError, match="did not pass its evaluation .*validation: min_wer_improvement"):
        manual_promotion(
            registry,
            endpoint,
            reason="hotfix",
            candidate_dir=str(base_model_dir),
            evaluation=evaluation,
            run_id="r9",
        )
    # the candidate was registered with the evaluation that judged it, but nothing moved
    v2 = registry.find_by_run("r9")
    assert v2 is not None and v2.evaluation["validation"]["passed"] is False
    assert registry.aliases() == {"default": 1} and endpoint.traffic() == {1: 100}
    with pytest.raises(RegistryError, match="needs a reason"):
        manual_promotion(registry, endpoint, reason="  ", version=v2.version, force=True)
    outcome = manual_promotion(registry, endpoint, reason="pharmacy launch", version=v2.version, force=True)
    assert (outcome.action, outcome.version, outcome.replaced) == ("deployed", v2.version, 1)
    assert registry.aliases() == {"default": v2.version, "previous": 1} and endpoint.traffic() == {
        v2.version: 100
    }
    forced = [e for e in registry.audit_log() if e["action"] == "forced_promotion"]
    assert forced and forced[-1]["detail"] == {
        "overrode": 1,
        "reason": "pharmacy launch",
        "failed_gates": ["validation: min_wer_improvement"],
    }


def test_promoting_a_version_that_passed_needs_no_force(
    registry: LocalRegistry, base_model_dir: Path
) -> None:
    _promote(registry, base_model_dir, PASS | {"gates": []}, PASS | {"gates": []}, auto=False)
    outcome = manual_promotion(registry, LocalEndpoint(registry, "ep"), reason="reviewed", version=2)
    assert outcome.version == 2 and registry.aliases()["default"] == 2
    assert not [e for e in registry.audit_log() if e["action"] == "forced_promotion"]
