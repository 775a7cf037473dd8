"""Stage 5 as library calls: every suite's non-inferiority, with the committed base model and real audio."""

from pathlib import Path

from stt_flywheel.config import RegressionSuite
from stt_flywheel.evaluation.comparison import load_manifest_examples
from stt_flywheel.evaluation.regression import run_regression_suites
from stt_flywheel.models import SpeechModel


def test_regression_suites(
    base_model: SpeechModel, untrained_model: SpeechModel, world: dict[str, Path]
) -> None:
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
    results, verdict = run_regression_suites(base_model, base_model, suites)
    by_name = {r.name: r for r in results}
    assert by_name["general"].passed
    assert by_name["fixed"].passed
    assert by_name["general"].candidate_wer == by_name["general"].reference_wer
    assert not by_name["critical"].passed  # a must-pass id missing from the suite
    assert "ghost" in verdict.reasons[0]
    bad, bad_verdict = run_regression_suites(untrained_model, base_model, suites[:1])
    assert not bad_verdict.passed
    assert not bad[0].passed
    _, none_verdict = run_regression_suites(base_model, base_model, [])
    assert not none_verdict.passed
    assert none_verdict.reasons == ["no regression suites configured"]
    _, no_prod = run_regression_suites(base_model, None, suites[:1])
    assert not no_prod.passed
