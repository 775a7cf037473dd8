"""`ui`: the served dashboard."""

from __future__ import annotations

from typing import Annotated

import typer

from flywheel_pipelines.cli.common import ConfigOpt, console, load

__all__ = ["ui"]


def ui(
    config: ConfigOpt = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port (default `ui.port`; `PORT` wins on Cloud Run).")
    ] = None,
    host: Annotated[
        str | None,
        typer.Option(
            help="Address (default `ui.host`, 127.0.0.1); beyond loopback only behind IAP (`ui.iap_audience`)."
        ),
    ] = None,
) -> None:
    """Serve the dashboard: what serves now and whether it is well, versions, runs, canaries, live
    quality by the hour, each utterance with its audio, the review queue. Until Ctrl-C."""
    from stt_flywheel.deployment.feedback.auth import port_from_env
    from stt_flywheel.ui.app import check_listening, serve

    cfg = load(config, reads_state=True)
    host = host or cfg.ui.host
    port = port or port_from_env(cfg.ui)
    check_listening(cfg, host)
    console.print(f"stt-flywheel ui on http://{host}:{port}/ (Ctrl-C stops it)", highlight=False)
    serve(cfg, host, port)
