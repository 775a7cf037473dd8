"""Two systems' transcripts of the same utterances compared, neither privileged (`stt-flywheel compare`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stt_flywheel.config import ValidationPolicy
from stt_flywheel.evaluation.comparison import comparison_from_texts
from stt_flywheel.scoring.corpus import match_transcripts
from stt_flywheel.scoring.stats import BootstrapInterval, PairedTest

__all__ = ["SystemComparison", "compare_systems"]


@dataclass(frozen=True)
class SystemComparison:
    """Two systems scored on the same utterances (what `stt-flywheel compare` reports).

    ΔWER is WER(A) − WER(B). Neither system is privileged, so every test is two-sided, as NIST's
    sc_stats reports them; each carries its statistic and its count of pairs.
    """

    utterances: int
    normalizer: str
    wer_a: float
    wer_b: float
    delta_wer: float
    interval: BootstrapInterval
    tests: dict[str, PairedTest]
    newly_broken: int
    newly_fixed: int

    @property
    def a_better(self) -> int:
        """Utterances on which A made fewer errors than B."""
        return self.tests["wilcoxon"].better

    @property
    def a_worse(self) -> int:
        return self.tests["wilcoxon"].worse

    def as_dict(self) -> dict[str, Any]:
        return {
            "utterances": self.utterances,
            "normalizer": self.normalizer,
            "wer_a": self.wer_a,
            "wer_b": self.wer_b,
            "delta_wer": self.delta_wer,
            "interval": self.interval.as_dict(),
            "p_values": {name: t.p_value for name, t in self.tests.items()},
            "tests": {
                name: {
                    "p_value": t.p_value,
                    "alternative": t.alternative,
                    "statistic": t.statistic,
                    "pairs": t.n,
                    "unit": "segment" if name == "mapsswe" else "utterance",
                    "a_better": t.better,
                    "a_worse": t.worse,
                }
                for name, t in self.tests.items()
            },
            "a_better": self.a_better,
            "a_worse": self.a_worse,
            "newly_broken": self.newly_broken,
            "newly_fixed": self.newly_fixed,
        }


def compare_systems(
    refs: dict[str, str], hyps_a: dict[str, str], hyps_b: dict[str, str], policy: ValidationPolicy
) -> SystemComparison:
    """Score A and B against the same references (every reference id in both) and compare them."""
    ids = match_transcripts(refs, hyps_a, "system A")
    match_transcripts(refs, hyps_b, "system B")
    comp = comparison_from_texts(
        "compare",
        [{"id": k, "text": refs[k]} for k in ids],
        [hyps_a[k] for k in ids],
        [hyps_b[k] for k in ids],
        policy.normalizer,
    )
    assert comp.production is not None
    churn = comp.churn(0)
    return SystemComparison(
        utterances=len(ids),
        normalizer=comp.candidate.normalizer,
        wer_a=comp.candidate.wer,
        wer_b=comp.production.wer,
        delta_wer=comp.delta_wer,
        interval=comp.interval(policy),
        tests=comp.tests(alternative="two-sided"),
        newly_broken=int(churn["newly_broken"]),
        newly_fixed=int(churn["newly_fixed"]),
    )
