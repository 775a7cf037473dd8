"""What the CLI and the demo print: the console, a run's summary, a monitor decision."""

from __future__ import annotations

import math
import os
import sys
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:  # the CLI imports this module for every command: the library only when printing
    from stt_flywheel.monitoring.status import SystemStatus
    from stt_flywheel.run.costs import MonthlyCost, RunCost
    from stt_flywheel.run.summary import DatasetSummary, EvaluationSummary, RunSummary

__all__ = ["counted", "make_console", "print_decision", "print_status", "print_summary"]

PIPE_WIDTH = 160  # into a pipe or a log, Rich would otherwise lay everything out 80 columns wide


def make_console(stderr: bool = False) -> Console:
    """A console for stdout (or stderr): a terminal's own width; into a pipe or a file, lines are
    never hard-wrapped and tables get `PIPE_WIDTH` columns (or `COLUMNS`, when set)."""
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(stderr=stderr)
    width = int(os.environ["COLUMNS"]) if os.environ.get("COLUMNS", "").isdigit() else PIPE_WIDTH
    return Console(stderr=stderr, width=width, soft_wrap=True)


def _n(x: Any) -> str:
    return f"{x:.3f}" if isinstance(x, float) and math.isfinite(x) else "–"


def print_decision(d: dict[str, Any], console: Console) -> None:
    """A decision as a person reads it: the verdict, both arms, each test with its interval."""
    colour = {"NOTICE": "green", "WARNING": "yellow", "ERROR": "red", "CRITICAL": "red"}.get(
        d["severity"], ""
    )
    head = f"[{colour}]{d['summary']}[/]" if colour else d["summary"]
    console.print(f"[bold]Monitor[/] ({d['severity']}, {d['kind']}): {head}")
    if d["arms"]:
        table = Table(
            title=f"Live evidence, settled traffic {d['window']['start'][:19]} → {d['window']['end'][:19]}"
        )
        for col in (
            "arm",
            "version",
            "requests",
            "users",
            "labelled",
            "corrected",
            "correction rate",
            "scored",
            "live WER",
        ):
            table.add_column(col)
        for name, a in d["arms"].items():
            table.add_row(
                name,
                f"v{a['version']}",
                counted(a["requests"], a.get("capped", 0)),
                str(a.get("users", 0)),
                str(a["labelled"]),
                str(a["corrected"]),
                _n(a["correction_rate"]),
                str(a["scored"]),
                _n(a["wer"]),
            )
        console.print(table)
    for reason in d["reasons"]:
        console.print(f"  - {reason}", highlight=False)
    before = ", ".join(f"v{v} {p} %" for v, p in sorted(d["traffic_before"].items()))
    after = ", ".join(f"v{v} {p} %" for v, p in sorted(d["traffic_after"].items()))
    verb = "acted" if d["acted"] else ("dry run, nothing changed" if d["dry_run"] else "no action")
    console.print(f"  traffic {before} → {after} ({verb})", highlight=False)
    if d.get("alert"):
        console.print(f"  alert: {d['alert']}", highlight=False)
    if d.get("report"):
        console.print(f"  report: {d['report']}", highlight=False)


def _f(x: Any) -> str:
    return f"{x:.3f}" if isinstance(x, float) else ("—" if x is None else str(x))


def print_summary(s: RunSummary, console: Console, *, suite: str = "general") -> None:
    """A run's summary as a person reads it: its own story, from its ledger; `suite` is the
    regression suite shown beside the held-out figures."""
    console.rule(f"stt-flywheel run {s.run_id}")
    console.print(f"[bold]Trigger[/] {s.trigger.summary}", highlight=False)
    if not s.trigger.fired:
        console.print(f"[bold]Serving[/] unchanged: {_serving(s)}", highlight=False)
        if s.cost:
            print_run_cost(s.cost, console)
        return
    if s.dataset:
        _print_dataset(s.dataset, console)
    if s.training:
        t = s.training
        console.print(
            f"[bold]Training[/]: {int(t.steps)} steps on {t.device} in {t.train_runtime_s:.0f} s, "
            f"mean training loss over the run {t.train_loss:.3f}."
        )
    table = Table(title="Production vs candidate (WER)")
    for col in ("set", "production WER", "candidate WER"):
        table.add_column(col)
    for name, production, candidate in s.wer_rows([suite]):
        table.add_row(name, _f(production), _f(candidate))
    console.print(table)
    _print_evidence(s.evaluation, console)
    for stage, gate in s.gates.items():
        if gate:
            mark = "[green]PASS[/]" if gate.passed else "[red]REJECT[/]"
            console.print(f"[bold]{stage}[/] {mark}: " + "; ".join(gate.reasons))
    if s.deploy:
        action = f"{s.deploy.action}" + (f" (version {s.deploy.version})" if s.deploy.version else "")
    else:
        action = "skipped (a gate rejected the candidate)"
    console.print(f"[bold]Deploy[/]: {action}; the run left {_serving(s)}", highlight=False)
    console.print(f"[bold]Ledger[/]: {s.run_dir}", highlight=False)
    for name, uri in s.reports.items():
        console.print(f"  {name}: {uri}", highlight=False)
    if s.cost:
        print_run_cost(s.cost, console)


def _serving(s: RunSummary) -> str:
    """The aliases and traffic a run left, as `default v2, candidate v3; traffic v2 90 %, v3 10 %`."""
    aliases = ", ".join(f"{a} v{v}" for a, v in sorted(s.registry.aliases.items())) or "no version"
    traffic = ", ".join(f"v{v} {p} %" for v, p in sorted(s.registry.traffic.items()))
    return aliases + (f"; traffic {traffic}" if traffic else "")


def print_run_cost(cost: RunCost, console: Console) -> None:
    stages = ", ".join(
        f"{c.stage} {c.seconds:.0f} s on {c.machine}" + ("" if c.cost is None else f" {c.cost:.3f}")
        for c in cost.stages
    )
    console.print(
        f"[bold]Cost on Vertex AI[/]: {cost.line()}: {stages}, pipeline fee {cost.pipeline_fee:.2f}",
        highlight=False,
    )


def _print_dataset(d: DatasetSummary, console: Console) -> None:
    console.print(
        f"[bold]Dataset[/] {d.version}: read {d.read} corrected error cases → accepted {d.accepted}, "
        f"duplicates {d.duplicates}, quarantined {d.quarantined} {d.quarantine_reasons}; "
        f"splits {d.splits} (train includes {d.replay} replay)."
    )
    if not d.usable:
        console.print(f"[bold]Not training[/]: {d.usable_reason}.")


def _print_evidence(ev: EvaluationSummary, console: Console) -> None:
    iv = ev.interval
    if iv:
        pv = ", ".join(f"{k} {v:.3g}" for k, v in ev.p_values.items() if isinstance(v, float))
        console.print(
            f"Held-out ΔWER {iv['delta']:+.3f}, {iv['confidence']:.0%} interval [{iv['low']:+.3f}, {iv['high']:+.3f}] "
            f"(bootstrap by {iv['unit']}, {iv['units']} {iv['unit']}s); p-values: {pv}; normaliser {ev.normalizer}."
        )
        console.print(
            f"Churn: {ev.newly_broken} utterances newly broken, {ev.newly_fixed} newly fixed; "
            f"critical-term recall {_f(ev.critical_recall.production)} → {_f(ev.critical_recall.candidate)}."
        )
    gated = [sl for sl in ev.slices if sl.gated]
    if gated:
        hidden = len(ev.slices) - len(gated)
        slices = Table(title=f"Held-out slices large enough to gate ({hidden} smaller ones in the report)")
        for col in ("slice", "utts", "production WER", "candidate WER", "interval"):
            slices.add_column(col)
        for sl in gated:
            slices.add_row(
                f"{sl.field}={sl.value}",
                str(sl.utterances),
                _f(sl.production_wer),
                _f(sl.candidate_wer),
                f"[{sl.low:+.3f}, {sl.high:+.3f}]"
                if isinstance(sl.low, float) and sl.high is not None
                else "—",
            )
        console.print(slices)
    if ev.suites:
        suites = Table(title="Regression suites (non-inferiority, Holm-adjusted)")
        for col in (
            "suite",
            "reference WER",
            "candidate WER",
            "ΔWER interval",
            "upper bound ≤ margin",
            "broken/fixed",
            "verdict",
        ):
            suites.add_column(col)
        for su in ev.suites:
            suites.add_row(
                su.name,
                _f(su.reference_wer),
                _f(su.candidate_wer),
                f"[{su.low:+.4f}, {su.high:+.4f}]",
                f"{su.adjusted_high:+.4f} ≤ {su.allowed_wer - su.reference_wer:+.4f}",
                f"{su.newly_broken}/{su.newly_fixed}",
                "[green]pass[/]" if su.passed else "[red]fail[/]",
            )
        console.print(suites)


def print_status(view: SystemStatus, console: Console) -> None:
    """The system's status as `status` prints it: the store, the trigger, proposals, the monitor's
    last decision, each version with live quality, and the last runs."""
    st, fb = view.store, view.store.feedback_events
    console.print(f"[bold]Store[/] {st.root}")
    console.print(
        f"  {st.predictions} predictions from {st.users} users; feedback events {fb.read}: applied {fb.applied}, "
        f"superseded {fb.superseded}, duplicates {fb.duplicate}, waiting for their prediction {fb.pending}, "
        f"quarantined {fb.quarantined + fb.rejected_at_ingest}; "
        f"{st.since_watermark.feedback_events} events since the watermark"
    )
    console.print(f"[bold]Next trigger check[/] {view.trigger.summary}", highlight=False)
    for proposal in view.proposals:
        console.print(
            f"[bold]Proposal[/] {proposal['id']} {proposal['state']} (lapses {proposal['expires_at'][:16]}): "
            f"{proposal['what']} on {proposal['machine'].get('accelerator', 'the configured machine')}, "
            f"{proposal.get('cost_line', 'cost not measured yet')}"
            + ("" if proposal["approval"] else f" — `stt-flywheel approve {proposal['id']}`"),
            highlight=False,
        )
    if view.monitor:
        m = view.monitor
        console.print(f"[bold]Monitor[/] {m.at[:19]}: {m.summary} ({m.severity})", highlight=False)
    _print_versions(view, console)
    _print_trend(view, console)
    _print_runs(view, console)
    if view.costs:
        print_monthly_cost(view.costs, console)


def print_monthly_cost(c: MonthlyCost, console: Console) -> None:
    serving = "—" if c.serving is None else f"{c.serving:.0f}"
    console.print(
        f"[bold]Cost a month[/] (estimate, list prices of {c.prices_as_of}, {c.currency}): {c.total:.2f} = "
        f"serving {serving} ({c.serving_basis}) + runs {c.runs:.2f} ({c.runs_counted} in the last 30 days) "
        f"+ monitor {c.monitor:.2f} ({c.monitor_looks} looks) + storage {c.store:.2f} ({c.store_gb:.2f} GB)",
        highlight=False,
    )


def _print_versions(view: SystemStatus, console: Console) -> None:
    from stt_flywheel.monitoring.status import fraction_interval, percent_interval, shared_columns

    shared = shared_columns(view.registry.versions)
    table = Table(title="Versions (WER as a fraction, rates in per cent)")
    for col in (
        "version",
        "aliases",
        "traffic %",
        *(header for _, header in shared),
        "requests",
        "users",
        "awaiting feedback",
        "correction rate",
        "live WER",
    ):
        table.add_column(col)
    for v in view.registry.versions:
        live = v.live or {}
        table.add_row(
            str(v.version),
            ", ".join(v.aliases),
            str(v.traffic if v.traffic is not None else "–"),
            *(_n(v.shared.get(k)) for k, _ in shared),
            counted(live.get("requests", 0), live.get("capped", 0)),
            str(live.get("users", 0)),
            str(live.get("pending", 0)),
            percent_interval(live.get("correction_rate")),
            fraction_interval(live.get("wer")),
        )
    if view.registry.versions:
        console.print(table)
        console.print(f"[dim]{view.live.selection_bias}[/]")
    else:
        console.print("[bold]Versions[/] none registered yet (`stt-flywheel run` registers the base model)")


def _print_trend(view: SystemStatus, console: Console) -> None:
    """Each day's requests, correction rate, live WER and median confidence per version (`ui` has
    them by the hour)."""
    if not view.trend:
        return
    versions = sorted({p["version"] for p in view.trend}, key=int)
    cells = {(p["day"], p["version"]): p for p in view.trend}
    table = Table(title="Trend by day (UTC): requests · correction rate · live WER · median confidence")
    table.add_column("day")
    for v in versions:
        table.add_column(f"v{v}")
    for day in sorted({p["day"] for p in view.trend}):
        row = []
        for v in versions:
            p = cells.get((day, v))
            rate = p["correction_rate"] if p else math.nan
            said = f"{rate:.1%}" if math.isfinite(rate) else "–"
            sure = p.get("confidence", math.nan) if p else math.nan
            row.append(f"{p['requests']} · {said} · {_n(p['wer'])} · {_n(sure)}" if p else "")
        table.add_row(day, *row)
    console.print(table)


def counted(requests: int, capped: int) -> str:
    """Requests that count, and those beyond their users' cap (`monitor.max_predictions_per_user`)."""
    return f"{requests} (+{capped} over the cap)" if capped else str(requests)


def _print_runs(view: SystemStatus, console: Console) -> None:
    from stt_flywheel.run.ledger import STAGES

    runs = Table(title="Last runs")
    for col in ("run", *STAGES, "cost (est.)"):
        runs.add_column(col)
    for r in view.runs:
        cost = "–" if r.cost is None else f"{r.cost:.2f}"
        runs.add_row(r.run_id, *(str(r.stages[k] or "–") for k in STAGES), cost)
    if view.runs:
        console.print(runs)
    else:
        console.print("[bold]Runs[/] none yet")
