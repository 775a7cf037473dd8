import re

from stt_flywheel.config import ValidationPolicy
from stt_flywheel.evaluation import Comparison
from stt_flywheel.gates import validation_verdict
from stt_flywheel.reports import regression_html, validation_html
from stt_flywheel.scoring import score_corpus

REFS = ["refill my metformin prescription", "turn the kitchen lights on"]
PROD = ["refill my met for men prescription", "turn the kitchen lights on"]
CAND = ["refill my metformin prescription", "turn the kitchen light on"]


def _comparison() -> Comparison:
    cand, cu = score_corpus(REFS, CAND)
    prod, pu = score_corpus(REFS, PROD)
    rows = [
        {
            "id": f"u{i}",
            "ref": c.ref,
            "ref_words": c.ref_words,
            "candidate_hyp": c.hyp,
            "candidate_errors": c.word_errors,
            "production_hyp": p.hyp,
            "production_errors": p.word_errors,
        }
        for i, (c, p) in enumerate(zip(cu, pu, strict=True))
    ]
    return Comparison("heldout", cand, prod, rows)


def test_validation_report_is_self_contained_and_shows_the_verdict() -> None:
    comp = _comparison()
    metrics = {
        "heldout_utterances": 2.0,
        "wer": comp.candidate.wer,
        "production_wer": comp.production.wer,
        "cer": comp.candidate.cer,
        "production_cer": comp.production.cer,
        "p_value": 5.08e-15,
        "worse_share": 0.5,
        "better_share": 0.5,
        "empty_share": 0.0,
    }
    verdict = validation_verdict(metrics, ValidationPolicy())
    page = validation_html(metrics, verdict, [comp])
    assert page.startswith("<!doctype html>") and "REJECTED" in page  # half the utterances got worse
    assert "5.08e-15" in page and "max_worse_share" in page
    assert "met for men" in page and "light on" in page  # the changed utterances are listed
    assert not re.search(r"<script|<link|src=|href=", page)


def test_regression_report_escapes_text() -> None:
    from stt_flywheel.evaluation import SuiteResult
    from stt_flywheel.gates import Gate, Verdict

    result = SuiteResult(
        "a<b", "edge", 0.2, 0.1, 0.1, 0.12, ["x&y"], [Gate("a<b.wer", False, 0.2, 0.12, "too high")], 3
    )
    page = regression_html([result], Verdict("regression", result.gates))
    assert "a&lt;b" in page and "x&amp;y" in page and "REJECTED" in page
