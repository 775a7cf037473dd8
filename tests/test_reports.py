import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import orjson
import pytest
from PIL import Image

from stt_flywheel.config import ValidationPolicy
from stt_flywheel.evaluation.comparison import comparison_from_texts
from stt_flywheel.evaluation.gates import Gate, Verdict, slice_gates, validation_verdict
from stt_flywheel.evaluation.regression import SuiteResult
from stt_flywheel.evaluation.reports import (
    ReportContext,
    interval_plot,
    loss_curve_html,
    regression_html,
    slice_plot,
    validation_html,
)
from stt_flywheel.evaluation.summary import summarize_comparison

REFS = ["refill my metformin prescription", "turn the kitchen lights on", "open the garage door", "call mom"]
PROD = ["refill my met for men prescription", "turn the kitchen lights on", "open garage door", "call mom"]
CAND = ["refill my metformin prescription", "turn the kitchen light on", "open the garage door", "call"]
SPEAKERS = ["a", "a", "b", "b"]

POLICY = ValidationPolicy(min_slice_size=2, critical_terms=["metformin"])
CONTEXT = ReportContext("run-42", "v3", "trained by this run from v3", "ds-0123456789ab", "whisper-en/1")


def _validation_page() -> str:
    examples = [
        {"id": f"u{i}", "text": r, "speaker": s, "domain": "rx" if i == 0 else "home"}
        for i, (r, s) in enumerate(zip(REFS, SPEAKERS, strict=True))
    ]
    comp = comparison_from_texts("heldout", examples, CAND, PROD, POLICY.normalizer)
    metrics, details = summarize_comparison(comp, POLICY)
    metrics = metrics.model_copy(update={"p_value": 5.08e-15})  # shown as given
    verdict = validation_verdict(metrics, POLICY)
    verdict.gates.extend(slice_gates(details["slices"], POLICY))
    return validation_html(metrics.flat(), verdict, [comp], details, CONTEXT)


def _regression_page() -> str:
    results = [
        SuiteResult(
            "general",
            "benchmark",
            0.05,
            0.02,
            0.06,
            0.086,
            [],
            [Gate("general.non_inferiority", True, 0.01, 0.026, "ok")],
            40,
            -0.01,
            -0.03,
            0.01,
            0.012,
            0.001,
            0.002,
            newly_broken=3,
            newly_fixed=1,
            broken_examples=[
                {
                    "id": "g7",
                    "candidate_errors": 1,
                    "production_alignment": ("call mom", "call mom", "C C"),
                    "candidate_alignment": ("call MOM", "call ***", "C D"),
                }
            ],
        ),
        SuiteResult(
            "a<b",
            "edge",
            0.2,
            0.1,
            0.1,
            0.12,
            ["x&y"],
            [Gate("a<b.wer", False, 0.2, 0.12, "too high")],
            3,
            0.1,
            0.02,
            0.2,
            0.25,
            0.6,
            0.6,
        ),
    ]
    return regression_html(results, Verdict("regression", [g for r in results for g in r.gates]), CONTEXT)


def test_validation_report_is_self_contained_and_shows_the_evaluation() -> None:
    page = _validation_page()
    assert page.startswith("<!doctype html>")
    assert "REJECTED" in page  # a quarter got worse; tiny set
    assert "5.08e-15" in page
    assert "max_worse_share" in page
    assert "whisper-en/1" in page
    assert "bootstrap interval" in page
    assert "mapsswe" in page
    assert "paired_t" in page
    assert page.count("<svg") == 3  # slice bars, slice intervals, per-utterance ΔWER histogram
    assert "Newly broken" in page
    assert "Newly fixed" in page
    assert "MET FOR MEN" in page  # an alignment
    assert "speaker" in page
    assert "Critical terms" in page
    assert not re.search(r'<script|<link|\ssrc=|href="(?!#)', page)


def test_every_report_names_what_it_judged() -> None:
    for page in (_validation_page(), _regression_page()):
        head = page[page.index("<h1>") : page.index("<h2>")]
        for named in (
            "run: run-42",
            "production: v3",
            "candidate: trained by this run from v3",
            "dataset: ds-0123456789ab",
            "normaliser: whisper-en/1",
            "made: ",
        ):
            assert named in head


def test_validation_report_explains_itself() -> None:
    page = _validation_page()
    assert (
        "policy: paired — the candidate is judged against the production model on the same utterances" in page
    )
    assert "(the share of resamples in which the candidate's WER is lower than production's)" in page
    improvements = page[page.index("Largest improvements") :]
    assert "u0" in improvements  # "met for men" → "metformin": the candidate's largest gain
    assert "a slice fails above +0.05 (dashed) with its interval above 0" in page
    assert "production → candidate" in page


def test_regression_report_escapes_text_and_plots_the_margins() -> None:
    page = _regression_page()
    assert "a&lt;b" in page
    assert "x&amp;y" in page
    assert "REJECTED" in page
    assert page.count("<svg") == 1
    broken = page[page.index("Newly broken in general: 3 (the first 1)") :]
    assert "g7" in broken
    assert "call ***" in broken
    assert "Newly broken in a&lt;b" not in page  # nothing newly broken there
    assert not re.search(r'<script|<link|\ssrc=|href="(?!#)', page)


def test_the_loss_curve_plots_both_losses_or_says_why_not() -> None:
    history = [{"step": 10, "loss": 3.1}, {"step": 20, "loss": 2.2}, {"step": 20, "eval_loss": 2.5}]
    page = loss_curve_html(history, CONTEXT)
    assert page.count("<svg") == 1
    assert "last logged training loss 2.2000 at step 20; held-out loss 2.5000 at step 20" in page
    assert "run: run-42" in page
    empty = loss_curve_html([{"step": 5, "train_runtime": 1.0}])
    assert "<svg" not in empty
    assert "No loss was logged" in empty


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.chromium
@pytest.mark.parametrize(
    ("page", "plots"), [(_validation_page, 3), (_regression_page, 1)], ids=["validation", "regression"]
)
def test_reports_render_in_headless_chromium(tmp_path: Path, page, plots: int) -> None:  # type: ignore[no-untyped-def]
    """The page loads with no console error, and the screenshot is a page, not a blank."""
    assert CHROMIUM, "chromium is required: `make test` installs it through apt"
    html_file = tmp_path / "report.html"
    html_file.write_text(page())
    shot = tmp_path / "shot.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,2400"]
    flags += [f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]
    run = subprocess.run(
        [CHROMIUM, *flags, f"--screenshot={shot}", html_file.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    console_errors = [line for line in run.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console_errors, console_errors
    dom = subprocess.run(
        [CHROMIUM, *flags, "--dump-dom", html_file.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    assert "Verdict" in dom
    assert dom.count("<svg") == plots
    # the widest table fits a window 800 px wide: no sideways scrolling
    probe = tmp_path / "probe.html"
    probe.write_text(
        page().replace(
            "</body>",
            "<script>document.body.dataset.width = document.documentElement.scrollWidth</script></body>",
        )
    )
    narrow = [f.replace("--window-size=1280,2400", "--window-size=800,2400") for f in flags]
    dom = subprocess.run(
        [CHROMIUM, *narrow, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    width = re.search(r'data-width="(\d+)"', dom)
    assert width, dom[-500:]
    assert int(width.group(1)) <= 800
    image = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert image.shape == (2400, 1280)
    top = image[:800]
    assert top.std() > 10  # text and plots drawn, not an empty page
    assert (top < 128).mean() > 0.005


def test_a_metadata_value_is_drawn_as_plain_text_never_as_mathtext() -> None:
    # `$x^{$` is unbalanced TeX: parsed as mathtext it raises while the figure is drawn
    values = ["$x^{$", "$\\frac{", "a$b$c"]
    page = slice_plot(
        [{"field": "domain", "value": v, "candidate_wer": 0.1, "production_wer": 0.2} for v in values]
    )
    assert page.count("<svg") == 1
    for v in values:
        assert f"domain={v}".replace("<", "&lt;") in page.replace("&#36;", "$")
    assert "x^{" in interval_plot([("$x^{$", 0.1, 0.0, 0.2, 0.05)])


def test_without_transcripts_the_reports_and_utterances_hold_ids_and_counts_only() -> None:
    """`reports.include_transcripts: false`: the validation report and `utterances.jsonl` name each
    utterance by id with its error counts, and no reference or hypothesis appears in them."""
    from stt_flywheel.evaluation.summary import utterances_jsonl, without_transcripts

    examples = [
        {"id": f"u{i}", "text": r, "speaker": s} for i, (r, s) in enumerate(zip(REFS, SPEAKERS, strict=True))
    ]
    comp = comparison_from_texts("heldout", examples, CAND, PROD, POLICY.normalizer)
    metrics, details = summarize_comparison(comp, POLICY)
    verdict = validation_verdict(metrics, POLICY)
    shown = validation_html(metrics.flat(), verdict, [comp], details, CONTEXT)
    hidden = validation_html(metrics.flat(), verdict, [comp], without_transcripts(details), CONTEXT)
    lines = utterances_jsonl([comp], texts=False).decode()
    texts = [t for t in {*REFS, *PROD, *CAND} if t != "call"]
    assert any(t in shown for t in texts)  # the report with transcripts shows them
    assert not [t for t in texts if t in hidden or t in lines]
    assert "transcripts left out" in hidden and "u2" in hidden
    assert [orjson.loads(line)["id"] for line in lines.splitlines()] == ["u0", "u1", "u2", "u3"]


def test_the_loss_page_after_wise_ft_says_which_weights_it_measured() -> None:
    history = [{"step": 10, "loss": 3.1}, {"step": 20, "loss": 2.2}, {"step": 20, "eval_loss": 2.5}]
    page = loss_curve_html(history, CONTEXT, saved_eval_loss=2.8, wise_ft_alpha=0.5)
    assert "held-out loss of the fine-tuned weights 2.5000 at step 20" in page
    assert "not the weights this curve follows" in page and "Their held-out loss is 2.8000" in page
    assert "0.5000 × fine-tuned + 0.5000 × starting" in page
    plain = loss_curve_html(history, CONTEXT, saved_eval_loss=2.5)
    assert "WiSE-FT" not in plain and "fine-tuned weights" not in plain
