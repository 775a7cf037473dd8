from kfp.dsl import HTML, Artifact, Input, Metrics, Model, Output


def run_regression_suites(
    config_uri: str,
    run_id: str,
    model: Input[Model],
    report: Output[HTML],
    metrics: Output[Metrics],
    results: Output[Artifact],
) -> bool:
    """Run every configured regression suite on the candidate; one verdict per suite."""
    from pathlib import Path

    from stt_flywheel.config import load_run_config
    from stt_flywheel.run.stages import stage_run_regression_suites

    out = stage_run_regression_suites(
        load_run_config(config_uri), Path(model.path), Path(results.path), run_id
    )
    with open(report.path, "w") as fh:
        fh.write(out.report_html)
    for key, value in out.metrics.items():
        metrics.log_metric(key, value)
    return out.passed
