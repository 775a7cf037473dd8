from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Output


def build_dataset(
    config_uri: str,
    run_id: str,
    decision: Input[Artifact],
    dataset: Output[Dataset],
    metrics: Output[Metrics],
    report: Output[Markdown],
) -> bool:
    """Validate, de-duplicate and split corrected error cases (+ replay) into a versioned dataset.

    Returns whether the dataset is usable (both splits non-empty); the reason is in its metadata.
    """
    from pathlib import Path

    from stt_flywheel.config import load_run_config
    from stt_flywheel.run.entries import TriggerEntry
    from stt_flywheel.run.stage_reports import markdown_report
    from stt_flywheel.run.stages import stage_build_dataset

    trigger = TriggerEntry.model_validate_json(Path(decision.path).read_bytes())
    watermark = trigger.watermark.isoformat() if trigger.watermark else ""
    config = load_run_config(config_uri)
    manifest = stage_build_dataset(config, watermark, Path(dataset.path), run_id)
    with open(report.path, "w") as fh:
        fh.write(markdown_report(config, run_id, manifest))
    usable, reason = manifest.usable
    dataset.metadata.update(
        {"version": manifest.version, "content_hash": manifest.content_hash, "usable": reason}
    )
    for key, value in {**manifest.counts, **{f"{k}_examples": v for k, v in manifest.splits.items()}}.items():
        metrics.log_metric(key, float(value))
    return usable
