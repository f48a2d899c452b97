"""A sampled log of ranking requests with the features they were scored on, for skew audits."""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np


class RequestLog:
    """Appends one JSON line per sampled request to `<directory>/requests-<UTC date>.jsonl`.

    A line holds the request time, the user (raw id and index), the model version and the
    features exactly as the model saw them, so an audit can recompute them offline "as of" that
    time and count mismatches (`seqrank audit skew`).
    """

    def __init__(self, directory: Path, sample_rate: float, seed: int | None = None) -> None:
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError(f"sample_rate = {sample_rate}: must be within [0, 1]")
        self.directory = Path(directory)
        self.sample_rate = sample_rate
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def sampled(self) -> bool:
        return self.sample_rate > 0 and self._random.random() < self.sample_rate

    def write(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, default=_plain, separators=(",", ":")) + "\n"
        day = time.strftime("%Y%m%d", time.gmtime(entry["ts"] / 1000))
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            with open(self.directory / f"requests-{day}.jsonl", "a", encoding="utf-8") as f:
                f.write(line)


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.integer):
        return int(value)
    raise TypeError(f"cannot log {type(value).__name__}")
