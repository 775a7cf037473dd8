"""`status`: the whole system in one view."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flywheel_pipelines.cli.common import (
    ConfigOpt,
    JsonOpt,
    console,
    load,
    print_json,
)

__all__ = ["status"]


def status(
    config: ConfigOpt = None,
    json: JsonOpt = False,
    html: Annotated[
        Path | None, typer.Option(help="Also write the view as one self-contained HTML page.")
    ] = None,
) -> None:
    """The whole system in one view: store, trigger, runs, versions with live quality, trends."""
    from flywheel_pipelines.views import print_status
    from stt_flywheel.monitoring.status import system_status

    view = system_status(load(config, reads_state=True))
    if html is not None:
        from stt_flywheel.monitoring.status_page import write_status_page

        write_status_page(view, html)
    if json:
        print_json(view)
        return
    print_status(view, console)
    if html is not None:
        console.print(f"wrote {html}")
