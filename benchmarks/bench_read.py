"""The read commands on the demo's state: each one's wall time and peak memory (resident set) as a
fresh process, beside the import floor (`python -c "import stt_flywheel"`) and the CLI's own start
(`stt-flywheel --help`). The target: each under 1 s and 200 MB.

The state is `make demo`'s (`demo-work`, or `--work-dir`); without one, the demo is run first.
Run with `make bench` (or `python benchmarks/bench_read.py [--work-dir DIR] [--repeat N]`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

COMMANDS = (
    ("status", ["status"]),
    ("registry list", ["registry", "list"]),
    ("runs list", ["runs", "list"]),
    ("runs show latest", ["runs", "show", "latest"]),
    ("registry audit", ["registry", "audit"]),
)


def measure(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and peak resident MB of one process running `argv` to its end."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(
            f"{' '.join(argv)} failed: {process.stderr.read().decode() if process.stderr else ''}"
        )
    return seconds, usage.ru_maxrss / 1024  # Linux: kilobytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", type=Path, default=Path("demo-work"))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    cli = str(Path(sys.executable).with_name("stt-flywheel"))
    config = args.work_dir / "flywheel.yaml"
    if not config.exists():
        print(f"no demo state in {args.work_dir}: running the demo first", flush=True)
        subprocess.run([cli, "demo", "--work-dir", str(args.work_dir)], check=True, stdout=subprocess.DEVNULL)
    rows = [
        ("import floor: python -c 'import stt_flywheel'", [sys.executable, "-c", "import stt_flywheel"]),
        ("CLI start: stt-flywheel --help", [cli, "--help"]),
        *((name, [cli, *argv, "--config", str(config)]) for name, argv in COMMANDS),
    ]
    table = Table(
        title=f"Read commands on {args.work_dir} (median of {args.repeat} fresh processes; target < 1 s, < 200 MB)"
    )
    for col in ("command", "wall s", "peak RSS MB"):
        table.add_column(col)
    for name, argv in rows:
        runs = [measure(argv) for _ in range(args.repeat)]
        table.add_row(name, f"{statistics.median(s for s, _ in runs):.2f}", f"{max(m for _, m in runs):.0f}")
    Console().print(table)


if __name__ == "__main__":
    main()
