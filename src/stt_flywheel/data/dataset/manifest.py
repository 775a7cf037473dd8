"""The dataset's manifest: what was read, kept and rejected (and why), what each split holds."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stt_flywheel.storage.files import read_json

if TYPE_CHECKING:
    from stt_flywheel.data.dataset.admission import Row

__all__ = ["SPLITS", "TRANSCRIPTS_AS_WRITTEN", "DatasetManifest", "profile"]

# The transcripts are stored as written, whitespace collapsed: the `none/1` normaliser.
TRANSCRIPTS_AS_WRITTEN = "none/1"
SPLITS = ("train", "heldout")


@dataclass
class DatasetManifest:
    version: str
    content_hash: str
    watermark: str | None
    created_at: str
    counts: dict[str, int]
    quarantine_reasons: dict[str, int]
    splits: dict[str, int]
    replay: dict[str, int]
    pseudo_labels: dict[str, Any] = field(default_factory=dict)  # `data.dataset.pseudo`'s counts
    normalizer: str = TRANSCRIPTS_AS_WRITTEN  # what was done to the stored transcripts
    settings: dict[str, Any] = field(default_factory=dict)
    # per split: examples, audio seconds (total, min, mean, max), domains, speakers and sources
    profile: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def balanced(self) -> bool:
        c = self.counts
        return c["read"] == c["accepted"] + c["duplicates"] + c["quarantined"]

    @property
    def usable(self) -> tuple[bool, str]:
        """Whether training on this dataset can prove anything: it needs both splits."""
        empty = [s for s in SPLITS if not self.splits.get(s)]
        if empty:
            return (
                False,
                f"no usable examples in the {' and '.join(empty)} split ({self.counts['quarantined']} quarantined)",
            )
        return True, f"{self.splits['train']} training and {self.splits['heldout']} held-out examples"

    def as_dict(self) -> dict[str, Any]:
        usable, reason = self.usable
        return {**self.__dict__, "balanced": self.balanced, "usable": usable, "usable_reason": reason}

    def to_markdown(self, context: str = "") -> str:
        """The dataset report a person reads in the pipeline's console: what was read, kept and
        rejected (and why), and what each split holds."""
        usable, reason = self.usable
        c = self.counts
        lines = ["# Dataset", ""]
        if context:
            lines += [context, ""]
        lines += [
            f"**{self.version}** ({'usable' if usable else 'not usable'}: {reason}); data watermark "
            f"{self.watermark or 'none'}; transcripts stored as written (normaliser {self.normalizer}: whitespace only); content hash `{self.content_hash[:16]}…`.",
            "",
            f"Corrected error cases read: {c['read']} — accepted {c['accepted']}, duplicates "
            f"{c['duplicates']}, quarantined {c['quarantined']}; flagged without a correction (not "
            f"trainable): {c['uncorrected_error_cases']}. Replay: {self.replay.get('used', 0)} of "
            f"{self.replay.get('available', 0)} utterances.",
            *_pseudo_line(self.pseudo_labels),
            "",
            "| split | examples | audio (min) | duration min / mean / max (s) | domains | speakers | users (largest share) | sources |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for split in SPLITS:
            p = self.profile.get(split)
            if not p or not p["examples"]:
                lines.append(f"| {split} | 0 | | | | | | |")
                continue
            lines.append(
                f"| {split} | {p['examples']} | {p['seconds'] / 60:.1f} | {p['min_s']:.1f} / "
                f"{p['mean_s']:.1f} / {p['max_s']:.1f} | {_counted(p['domains'])} | {p['speakers']} | "
                f"{p.get('users', 0)} ({p.get('largest_user_share', 0.0):.0%}) | {_counted(p['sources'])} |"
            )
        if self.quarantine_reasons:
            lines += ["", "| quarantine reason | records |", "|---|---|"]
            lines += [
                f"| {r} | {n} |" for r, n in sorted(self.quarantine_reasons.items(), key=lambda x: -x[1])
            ]
        return "\n".join(lines) + "\n"

    @classmethod
    def load(cls, dataset_dir: str | Path) -> DatasetManifest:
        data = read_json(Path(dataset_dir) / "manifest.json")
        for derived in ("balanced", "usable", "usable_reason"):
            data.pop(derived, None)
        return cls(**data)


def _pseudo_line(stats: dict[str, Any]) -> list[str]:
    """What pseudo-labels added (an empty list when they are off)."""
    if not stats.get("enabled"):
        return []
    if "used" not in stats:
        return ["", "Pseudo-labels: none (no training example to add them to, or no watermark)."]
    mean = stats.get("mean_confidence")
    said = (
        f"{stats['used']} pseudo-labels joined the training split ({stats['share_of_train']:.0%} of it"
        + (f"; confidence mean {mean:.3f}, lowest {stats['min_confidence']:.3f}" if mean is not None else "")
        + (f"; {_counted(stats['domains'])}" if stats.get("domains") else "")
        + f") from {stats['candidates']} predictions nobody answered"
    )
    left = (
        f"below the confidence {stats['below_confidence']}, of held-out users {stats['held_out_users']}, "
        f"audio refused {stats['invalid']}, audio already in {stats['duplicates']}; not eligible "
        f"(answered, no audio, unsigned or forgotten) {stats['not_eligible']}"
    )
    return ["", f"Pseudo-labels: {said}; left out: {left}."]


def _counted(counts: dict[str, int]) -> str:
    return ", ".join(f"{k or '(none)'} {n}" for k, n in sorted(counts.items(), key=lambda x: -x[1]))


def profile(rows: list[Row]) -> dict[str, Any]:
    durations = [r.audio.duration_s for r in rows]
    return {
        "examples": len(rows),
        "seconds": round(sum(durations), 2),
        "min_s": min(durations, default=0.0),
        "mean_s": sum(durations) / len(durations) if durations else 0.0,
        "max_s": max(durations, default=0.0),
        "domains": dict(Counter(r.domain for r in rows)),
        "speakers": len({r.speaker for r in rows}),
        "sources": dict(Counter(r.source for r in rows)),
        # which systems sent the corrections: the app's users, a review tool (`review import`), …
        "taught_by": dict(Counter(r.event_source for r in rows if r.source == "correction")),
        **_users(rows),
    }


def _users(rows: list[Row]) -> dict[str, Any]:
    """Who taught the split: how many users (anonymous is one) and the largest one's share of
    the corrections."""
    per_user = Counter(r.user for r in rows if r.source == "correction")
    corrections = sum(per_user.values())
    largest = max(per_user.values(), default=0)
    return {"users": len(per_user), "largest_user_share": largest / corrections if corrections else 0.0}
