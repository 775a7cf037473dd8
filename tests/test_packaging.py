"""The distribution: what `pip install` builds from pyproject.toml."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_carries_every_package_and_the_base_model_without_warnings(tmp_path: Path) -> None:
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    log = built.stdout + built.stderr
    assert "absent from the `packages` configuration" not in log
    assert "Warning" not in log
    (wheel,) = tmp_path.glob("stt_flywheel-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "stt_flywheel/assets/base_model/model.safetensors" in names
    assert "stt_flywheel/assets/base_model/config.json" in names
    packages = {str(p.parent.relative_to(ROOT / "src")) for p in (ROOT / "src").rglob("*.py")}
    for package in packages:
        assert f"{package}/__init__.py" in names, package
    assert "flywheel_pipelines/cli/__init__.py" in names
    assert "flywheel_pipelines/cloud/__init__.py" in names
