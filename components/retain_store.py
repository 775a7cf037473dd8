from kfp.dsl import Markdown, Output


def retain_store(config_uri: str, dry_run: bool, summary: Output[Markdown]) -> int:
    """Delete what is past its `retention.*` days (`stt-flywheel store retain`); how many objects,
    datasets and runs went (would go, with `dry_run`)."""
    import sys
    from datetime import UTC, datetime

    import orjson

    from stt_flywheel.config import load_config
    from stt_flywheel.run.retention import retain

    result = retain(load_config(config_uri), datetime.now(UTC), dry_run=dry_run)
    print(orjson.dumps({"retain": result.as_dict()}).decode(), file=sys.stdout)  # one line for the logs
    with open(summary.path, "w") as fh:
        fh.write(result.to_markdown())
    return sum(result.deleted.values())
