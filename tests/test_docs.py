"""The docs: the reference pages are what the code generates, nothing is undocumented, the README
stays a front door whose links lead somewhere."""

import re
from pathlib import Path

import pytest
import typer.main

from flywheel_pipelines.cli import app
from flywheel_pipelines.reference import PAGES, write_reference
from stt_flywheel.config import FlywheelConfig, RegressionSuite

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "reference"


@pytest.mark.parametrize("name", sorted(PAGES))
def test_the_committed_reference_page_is_what_the_code_generates(name: str) -> None:
    committed = (REFERENCE / name).read_text(encoding="utf-8")
    assert committed == PAGES[name](), f"docs/reference/{name} is stale: run `make docs` and commit it"


def test_writing_the_reference_writes_every_page(tmp_path: Path) -> None:
    written = write_reference(tmp_path / "reference")
    assert sorted(p.name for p in written) == sorted(PAGES)
    assert all(p.read_text(encoding="utf-8").startswith("<!-- generated") for p in written)


def _leaves(command: object, path: tuple[str, ...] = ()) -> list[str]:
    subcommands = getattr(command, "commands", None)
    if subcommands is None:
        return [" ".join(path)]
    return [leaf for name, sub in subcommands.items() for leaf in _leaves(sub, (*path, name))]


def test_every_command_and_option_is_in_the_cli_reference() -> None:
    page = PAGES["cli.md"]()
    root = typer.main.get_command(app)
    for name in _leaves(root):
        assert f"## `stt-flywheel {name}`" in page
    assert "`--no-auto-deploy`" in page and "`--evaluate-on-gpu`" in page


def _field_paths(model: type, prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():  # type: ignore[attr-defined]
        ann = field.annotation
        if isinstance(ann, type) and hasattr(ann, "model_fields"):
            out += _field_paths(ann, f"{prefix}{name}.")
        else:
            out.append(f"{prefix}{name}")
    return out


def test_every_config_field_is_in_the_reference_with_a_description() -> None:
    page = PAGES["configuration.md"]()
    fields = _field_paths(FlywheelConfig) + [f"regression[].{f}" for f in RegressionSuite.model_fields]
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `([^`]+)` \|.*\| ([^|]*) \|$", page, re.M)}
    assert not [f for f in fields if f not in rows], "config fields missing from the reference"
    assert not [f for f in fields if not rows[f].strip()], "config fields without a description"


def test_the_readme_is_a_front_door_whose_links_resolve() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) < 250
    links = re.findall(r"\]\((docs/[^)#]+)", readme)
    assert links, "the README links into the docs"
    assert not [link for link in links if not (ROOT / link).is_file()]
    assert "make demo" in readme and "make test" in readme
