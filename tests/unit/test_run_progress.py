"""`seqrank run`'s console: kfp's output goes to the run's log, a line per step to the console."""

from __future__ import annotations

import io
import logging
import subprocess
import sys

from rich.console import Console

from pipelines.progress import StepEvent, captured_run, step_name
from seqrank.cli.pipeline import StepLines, failure_reason

# What kfp's local runner prints around a task, with its colours (kfp.local.logging_utils).
START = "12:00:00.000 - INFO - Executing task \x1b[96m'{task}'\x1b[0m"
FINISH = "12:00:01.000 - INFO - Task \x1b[96m'{task}'\x1b[0m finished with status \x1b[92m{status}\x1b[0m"


def test_step_names_read_as_the_pipeline_steps() -> None:
    assert step_name("validate-features-step") == "validate features"
    assert step_name("ingest-step") == "ingest"


def test_runner_output_goes_to_the_log_and_steps_to_the_callback(tmp_path) -> None:
    events: list[StepEvent] = []
    log = tmp_path / "logs" / "run.log"
    with captured_run(log, events.append):
        print(START.format(task="ingest-step"))
        print("    [KFP Executor] executor JSON the console should not show")
        print(FINISH.format(task="ingest-step", status="SUCCESS"))
        # A child process's output reaches the runner's stdout through a pipe, then print.
        child = subprocess.run(
            [sys.executable, "-c", "import sys; print('from the child'); print('oops', file=sys.stderr)"],
            capture_output=True,
            text=True,
            check=True,
        )
        print(child.stdout + child.stderr, end="")
        print("a warning on stderr", file=sys.stderr)
        logging.getLogger("mlflow").warning("library warning")
        logging.info("Task validate-step cache hit (key=abc); skipping execution.")
    text = log.read_text()
    for line in ("executor JSON", "from the child", "oops", "a warning on stderr", "library warning"):
        assert line in text
    assert [(e.kind, e.step) for e in events] == [
        ("start", "ingest"),
        ("done", "ingest"),
        ("cached", "validate"),
    ]
    assert events[1].seconds >= 0


def test_verbose_echoes_every_line_and_handlers_come_back(tmp_path) -> None:
    echo = io.StringIO()
    handlers = list(logging.getLogger().handlers)
    with captured_run(tmp_path / "run.log", lambda event: None, echo=echo):
        print("streamed line")
    assert "streamed line" in echo.getvalue()
    assert logging.getLogger().handlers == handlers


def test_a_failed_step_reports_its_exception_and_the_retry(tmp_path) -> None:
    events: list[StepEvent] = []
    with captured_run(tmp_path / "run.log", events.append):
        print(START.format(task="validate-step"))
        print("    Traceback (most recent call last):")
        print('      File "x.py", line 1, in <module>')
        print("    components.validate.failures.ValidationFailed: data validation failed: 1 expectation(s)")
        print("      - [examples] expect_table_row_count_to_be_between: observed 31250")
        print("    ")
        print(FINISH.format(task="validate-step", status="FAILURE"))
        logging.info("Task validate-step failed (attempt 1/2). Retrying in 30.0s...")
    failed, retry = events[1], events[2]
    assert (failed.kind, failed.step) == ("failed", "validate")
    assert failure_reason(failed.tail) == [
        "components.validate.failures.ValidationFailed: data validation failed: 1 expectation(s)",
        "  - [examples] expect_table_row_count_to_be_between: observed 31250",
    ]
    assert (retry.kind, retry.detail) == ("retry", "attempt 2 of 2 in 30s")


def test_a_failure_without_an_exception_shows_its_last_lines() -> None:
    assert failure_reason(["", "one", "two", "   "]) == ["one", "two"]


def test_step_lines_print_one_line_per_finished_step() -> None:
    out = io.StringIO()
    lines = StepLines(Console(file=out, width=120), spinner=False)
    lines(StepEvent("start", "ingest"))
    lines(StepEvent("done", "ingest", 2.25))
    lines(StepEvent("cached", "validate"))
    lines(StepEvent("failed", "train", 1.0, ["RuntimeError: out of memory"]))
    lines.stop()
    printed = out.getvalue().splitlines()
    assert printed[0].split() == ["✓", "ingest", "2.2s"]
    assert "cached" in printed[1]
    assert printed[2].split()[:3] == ["✗", "train", "failed"]
    assert printed[3].strip() == "RuntimeError: out of memory"
    assert lines.failed == "train"
