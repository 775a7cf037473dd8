"""cloudbuild.yaml and the container files: they parse, what they reference exists, and the
commands they run are commands the CLI has."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
BUILD = yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())
BUILTINS = {"PROJECT_ID", "COMMIT_SHA", "SHORT_SHA", "BUILD_ID", "LOCATION", "REPO_NAME", "BRANCH_NAME"}


def _step_text(step: dict) -> str:
    return " ".join(map(str, step.get("args", []))) + " " + str(step.get("name", ""))


def test_every_substitution_is_declared_and_documented() -> None:
    text = (ROOT / "cloudbuild.yaml").read_text()
    header = text.split("substitutions:")[0]
    used = set(re.findall(r"(?<!\$)\$\{?(_[A-Z_]+)\}?", text))
    assert used == set(BUILD["substitutions"])
    assert all(name in header for name in used), "document every substitution in the header"


def test_shell_variables_are_escaped_from_cloud_build() -> None:
    """Cloud Build substitutes every $NAME; bash variables must be written $$name."""
    for step in BUILD["steps"]:
        for name in re.findall(r"(?<!\$)\$\{?([A-Za-z_][A-Za-z0-9_]*)", _step_text(step)):
            assert name in BUILTINS or name in BUILD["substitutions"], f"{step['id']}: unescaped ${name}"


def test_steps_run_in_order_and_reference_existing_files() -> None:
    ids = [s["id"] for s in BUILD["steps"]]
    assert ids[0] == "test"
    assert ids.index("push") < ids.index("digests") < ids.index("compile") < ids.index("publish-template")
    assert ids.index("publish-template") < ids.index("schedule")
    for step in BUILD["steps"]:
        for dep in step.get("waitFor", []):
            assert ids.index(dep) < ids.index(step["id"])
    dockerfiles = [a for s in BUILD["steps"] for a in s.get("args", []) if str(a).endswith(".Dockerfile")]
    assert sorted(dockerfiles) == [
        "containers/base.Dockerfile",
        "containers/serving.Dockerfile",
        "containers/trainer.Dockerfile",
    ]
    for path in dockerfiles:
        text = (ROOT / path).read_text()
        for source in re.findall(r"^COPY (\S+)", text, flags=re.M):
            for part in source.split():
                assert (ROOT / part).exists(), f"{path} copies missing {part}"
        assert "-c constraints.txt" in text  # the same pinned versions as the local set-up
    assert "make test" in _step_text(BUILD["steps"][0])


def test_make_test_lints_first_as_the_build_does() -> None:
    """CI runs `make test` alone: it must check what Cloud Build checks (ruff, and mypy beyond src/)."""
    makefile = (ROOT / "Makefile").read_text()
    prerequisites = re.search(r"^test: (.*?)##", makefile, flags=re.M)
    assert prerequisites is not None
    assert "lint" in prerequisites.group(1).split()
    lint = re.search(r"^lint:.*\n((?:\t.*\n)+)", makefile, flags=re.M)
    assert lint is not None
    assert "mypy src components pipelines" in lint.group(1)


@pytest.mark.parametrize(
    "command",
    sorted(
        {
            m.strip()
            for s in BUILD["steps"]
            for m in re.findall(r"stt-flywheel ((?:[a-z][\w-]* ?){1,2})", _step_text(s))
        }
    ),
)
def test_cli_commands_in_the_build_exist(command: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "flywheel_pipelines.cli", *command.split(), "--help"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    flags = {f for s in BUILD["steps"] for f in re.findall(rf"stt-flywheel {command}[^\n|]*", _step_text(s))}
    for flag in re.findall(r"--[a-z-]+", " ".join(flags)):
        assert flag in out.stdout, f"stt-flywheel {command} has no {flag}"


def test_serving_image_follows_the_vertex_contract() -> None:
    text = (ROOT / "containers" / "serving.Dockerfile").read_text()
    assert 'ENTRYPOINT ["stt-flywheel", "serve"]' in text
    assert "AIP_HTTP_PORT=8080" in text
    assert "FLYWHEEL_HOST=0.0.0.0" in text  # in the container, every interface; elsewhere 127.0.0.1


def _substituted(script: str, **values: str) -> str:
    """A step's script as Cloud Build hands it to bash: $NAME and ${NAME} replaced, $$ made $."""
    for name, value in values.items():
        script = re.sub(rf"(?<!\$)\$\{{?{name}\}}?", value, script)
    return script.replace("$$", "$")


def test_a_build_submitted_without_a_commit_stops_first_and_says_how() -> None:
    script = BUILD["steps"][0]["args"][1]
    run = subprocess.run(["bash", "-c", _substituted(script, COMMIT_SHA="")], capture_output=True, text=True)
    assert run.returncode == 1
    assert "COMMIT_SHA is empty" in run.stderr
    assert "--substitutions=COMMIT_SHA=$(git rev-parse HEAD)" in run.stderr
    assert (
        "COMMIT_SHA=$(git rev-parse HEAD)"
        in (ROOT / "cloudbuild.yaml").read_text().split("substitutions:")[0]
    )


def test_images_carry_their_commit_and_the_template_its_serving_image() -> None:
    builds = [s for s in BUILD["steps"] if s["id"].startswith("build-")]
    for step in builds:
        assert "STT_FLYWHEEL_COMMIT=$COMMIT_SHA" in step["args"]
        dockerfile = (ROOT / step["args"][step["args"].index("-f") + 1]).read_text()
        assert 'ARG STT_FLYWHEEL_COMMIT=""' in dockerfile
        assert "ENV STT_FLYWHEEL_COMMIT=${STT_FLYWHEEL_COMMIT}" in dockerfile
    compile_step = _step_text(next(s for s in BUILD["steps"] if s["id"] == "compile"))
    assert '--serving-image "$$(cat /workspace/serving.digest)"' in compile_step
