"""Progress of `conformance run`: tests done of the total, elapsed, time left, failures so far.

The pytest child (its conformance plugin, `--conformance-progress FILE`) appends one JSON line per
finished test to a file; `Progress.follow` reads it in a thread while the child runs. On a terminal
the display is a rich progress bar; otherwise (CI logs, pipes) it degrades to a plain line every
`PLAIN_EVERY_S` seconds and one at the end of each part.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

PLAIN_EVERY_S = 30.0
POLL_S = 0.5


def _clock(seconds: float) -> str:
    seconds = int(max(0.0, seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


class Counts:
    """What the progress file said last: done, total, failed, error."""

    def __init__(self) -> None:
        self.done, self.total, self.failed, self.error = 0, None, 0, 0
        self._offset = 0
        self._partial = ""

    def read(self, path: Path) -> None:
        try:
            with open(path, encoding="utf-8") as handle:
                handle.seek(self._offset)
                text = handle.read()
                self._offset = handle.tell()
        except OSError:
            return
        text, self._partial = self._partial + text, ""
        lines = text.split("\n")
        self._partial = lines.pop()  # an unfinished last line is read again next time
        for line in lines:
            self._apply(line)

    def _apply(self, line: str) -> None:
        try:
            event: dict[str, Any] = json.loads(line)
        except ValueError:
            return
        if event.get("total"):
            self.total = int(event["total"])
        if "done" in event:
            self.done = int(event["done"])
            self.failed, self.error = int(event.get("failed", 0)), int(event.get("error", 0))


class Progress:
    """One display for the whole run; `follow(name, path)` shows one part (one pytest child) while it runs."""

    def __init__(self, stream: TextIO | None = None, fancy: bool | None = None):
        self.stream = stream or sys.stdout
        self.fancy = self.stream.isatty() if fancy is None else fancy
        self.started = time.monotonic()

    def follow(self, name: str, path: Path) -> "_Follower":
        return _Follower(self, name, path)

    def line(self, name: str, counts: Counts, started: float, final: bool = False) -> str:
        """`NAME: 120/700 tests, 1 failed, 0 errors, 2:10 elapsed, about 10:30 left` (the time left of this part)."""
        elapsed = time.monotonic() - started
        total = f"/{counts.total}" if counts.total else ""
        text = f"{name}: {counts.done}{total} tests, {counts.failed} failed, {counts.error} errors, {_clock(elapsed)} elapsed"
        if not final and counts.total and counts.done:
            left = elapsed / counts.done * (counts.total - counts.done)
            text += f", about {_clock(left)} left"
        return text


class _Follower:
    """Context manager: reads the progress file in a thread and draws until the child is done."""

    def __init__(self, progress: Progress, name: str, path: Path):
        self.progress, self.name, self.path = progress, name, path
        self.counts = Counts()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._bar: Any = None

    def __enter__(self) -> "_Follower":
        self.started = time.monotonic()
        if self.progress.fancy:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, \
                TimeElapsedColumn, TimeRemainingColumn

            self._bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("[red]{task.fields[bad]}"), TimeElapsedColumn(), TextColumn("left"),
                            TimeRemainingColumn(), console=Console(file=self.progress.stream), transient=False)
            self._task = self._bar.add_task(self.name, total=None, bad="")
            self._bar.start()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.counts.read(self.path)
        if self._bar is not None:
            self._draw()
            self._bar.stop()
        else:
            print(self.progress.line(self.name, self.counts, self.started, final=True), file=self.progress.stream, flush=True)

    def _draw(self) -> None:
        c = self.counts
        bad = ", ".join(f"{n} {w}" for n, w in ((c.failed, "failed"), (c.error, "errors")) if n)
        self._bar.update(self._task, completed=c.done, total=c.total, bad=bad)

    def _run(self) -> None:
        last_plain = time.monotonic()
        while not self._stop.wait(POLL_S):
            self.counts.read(self.path)
            if self._bar is not None:
                self._draw()
            elif time.monotonic() - last_plain >= PLAIN_EVERY_S:
                last_plain = time.monotonic()
                print(self.progress.line(self.name, self.counts, self.started), file=self.progress.stream, flush=True)
