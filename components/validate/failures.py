"""What a failed check reports (suite, check, observed, bound) and the error that stops the step."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Failure:
    """One failed expectation, with what was observed and the bound it broke."""

    suite: str
    expectation: str
    column: str | None
    observed: Any
    bound: dict[str, Any]

    def describe(self) -> str:
        where = f" on column {self.column!r}" if self.column else ""
        bound = ", ".join(f"{k}={v}" for k, v in self.bound.items()) or "-"
        return f"[{self.suite}] {self.expectation}{where}: observed {self.observed}, bound {bound}"


class ValidationFailed(RuntimeError):
    """Raised when a suite fails; the message lists every failed expectation."""

    def __init__(self, failures: list[Failure], docs: Path | None) -> None:
        self.failures = failures
        lines = [f"data validation failed: {len(failures)} expectation(s)"]
        lines += [f"  - {f.describe()}" for f in failures]
        if docs is not None:
            lines.append(f"  Data Docs: {docs}")
        super().__init__("\n".join(lines))
