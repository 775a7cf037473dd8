from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output


def validate_model(
    config_uri: str,
    run_id: str,
    dataset: Input[Dataset],
    model: Input[Model],
    report: Output[HTML],
    metrics: Output[Metrics],
    results: Output[Artifact],
) -> bool:
    """Score candidate and production on the held-out split and the eval set; gate on the result."""
    from pathlib import Path

    from stt_flywheel.config import load_run_config
    from stt_flywheel.run.stages import stage_validate_model

    out = stage_validate_model(
        load_run_config(config_uri),
        Path(model.path),
        Path(dataset.path),
        Path(results.path),
        run_id,
    )
    with open(report.path, "w") as fh:
        fh.write(out.report_html)
    for key, value in out.metrics.items():
        metrics.log_metric(key, value)
    return out.passed
