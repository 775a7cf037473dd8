"""What the flywheel costs, estimated: each stage's machine × its measured duration × the price
(`costs.*`), a run's sum with the pipeline fee, and a month of serving, runs and storage.

Every stage records how long it ran (each attempt: a retried stage costs twice) beside the run's
ledger, as `<run>/times/<stage>-<attempt id>.json`. Prices are Google's list prices as of
`costs.prices_as_of`: every figure here is an estimate, and says so.
"""

from __future__ import annotations

import functools
import inspect
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import ParamSpec, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict

from stt_flywheel.config import FlywheelConfig
from stt_flywheel.config.costs import STAGES
from stt_flywheel.run.ledger import list_runs
from stt_flywheel.storage.files import dump_json
from stt_flywheel.storage.objectstore import open_store

__all__ = [
    "HOURS_PER_MONTH",
    "MonthlyCost",
    "RunCost",
    "StageCost",
    "monthly_cost",
    "run_cost",
    "timed",
    "typical_run_cost",
]

HOURS_PER_MONTH = 730.0
P = ParamSpec("P")
R = TypeVar("R")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StageCost(_Model):
    stage: str
    machine: str
    seconds: float
    hourly: float | None  # None: no price for the machine
    cost: float | None


class RunCost(_Model):
    run_id: str
    stages: list[StageCost]
    pipeline_fee: float
    total: float | None  # None when a stage's machine has no price
    currency: str
    prices_as_of: str
    estimate: bool = True

    def line(self) -> str:
        total = "unknown (a machine without a price)" if self.total is None else f"{self.total:.2f}"
        return f"{total} {self.currency} (estimate, list prices of {self.prices_as_of})"


class MonthlyCost(_Model):
    serving: float | None  # the endpoint's replicas at their floor; None on the embedded backend
    serving_basis: str
    runs: float
    runs_counted: int
    monitor: float  # the monitor's looks of the last 30 days: the fee and its machine for each
    monitor_looks: int
    store_gb: float
    store: float
    total: float
    currency: str
    prices_as_of: str
    estimate: bool = True


def record_stage_time(config: FlywheelConfig, run_id: str, stage: str, seconds: float) -> None:
    key = f"{run_id}/times/{stage}-{uuid.uuid4().hex[:12]}.json"
    doc = {"stage": stage, "seconds": round(seconds, 3), "at": datetime.now(UTC).isoformat()}
    open_store(config.paths.reports).write(key, dump_json(doc))


def timed(stage: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Record how long the stage entry point ran (failed or not: the machine was paid for)."""

    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            bound = signature.bind(*args, **kwargs)
            start = time.monotonic()
            try:
                return fn(*args, **kwargs)
            finally:
                config, run_id = bound.arguments["config"], bound.arguments["run_id"]
                record_stage_time(config, run_id, stage, time.monotonic() - start)

        return run

    return wrap


def run_cost(config: FlywheelConfig, run_id: str) -> RunCost | None:
    """The run's cost from its measured stages; None when it recorded none (a run from before)."""
    store = open_store(config.paths.reports)
    seconds: dict[str, float] = {}
    for key in store.list(f"{run_id}/times/"):
        found = store.read(key)
        if found is not None:
            doc = orjson.loads(found.data)
            seconds[doc["stage"]] = seconds.get(doc["stage"], 0.0) + float(doc["seconds"])
    if not seconds:
        return None
    c = config.costs
    stages = []
    for stage in sorted(seconds, key=lambda s: STAGES.index(s) if s in STAGES else len(STAGES)):
        m = c.stage_machines.get(stage)
        machine = m.machine if m else "unknown"
        hourly = c.hourly(m.machine, m.accelerator, m.accelerators) if m else None
        cost = None if hourly is None else hourly * seconds[stage] / 3600
        stages.append(
            StageCost(stage=stage, machine=machine, seconds=seconds[stage], hourly=hourly, cost=cost)
        )
    costs = [s.cost for s in stages]
    total = None if None in costs else sum(x for x in costs if x is not None) + c.pipeline_run
    return RunCost(
        run_id=run_id,
        stages=stages,
        pipeline_fee=c.pipeline_run,
        total=total,
        currency=c.currency,
        prices_as_of=c.prices_as_of,
    )


def typical_run_cost(config: FlywheelConfig, runs: int = 20) -> RunCost | None:
    """The cost of the latest run that trained, among the last `runs`: what a run that trains
    again would cost, as measured; None before any has."""
    for run_id in reversed(list_runs(config)[-runs:]):
        cost = run_cost(config, run_id)
        if cost is not None and any(s.stage == "train" for s in cost.stages):
            return cost
    return None


def _run_started(run_id: str) -> datetime | None:
    """The start time in a run id (`<pipeline>-YYYY-MM-DD-HH-MM-SS-ffffff`)."""
    parts = run_id.split("-")
    try:
        return datetime.strptime("-".join(parts[-7:]), "%Y-%m-%d-%H-%M-%S-%f").replace(tzinfo=UTC)
    except ValueError:
        return None


def _monitor_cost(config: FlywheelConfig, now: datetime, sample: int = 5) -> tuple[float, int]:
    """The monitor's looks of the last 30 days (its decision records), each a pipeline run on the
    `monitor` machine for as long as the latest looks measured."""
    store = open_store(config.paths.reports)
    since = now - timedelta(days=30)
    looks = sorted(k for k, at in store.list_dated("monitor/") if k.endswith(".json") and at >= since)
    seconds = []
    for key in looks[-sample:]:
        found = store.read(key)
        if found is not None and (s := orjson.loads(found.data).get("seconds")) is not None:
            seconds.append(float(s))
    m = config.costs.stage_machines.get("monitor")
    hourly = config.costs.hourly(m.machine, m.accelerator, m.accelerators) if m else None
    machine = (hourly or 0.0) * (sum(seconds) / len(seconds) if seconds else 0.0) / 3600
    return len(looks) * (config.costs.pipeline_run + machine), len(looks)


def monthly_cost(config: FlywheelConfig, now: datetime | None = None) -> MonthlyCost:
    """A month at today's rate: the endpoint's replicas at their floor, the runs and the monitor's
    looks of the last 30 days as measured, and the stores' bytes at the storage price."""
    now = now or datetime.now(UTC)
    c, v = config.costs, config.vertex
    serving = None
    basis = "served by local processes (the embedded backend): nothing billed"
    if config.deploy.backend == "vertex":
        hourly = c.hourly(v.machine_type, v.accelerator_type, v.accelerator_count)
        replicas = v.min_replica_count
        serving = None if hourly is None else hourly * replicas * HOURS_PER_MONTH
        basis = f"{replicas} × {v.machine_type}" + (
            f" + {v.accelerator_count} × {v.accelerator_type}" if v.accelerator_type else ""
        )
    spent, counted = 0.0, 0
    for run_id in list_runs(config):
        started = _run_started(run_id)
        if started is None or started < now - timedelta(days=30):
            continue
        cost = run_cost(config, run_id)
        if cost is not None and cost.total is not None:
            spent, counted = spent + cost.total, counted + 1
    monitor, looks = _monitor_cost(config, now)
    paths = config.paths
    stored = sum(
        open_store(root).total_bytes()
        for root in (paths.error_store, paths.datasets, paths.models, paths.reports)
    )
    gb = stored / 1e9
    store = gb * c.storage_gb_month
    return MonthlyCost(
        serving=serving,
        serving_basis=basis,
        runs=spent,
        runs_counted=counted,
        monitor=monitor,
        monitor_looks=looks,
        store_gb=gb,
        store=store,
        total=(serving or 0.0) + spent + monitor + store,
        currency=c.currency,
        prices_as_of=c.prices_as_of,
    )
