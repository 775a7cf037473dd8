from typing import NamedTuple

from kfp.dsl import HTML, Markdown, Metrics, Output


def monitor_deployment(
    config_uri: str,
    run_id: str,
    act: bool,
    report: Output[HTML],
    summary: Output[Markdown],
    metrics: Output[Metrics],
) -> NamedTuple("MonitorOutputs", action=str, severity=str):  # type: ignore[valid-type]  # noqa: F821
    """Judge the canary (or watch the default) from live evidence and act: promote, step, roll back."""
    import sys
    from collections import namedtuple

    from stt_flywheel.config import load_config
    from stt_flywheel.monitoring.monitor import run_monitor
    from stt_flywheel.monitoring.monitor_report import monitor_html, monitor_markdown

    # the decision's log line goes to stdout, where Cloud Logging reads its severity
    decision = run_monitor(load_config(config_uri), act=act, holder=run_id, log_stream=sys.stdout)
    with open(report.path, "w") as fh:
        fh.write(monitor_html(decision))
    with open(summary.path, "w") as fh:
        fh.write(monitor_markdown(decision))
    for name, arm in decision.arms.items():
        for key in ("requests", "labelled", "corrected", "scored", "correction_rate", "wer"):
            value = arm.get(key)
            if isinstance(value, int | float) and value == value:
                metrics.log_metric(f"{name}_{key}", float(value))
    for test in decision.tests:
        for key in ("delta", "low", "high"):
            if test[key] == test[key]:
                metrics.log_metric(f"{test['metric']}_{key}", float(test[key]))
    MonitorOutputs = namedtuple("MonitorOutputs", ["action", "severity"])
    return MonitorOutputs(decision.action, decision.severity)
