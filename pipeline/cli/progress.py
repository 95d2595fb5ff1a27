"""Progress displays: a live rich bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import threading
from collections import Counter
from typing import IO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from pipeline.runner import Progress as ProgressSink


class RichProgress(ProgressSink):
    def __init__(self, console: Console) -> None:
        self.console = console
        self.counts: Counter[str] = Counter()
        self._bar = Progress(
            TextColumn("[bold]transcribing"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[green]{task.fields[ok]} ok[/] [red]{task.fields[failed]} failed[/]"),
            TextColumn("{task.fields[audio]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._task: TaskID | None = None

    def start(self, total: int, done: int, todo: int) -> None:
        if done:
            self.console.print(f"{done} of {total} item(s) already finished in this output dir")
        self._task = self._bar.add_task(
            "run", total=total, completed=done, ok=0, failed=0, audio=""
        )
        self._bar.start()

    def item_done(
        self, key: str, state: str, detail: str, audio_s: float, seconds: float | None = None
    ) -> None:
        self.counts[state] += 1
        if state == "SKIPPED":  # a budget cap reached: what was asked for
            self._bar.console.print(f"[yellow]SKIPPED[/] {key}: {detail}")
        elif state != "SUCCEEDED":
            self._bar.console.print(f"[red]FAILED[/] {key}: {detail}")
        if self._task is None:
            return
        self._bar.update(
            self._task,
            advance=1,
            ok=self.counts["SUCCEEDED"],
            failed=self.counts["FAILED"] + self.counts["DEAD"],
            audio=f"{audio_s / 60:.1f} min audio",
        )

    def stop(self) -> None:
        self._bar.stop()


class PlainProgress(ProgressSink):
    """One line per finished item, for logs and pipes."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.total = self.done = 0
        self._lock = threading.Lock()

    def _say(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def start(self, total: int, done: int, todo: int) -> None:
        self.total, self.done = total, done
        self._say(f"bulkscribe: {total} item(s), {done} already finished, {todo} to do")

    def item_done(
        self, key: str, state: str, detail: str, audio_s: float, seconds: float | None = None
    ) -> None:
        with self._lock:
            self.done += 1
            suffix = f" {detail}" if detail else ""
            took = f" ({seconds:.1f} s)" if seconds is not None else ""
            self._say(f"[{self.done}/{self.total}] {state} {key}{suffix}{took}")

    def stop(self) -> None:
        pass
