"""The ingest manifest: counts reconciled, split boundaries, adapter report, the rejection message."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from components.ingest.adapters import Prepared
from components.ingest.reasons import REASONS
from components.ingest.splits import split_bounds
from seqrank.config import IngestConfig
from seqrank.schema import SPLITS, VOCAB_ENTITIES
from seqrank.storage import file_fingerprint


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def side_info(path: Path | None, counts: dict[str, int] | None) -> dict[str, Any] | None:
    if path is None:
        return None
    return {
        "path": str(path),
        "bytes": path.stat().st_size,
        "sha256": file_fingerprint(path),
        **(counts or {}),
    }


def build_manifest(
    files: list, stats: dict[str, int], span: list[int] | None, cfg: IngestConfig, side: dict[str, Any]
) -> dict[str, Any]:
    rejected = {r: stats.get(f"rejected.{r}", 0) for r in REASONS if stats.get(f"rejected.{r}", 0)}
    read = stats.get("read", 0)
    accepted = stats.get("events", 0)
    duplicates = stats.get("duplicates", 0)
    if read != accepted + sum(rejected.values()) + duplicates:
        raise RuntimeError(
            f"ingest counts do not reconcile: read {read} != accepted {accepted} + rejected "
            f"{sum(rejected.values())} + duplicates {duplicates}"
        )
    examples = stats.get("examples", 0)
    boundaries = None
    time_range = None
    if span is not None:
        valid_start, test_start = split_bounds(span[0], span[1], cfg.valid_fraction, cfg.test_fraction)
        time_range = {"min_ms": span[0], "max_ms": span[1], "min": iso_ms(span[0]), "max": iso_ms(span[1])}
        boundaries = {
            "valid_start_ms": valid_start,
            "test_start_ms": test_start,
            "valid_start": iso_ms(valid_start),
            "test_start": iso_ms(test_start),
        }
    return {
        "ok": True,
        "inputs": [asdict(f) for f in files],
        "side_tables": side,
        "read": read,
        "accepted": accepted,
        "rejected": rejected,
        "rejected_total": sum(rejected.values()),
        "rejected_share": sum(rejected.values()) / read if read else 0.0,
        "duplicates": duplicates,
        "examples": examples,
        "examples_by_split": {name: stats.get(f"examples_{name}", 0) for name in SPLITS},
        "positives": stats.get("positives", 0),
        "label_rate": stats.get("positives", 0) / examples if examples else 0.0,
        "users": stats.get("users", 0),
        "items": stats.get("items_seen", 0),
        "behaviors": stats.get("behaviors", 0),
        "sessions": stats.get("sessions", 0),
        "item_stats_rows": stats.get("item_stats_rows", 0),
        "vocab": {
            entity: {"size": stats.get(f"vocab.{entity}", 0), "new": stats.get(f"vocab_new.{entity}", 0)}
            for entity in VOCAB_ENTITIES
        },
        "time_range": time_range,
        "split_boundaries": boundaries,
        "config": cfg.model_dump(),
    }


def rejection_message(manifest: dict[str, Any], cfg: IngestConfig, out: Path) -> str:
    counts = manifest["rejected"]
    rejected, read, share = manifest["rejected_total"], manifest["read"], manifest["rejected_share"]
    adapter = manifest.get("adapter")
    if adapter is not None and adapter["rows_rejected_share"] > share:
        # The data set's own rows were rejected by its adapter, before any event existed.
        counts = adapter["rows_rejected"]
        rejected, read, share = (
            adapter["rows_rejected_total"],
            adapter["rows_read"],
            adapter["rows_rejected_share"],
        )
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    reasons = ", ".join(f"{reason} {count:,}" for reason, count in top)
    return (
        f"ingest rejected {rejected:,} of {read:,} records "
        f"({share:.1%}), more than max_rejected_share {cfg.max_rejected_share:.1%}; "
        f"top reasons: {reasons}; dead letters in {out / 'dead_letter'}"
    )


def adapter_manifest(name: str, prepared: Prepared) -> dict[str, Any]:
    report = dict(prepared.report)
    accounted = (
        report["rows_used"]
        + sum(report["rows_rejected"].values())
        + report["rows_duplicate"]
        + sum(report["rows_filtered"].values())
    )
    if accounted != report["rows_read"]:
        raise RuntimeError(
            f"{name} adapter counts do not reconcile: read {report['rows_read']} != {accounted}"
        )
    report["rows_rejected_total"] = sum(report["rows_rejected"].values())
    report["rows_rejected_share"] = (
        report["rows_rejected_total"] / report["rows_read"] if report["rows_read"] else 0.0
    )
    return {"name": name, "split_mode": prepared.split_mode, **report}
