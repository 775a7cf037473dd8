"""What a local run is doing, while it runs: each stage's outcome as its ledger entry appears, and
the training steps as a progress bar (on a terminal) or a line every fifth of the run (in a log).

The stages run in kfp.local's subprocesses with their output in the run's log file; this watches
the run ledger (`<reports>/<run>/<stage>.json`, and `train-progress.json` while training) from a
thread of the process that started the run.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from stt_flywheel.config import FlywheelConfig
from stt_flywheel.run.entries import (
    ENTRIES,
    DatasetEntry,
    DeployEntry,
    LedgerEntry,
    RegressionEntry,
    TrainEntry,
    TrainProgress,
    TriggerEntry,
    ValidationEntry,
)
from stt_flywheel.run.ledger import list_runs, read_ledger

__all__ = ["stage_line", "watch_run"]


def stage_line(entry: LedgerEntry) -> str:
    """One stage's outcome in a line."""
    if isinstance(entry, TriggerEntry):  # the first reason, unless something stopped the run (then all of it)
        return entry.summary if entry.blocked_by else entry.summary.split(";")[0]
    if isinstance(entry, DatasetEntry):
        usable = "usable" if entry.usable else f"not usable: {entry.usable_reason}"
        return (
            f"{entry.version}: {entry.counts.get('accepted')} accepted, {entry.counts.get('quarantined')} "
            f"quarantined; splits {entry.splits}; {usable}"
        )
    if isinstance(entry, TrainEntry):
        return f"{int(entry.steps)} steps on {entry.device} in {entry.train_runtime_s:.0f} s"
    if isinstance(entry, ValidationEntry | RegressionEntry):
        verdict = "passed" if entry.passed else "rejected"
        return verdict + (f": {entry.reasons[0][:160]}" if entry.reasons and not entry.passed else "")
    if isinstance(entry, DeployEntry):
        return f"{entry.action} (version {entry.version})"
    return ""


class _Watcher:
    def __init__(self, config: FlywheelConfig, before: set[str], console: Console) -> None:
        self.config, self.before, self.console = config, before, console
        self.run_id: str | None = None
        self.reported: set[str] = set()
        self.progress: Progress | None = None
        self.task: Any = None
        self.last_fifth = -1

    def poll(self) -> None:
        if self.run_id is None:
            new = [r for r in list_runs(self.config) if r not in self.before]
            if not new:
                return
            self.run_id = new[-1]
            self.console.print(f"  run {self.run_id}", highlight=False)
        for kind in ENTRIES:
            stage = kind.STAGE
            if stage in self.reported:
                continue
            entry = read_ledger(self.config, self.run_id, kind)
            if entry is None:
                if stage == "train" and "dataset" in self.reported:
                    self._training()
                continue
            if stage == "train":
                self._end_training()
            self.reported.add(stage)
            self.console.print(f"  ✓ {stage}: {stage_line(entry)}", highlight=False)

    def _training(self) -> None:
        assert self.run_id is not None
        step = read_ledger(self.config, self.run_id, TrainProgress)
        if step is None:
            return
        loss = f"loss {step.loss:.3f}" if step.loss is not None else ""
        if self.console.is_terminal:
            if self.progress is None:
                self.progress = Progress(
                    TextColumn("  training"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TextColumn("{task.fields[loss]}"),
                    TimeElapsedColumn(),
                    console=self.console,
                    transient=True,
                )
                self.progress.start()
                self.task = self.progress.add_task("train", total=step.max_steps, loss="")
            self.progress.update(self.task, completed=step.step, loss=loss)
            return
        fifth = 5 * step.step // max(1, step.max_steps)
        if fifth > self.last_fifth:
            self.last_fifth = fifth
            self.console.print(f"  training: step {step.step}/{step.max_steps} {loss}", highlight=False)

    def _end_training(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def close(self) -> None:
        self._end_training()


def _beside_redirect(console: Console) -> tuple[Console, IO[str] | None]:
    """A console on a duplicate of `console`'s file descriptor: the local runner points this
    process's stdout at the run's log while the run goes on, and the progress belongs on the
    terminal (or the pipe) the user watches."""
    try:
        fd = console.file.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):  # not a real file (a test's buffer)
        return console, None
    stream = os.fdopen(os.dup(fd), "w", buffering=1, encoding="utf-8")
    return Console(file=stream, width=console.width, soft_wrap=console.soft_wrap), stream


@contextmanager
def watch_run(config: FlywheelConfig, console: Console, interval_s: float = 1.0) -> Iterator[None]:
    """Print the run's progress while the block runs (the run that starts inside it)."""
    console, stream = _beside_redirect(console)
    watcher = _Watcher(config, set(list_runs(config)), console)
    done = threading.Event()

    def loop() -> None:
        while not done.wait(interval_s):
            try:
                watcher.poll()
            except (OSError, ValueError):  # an entry being replaced as it is read: the next poll reads it
                continue

    thread = threading.Thread(target=loop, name="run-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=5)
        try:
            watcher.poll()  # what finished between the last poll and the end
        finally:
            watcher.close()
            if stream is not None:
                stream.close()
