"""`lineage …`: whose data taught a version."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from flywheel_pipelines.cli.common import ConfigOpt, JsonOpt, console, load, print_json

__all__ = ["lineage_app"]

lineage_app = typer.Typer(no_args_is_help=True, help="Whose data taught a version, through its ancestors.")


@lineage_app.command("users")
def lineage_users(
    version: Annotated[int, typer.Option(min=1, help="The registered version.", show_default=False)],
    config: ConfigOpt = None,
    json: JsonOpt = False,
) -> None:
    """The users (as pseudonyms) whose corrections trained VERSION and every version it was
    trained from: each version's dataset and its training split's users, and all of them."""
    from stt_flywheel.deployment.backends import open_registry
    from stt_flywheel.run.lineage import trained_users

    cfg = load(config, reads_state=True)
    chain = trained_users(cfg, open_registry(cfg), version)
    everyone = sorted({u for v in chain for u in v.users})
    if json:
        print_json({"version": version, "users": everyone, "chain": [v.as_dict() for v in chain]})
        return
    table = Table(title=f"Users whose corrections trained v{version}: {len(everyone)}")
    for col in ("version", "dataset", "users", "note"):
        table.add_column(col, overflow="fold")
    for v in chain:
        table.add_row(f"v{v.version}", v.dataset_version or "–", str(len(v.users)), v.note)
    console.print(table)
    if everyone:
        console.print("\n".join(everyone), highlight=False)
