"""The held-out metrics: what the validator measures and the gates, the ledger and the reports read.

A model with a field per measurement instead of a dict of strings: a measurement renamed on one
side fails where it is built or read (an unknown field is refused), never as a gate that quietly
rejects because its key went missing. `flat()` is the KFP boundary: the lower_snake keys the
pipeline logs as `Metrics`, the same keys the ledger stores.

A measurement that could not be taken is NaN (read from JSON as null), which every gate rejects.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

__all__ = ["DomainSlice", "HeldoutMetrics", "Measured"]

_SLICE_PARTS = ("production_wer", "utterances", "wer")  # longest first: `_production_wer` ends in `_wer`


def _nan_for_missing(value: Any) -> Any:
    return math.nan if value is None else value


# a float that reads null (JSON's NaN) back as NaN: a missing measurement stays missing
Measured = Annotated[float, BeforeValidator(_nan_for_missing)]


class DomainSlice(BaseModel):
    """One value of the `domain` metadata within the held-out split."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    utterances: float
    wer: Measured
    production_wer: Measured | None = None  # None: no production model to compare with


class HeldoutMetrics(BaseModel):
    """The candidate (and production, where there is one) on the held-out split, plus the fixed
    eval set where one is configured. `production_*` is NaN on a first run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    heldout_utterances: float
    wer: Measured = math.nan
    cer: Measured = math.nan
    raw_wer: Measured = math.nan
    substitutions: Measured = math.nan
    deletions: Measured = math.nan
    insertions: Measured = math.nan
    hits: Measured = math.nan
    production_wer: Measured = math.nan
    production_cer: Measured = math.nan
    production_raw_wer: Measured = math.nan
    formatting_error_rate: Measured = Field(
        math.nan, description="raw WER − normalised WER: what only the normaliser forgives"
    )
    production_formatting_error_rate: Measured = math.nan
    delta_wer: Measured = math.nan
    delta_wer_low: Measured = math.nan
    delta_wer_high: Measured = math.nan
    prob_improvement: Measured = math.nan
    p_value: Measured = Field(math.nan, description="the configured significance test's p-value")
    p_wilcoxon: Measured = math.nan
    p_t_test: Measured = math.nan
    p_mapsswe: Measured = math.nan
    worse_share: Measured = math.nan
    better_share: Measured = math.nan
    empty_share: Measured = math.nan
    loop_share: Measured = math.nan
    burst_share: Measured = math.nan
    production_empty_share: Measured = math.nan
    production_loop_share: Measured = math.nan
    production_burst_share: Measured = math.nan
    newly_broken: float | None = None
    newly_fixed: float | None = None
    critical_recall: Measured | None = None  # None: no critical terms configured
    production_critical_recall: Measured | None = None
    eval_wer: Measured | None = None  # None: no eval set configured
    eval_cer: Measured | None = None
    eval_production_wer: Measured | None = None
    eval_production_cer: Measured | None = None
    eval_critical_recall: Measured | None = None  # None: no eval set, or no critical term in it
    eval_production_critical_recall: Measured | None = None
    slices: dict[str, DomainSlice] = Field(default_factory=dict, description="by domain value")

    @model_validator(mode="before")
    @classmethod
    def _fold_flat_slices(cls, data: Any) -> Any:
        """Read the flat form too (`flat()`, what KFP logs and earlier ledgers kept): its
        `slice_<domain>_{utterances,wer,production_wer}` keys become `slices`. Any other unknown
        key is still refused."""
        if not isinstance(data, dict) or not any(str(k).startswith("slice_") for k in data):
            return data
        out: dict[str, Any] = {}
        slices: dict[str, Any] = dict(data.get("slices") or {})
        for key, value in data.items():
            name = str(key)
            part = next(
                (p for p in _SLICE_PARTS if name.startswith("slice_") and name.endswith(f"_{p}")), None
            )
            if part is None or len(name) <= len(f"slice__{part}"):
                out[key] = value
                continue
            domain = name[len("slice_") : -len(part) - 1]
            slices.setdefault(domain, {})[part] = value
        out["slices"] = slices
        return out

    def flat(self) -> dict[str, float]:
        """Every measurement under its metric key (`slice_<domain>_wer` for the slices); what is
        not measured at all (None) is left out."""
        out = {k: float(v) for k, v in self.model_dump(exclude={"slices"}).items() if v is not None}
        for value, sl in self.slices.items():
            out[f"slice_{value}_utterances"] = sl.utterances
            out[f"slice_{value}_wer"] = sl.wer
            if sl.production_wer is not None:
                out[f"slice_{value}_production_wer"] = sl.production_wer
        return out
