"""What one look of the monitor decided: the contract between the monitor, its audit entries,
its reports, its alerts and its log line."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["MonitorAction", "MonitorDecision", "MonitorKind"]

MonitorKind = Literal["canary", "default", "none"]
MonitorAction = Literal[
    # nothing to do
    "idle",
    "skipped",
    # a canary
    "wait",
    "continue",
    "promote",
    "step",
    "rollback",
    "hold",
    # the default
    "healthy",
    "unwatched",
    "degraded",
]


class MonitorDecision(BaseModel):
    """One look: what was watched, what the evidence said, what was done. Stored as JSON beside
    its HTML report and read back with `model_validate_json`."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    kind: MonitorKind
    action: MonitorAction
    summary: str
    checked_at: str
    holder: str
    severity: str = "INFO"
    version: int | None = None
    baseline: str | None = None  # what it was compared with: "v2", or "v1's record"
    reasons: list[str] = Field(default_factory=list)
    tests: list[dict[str, Any]] = Field(default_factory=list)
    arms: dict[str, dict[str, Any]] = Field(default_factory=dict)
    window: dict[str, str | None] = Field(default_factory=dict)
    look: int | None = None
    max_looks: int | None = None
    look_confidence: float | None = None
    traffic_before: dict[int, int] = Field(default_factory=dict)
    traffic_after: dict[int, int] = Field(default_factory=dict)
    acted: bool = False
    dry_run: bool = False
    outcome: str | None = None
    alert: dict[str, Any] | None = None
    report: str | None = None
    history: list[dict[str, Any]] = Field(default_factory=list)  # earlier looks at this canary
    # each watched version's confidence by hour over the look's window (`live.confidence_by_hour`)
    confidence: list[dict[str, Any]] = Field(default_factory=list)
    seconds: float | None = None  # how long the look took (what a scheduled look costs)

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def audit_detail(self) -> dict[str, Any]:
        return self.model_dump(exclude={"history", "alert"})
