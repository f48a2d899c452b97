"""A local run's console output: kfp's executor logs go to a file, step starts and ends to a callback."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# What kfp's local runner says about a task (kfp.local.task_dispatcher and its orchestrator).
_STARTED = re.compile(r"Executing task '(?P<task>[^']+)'")
_FINISHED = re.compile(r"Task '(?P<task>[^']+)' finished with status (?P<status>[A-Z]+)")
_CACHED = re.compile(r"Task (?P<task>\S+) cache hit")
_RETRY = re.compile(
    r"Task (?P<task>\S+) failed \(attempt (?P<attempt>\d+)/(?P<of>\d+)\)\. Retrying in (?P<wait>\S+)s"
)
TAIL_LINES = 25


@dataclass
class StepEvent:
    """A step started ("start"), finished ("done", "cached"), failed ("failed", with the last lines
    it printed) or will run again after a failure ("retry", with what kfp said)."""

    kind: str
    step: str
    seconds: float = 0.0
    tail: list[str] = field(default_factory=list)
    detail: str = ""


def step_name(task: str) -> str:
    """kfp's task name as the pipeline's step: `validate-features-step` → `validate features`."""
    return task.removesuffix("-step").replace("-", " ")


class _StepLog(io.TextIOBase):
    """A text stream that appends every line to the log file and reports the runner's task lines."""

    def __init__(self, log: TextIO, on_event: Callable[[StepEvent], None], echo: TextIO | None) -> None:
        self._log, self._on_event, self._echo = log, on_event, echo
        self._pending = ""
        self._started: dict[str, float] = {}
        self._tail: deque[str] = deque(maxlen=TAIL_LINES)

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._log.write(text)
        if self._echo is not None:
            self._echo.write(text)
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._line(_ANSI.sub("", line))
        return len(text)

    def flush(self) -> None:
        self._log.flush()
        if self._echo is not None:
            self._echo.flush()

    def _line(self, line: str) -> None:
        if started := _STARTED.search(line):
            self._started[started["task"]] = time.perf_counter()
            self._tail.clear()
            self._on_event(StepEvent("start", step_name(started["task"])))
        elif finished := _FINISHED.search(line):
            task = finished["task"]
            seconds = time.perf_counter() - self._started.pop(task, time.perf_counter())
            ok = finished["status"] == "SUCCESS"
            tail = [] if ok else list(self._tail)
            self._on_event(StepEvent("done" if ok else "failed", step_name(task), seconds, tail))
        elif cached := _CACHED.search(line):
            self._on_event(StepEvent("cached", step_name(cached["task"])))
        elif retry := _RETRY.search(line):
            detail = f"attempt {int(retry['attempt']) + 1} of {retry['of']} in {float(retry['wait']):.0f}s"
            self._on_event(StepEvent("retry", step_name(retry["task"]), detail=detail))
        else:
            self._tail.append(line.removeprefix("    "))


@contextlib.contextmanager
def captured_run(
    log_path: Path, on_event: Callable[[StepEvent], None], *, echo: TextIO | None = None
) -> Iterator[None]:
    """Send everything written to stdout, stderr and the root logger to `log_path` while it runs.

    The local runner prints each step's subprocess output and its own task lines on stdout; the
    libraries run in-process (MLflow, the report) write to stderr and the log. `on_event` hears
    each step's start, end (with seconds) and failure (with the last lines the step printed);
    with `echo` (the console as it was), every line also goes there as it comes.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    with log_path.open("a", encoding="utf-8", buffering=1) as log:
        stream = _StepLog(log, on_event, echo)
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handlers, root.handlers = root.handlers, [handler]
        # The runner's task lines about caching and retries are INFO records of the root logger.
        level = root.level
        root.setLevel(min(level, logging.INFO))
        try:
            with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):  # type: ignore[type-var]
                yield
        finally:
            root.handlers = handlers
            root.setLevel(level)
            stream.write("\n")
            stream.flush()
