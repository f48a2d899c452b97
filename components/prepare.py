"""The prepare step: the run's typed parameters applied to its config, and its inputs fingerprinted.

kfp keys its cache on a step's inputs as given: a path names a file, not its content. The
fingerprint (path, size and modification time of every file an input names or matches, read
through Beam's FileSystems so gs://, s3:// and hdfs:// inputs work like local ones) is what the
ingest step takes besides the paths, so its cache hits only while the files stay the same.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import date
from typing import Any

import yaml

from seqrank.config import PipelineConfig, from_dict

# The config sections a step's output depends on; everything else is reset to its default in the
# slice the step gets, so changing (say) the model does not miss the ingest cache.
SLICES: dict[str, tuple[str, ...]] = {
    "ingest": ("state_dir", "infra", "ingest"),
    "validate": ("state_dir", "infra", "validate"),
}


def resolve(
    config_yaml: str,
    *,
    model_name: str = "",
    epochs: int = 0,
    learning_rate: float = 0.0,
    batch_size: int = 0,
    gate_metric: str = "",
    gate_min_delta: float = -1.0,
    gate_floor: float = -1.0,
) -> PipelineConfig:
    """`config_yaml` with the typed run parameters applied on top (they win); empty/unset ones are skipped.

    Unset means "", 0 or a negative number, which no valid setting is.
    """
    data = yaml.safe_load(config_yaml) or {}
    if not isinstance(data, dict):
        raise ValueError(f"pipeline parameter config_yaml must hold a mapping, got {type(data).__name__}")
    overrides: dict[str, dict[str, Any]] = {
        "model": {"name": model_name} if model_name else {},
        "train": {
            **({"epochs": epochs} if epochs > 0 else {}),
            **({"lr": learning_rate} if learning_rate > 0 else {}),
            **({"batch_size": batch_size} if batch_size > 0 else {}),
        },
        "gate": {
            **({"metric": gate_metric} if gate_metric else {}),
            **({"min_delta": gate_min_delta} if gate_min_delta >= 0 else {}),
            **({"floor": gate_floor} if gate_floor >= 0 else {}),
        },
    }
    for section, values in overrides.items():
        if values:
            data[section] = {**(data.get(section) or {}), **values}
    cfg = from_dict(data, "pipeline parameters")
    # Fail here, in seconds, rather than in the train step after ingest and features ran.
    from training.models import check_options

    check_options(cfg.model.name, cfg.model.options)
    return cfg


def check_window(start: str, end: str) -> None:
    """A date range is ISO dates (either side may be open) with start before end."""
    parsed = []
    for name, value in (("start_date", start), ("end_date", end)):
        try:
            parsed.append(date.fromisoformat(value) if value else None)
        except ValueError:
            raise ValueError(f"{name} = {value!r}: expected an ISO date, e.g. 2026-01-31") from None
    if parsed[0] and parsed[1] and parsed[0] >= parsed[1]:
        raise ValueError(f"start_date {start} must be before end_date {end}")


def config_slice(cfg: PipelineConfig, step: str) -> str:
    """The YAML of `cfg` with only the sections `step` depends on (the rest at defaults)."""
    full = cfg.to_dict()
    return yaml.safe_dump({key: full[key] for key in SLICES[step]}, sort_keys=True)


def fingerprint(uris: list[str]) -> str:
    """A digest of what `uris` (files, directories' files or globs, any Beam file system) hold now.

    Raises FileNotFoundError naming an input that matches nothing.
    """
    from apache_beam.io.filesystems import FileSystems

    entries = []
    for uri in uris:
        pattern = uri
        if FileSystems.get_scheme(uri) is None or uri.startswith("file://"):
            path = uri.removeprefix("file://")
            if os.path.isdir(path):
                pattern = os.path.join(path, "**")
        found = FileSystems.match([pattern])[0].metadata_list
        if not found:
            raise FileNotFoundError(f"input {uri} matches no file")
        entries += [(m.path, m.size_in_bytes, m.last_updated_in_seconds) for m in found]
    digest = hashlib.sha256(json.dumps(sorted(entries)).encode())
    return digest.hexdigest()
