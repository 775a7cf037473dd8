"""What the flywheel costs on Google Cloud, estimated: prices per machine hour, accelerator hour
and GB-month, and the machine each stage runs on."""

from __future__ import annotations

from pydantic import Field, model_validator

from stt_flywheel.config.base import Strict

__all__ = ["CostSettings", "StageMachine"]


class StageMachine(Strict):
    machine: str = Field(description="Machine type, a key of `costs.machine_hour`.")
    accelerator: str | None = Field(None, description="Accelerator type, a key of `costs.accelerator_hour`.")
    accelerators: int = Field(0, ge=0, description="How many.")


# Vertex AI custom training and prediction, us-central1, on demand, as Google's public pricing pages
# listed them (https://cloud.google.com/vertex-ai/pricing). A2 and G2 prices include their GPUs.
MACHINE_HOUR = {
    "e2-standard-4": 0.154,
    "e2-standard-8": 0.308,
    "n1-standard-4": 0.219,
    "n1-standard-8": 0.437,
    "n1-standard-16": 0.874,
    "g2-standard-8": 0.985,
    "g2-standard-12": 1.164,
    "a2-highgpu-1g": 4.222,
}
ACCELERATOR_HOUR = {"NVIDIA_TESLA_T4": 0.403, "NVIDIA_TESLA_V100": 2.852, "NVIDIA_TESLA_P100": 1.679}
STAGES = ("trigger", "dataset", "train", "validation", "regression", "deploy")


def _stage_machines() -> dict[str, StageMachine]:
    cpu = StageMachine(machine="e2-standard-4")
    return {**{s: cpu for s in (*STAGES, "monitor")}, "train": StageMachine(machine="g2-standard-8")}


class CostSettings(Strict):
    """Estimates, not a bill: the defaults are Google's public list prices (us-central1, on demand)
    in `currency` as they stood on `prices_as_of`; set your region's prices and your discounts.
    A run's cost is each stage's machine × its measured duration × the price, plus the pipeline
    fee; the monthly figure in `status` adds the serving replicas (`vertex.*`), the runs of the
    last 30 days, and the stores' size."""

    currency: str = Field("USD", description="Currency of every price here.")
    prices_as_of: str = Field(
        "2025-06",
        description="When the prices were read off Google's pricing pages (shown with every figure).",
    )
    machine_hour: dict[str, float] = Field(
        default_factory=lambda: dict(MACHINE_HOUR),
        description="Price of an hour of each machine type (Vertex AI training and prediction).",
    )
    accelerator_hour: dict[str, float] = Field(
        default_factory=lambda: dict(ACCELERATOR_HOUR),
        description="Price of an hour of each accelerator added to an N1 machine (A2 and G2 prices include theirs).",
    )
    storage_gb_month: float = Field(0.020, ge=0, description="Cloud Storage Standard, per GB-month.")
    pipeline_run: float = Field(0.03, ge=0, description="Vertex AI Pipelines' fee per run.")
    stage_machines: dict[str, StageMachine] = Field(
        default_factory=_stage_machines,
        description="The machine each stage runs on (what Vertex AI picks for the pipeline's requests); "
        "`monitor` is the monitor pipeline's one task.",
    )

    @model_validator(mode="after")
    def _priced(self) -> CostSettings:
        for stage, m in self.stage_machines.items():
            if m.machine not in self.machine_hour:
                raise ValueError(
                    f"stage_machines.{stage}: no price for machine {m.machine!r} in machine_hour"
                )
            if m.accelerator and m.accelerator not in self.accelerator_hour:
                raise ValueError(
                    f"stage_machines.{stage}: no price for {m.accelerator!r} in accelerator_hour"
                )
        return self

    def hourly(self, machine: str, accelerator: str | None = None, accelerators: int = 0) -> float | None:
        """The price of an hour of that machine; None when a price is missing."""
        base = self.machine_hour.get(machine)
        extra = self.accelerator_hour.get(accelerator, None) if accelerator and accelerators else 0.0
        return None if base is None or extra is None else base + extra * accelerators
