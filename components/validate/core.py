"""The validation step: GX suites and dataset checks on an ingest output; stop the pipeline on failure."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import great_expectations as gx
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
from great_expectations.data_context.types.base import ProgressBarsConfig

from components.validate import dataset, drift, suites
from components.validate.failures import Failure, ValidationFailed
from seqrank.config import FeatureConfig, ValidateConfig
from seqrank.schema import BEHAVIORS, EXAMPLES
from seqrank.storage import read_json, read_table, write_json

log = logging.getLogger(__name__)

_BOUND_KEYS = ("min_value", "max_value", "value_set", "mostly")
VOLUME_KEY = "volume"  # the row counts in a saved profile


def _observed(result: Any) -> Any:
    res = result.result or {}
    if "observed_value" in res:
        return res["observed_value"]
    if "unexpected_count" in res:
        sample = res.get("partial_unexpected_list", [])[:5]
        return f"{res['unexpected_count']} unexpected (e.g. {sample})"
    if result.exception_info and result.exception_info.get("raised_exception"):
        return result.exception_info.get("exception_message", "error")
    return "not met"


def _failures(suite_name: str, validation: Any) -> list[Failure]:
    failed = []
    for r in validation.results:
        if r.success:
            continue
        kwargs = dict(r.expectation_config.kwargs)
        failed.append(
            Failure(
                suite=suite_name,
                expectation=r.expectation_config.type,
                column=kwargs.get("column"),
                observed=_observed(r),
                bound={k: kwargs[k] for k in _BOUND_KEYS if kwargs.get(k) is not None},
            )
        )
    return failed


def _context(docs_dir: Path | None) -> Any:
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    if docs_dir is not None:
        context.add_data_docs_site(
            site_name="seqrank",
            site_config={
                "class_name": "SiteBuilder",
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
    return context


def validate_frames(
    frames: dict[str, tuple[pd.DataFrame, Callable[[], gx.ExpectationSuite]]], docs_dir: Path | None = None
) -> list[Failure]:
    """Run each (frame, suite) through a GX checkpoint; write Data Docs when `docs_dir` is given.

    Suites come as factories because GX only builds them once a context is active.
    """
    context = _context(docs_dir)
    source = context.data_sources.add_pandas("seqrank")
    failures: list[Failure] = []
    for name, (frame, suite) in frames.items():
        batch = source.add_dataframe_asset(name=name).add_batch_definition_whole_dataframe("all")
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=name, data=batch, suite=context.suites.add(suite()))
        )
        actions: list[Any] = (
            [gx.checkpoint.UpdateDataDocsAction(name="docs", site_names=["seqrank"])] if docs_dir else []
        )
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(name=f"{name}-checkpoint", validation_definitions=[definition], actions=actions)
        )
        result = checkpoint.run(batch_parameters={"dataframe": frame})
        for validation in result.run_results.values():
            failures += _failures(name, validation)
    return failures


def _drift_findings(current: dict[str, Any], against: Path | None, cfg: ValidateConfig) -> list[Any]:
    if against is None or cfg.drift_action == "off":
        return []
    previous = drift.load_profile(against)
    if previous is None and (Path(against) / "examples").exists():
        previous = drift.examples_profile(read_table(Path(against) / "examples"))
    if previous is None:
        log.info("no profile at %s to compare with: drift check skipped", against)
        return []
    return drift.compare(current, previous, cfg)


def _previous_counts(against: Path | None) -> dict[str, int] | None:
    """The row counts of the run `against` names: its saved profile's, or counted in an ingest output."""
    if against is None:
        return None
    profile = drift.load_profile(against)
    if profile is not None:
        return profile.get(VOLUME_KEY)
    against = Path(against)
    if not (against / "examples").exists():
        return None
    examples = pq.read_table(against / "examples", columns=["split"])
    behaviors = pq.read_table(against / "behaviors", columns=["user", "item"])
    return dataset.counts(dataset.load(against, examples, behaviors))


def run(
    data_dir: Path, cfg: ValidateConfig, docs_dir: Path | None = None, against: Path | None = None
) -> dict[str, Any]:
    """Validate an ingest output; raise `ValidationFailed` on any failure.

    The GX suites check raw events, examples and behaviors column by column; the dataset checks
    (`dataset.py`) check volume, uniqueness, referential integrity, domains and the label join
    over whole tables. With `against` (a previous validation output holding profile.json, or a
    previous ingest output), row counts are compared with that run's, and so are the examples'
    distributions: drift beyond the configured bounds warns or fails as `cfg.drift_action` says.
    The run's own profile (distributions and row counts) is written to `docs_dir` so the next
    run can compare against it.
    """
    start = time.perf_counter()
    data_dir = Path(data_dir)
    examples = read_table(data_dir / "examples")
    behaviors = read_table(data_dir / "behaviors")
    missing = [n for n in BEHAVIORS.names if n not in behaviors.column_names]
    if missing:
        # Without these columns the derived frame cannot even be built; report like any expectation.
        failures = [Failure("behaviors", "expect_column_to_exist", c, "missing", {}) for c in missing]
        raise ValidationFailed(failures, None)
    frames = {
        "examples": (suites.examples_frame(examples, behaviors), lambda: suites.examples_suite(cfg)),
        "behaviors": (suites.behaviors_frame(behaviors), lambda: suites.behaviors_suite(cfg)),
    }
    manifest_path = data_dir / "manifest.json"
    raw = (
        suites.raw_events_frame(read_json(manifest_path).get("inputs", []))
        if manifest_path.exists()
        else None
    )
    if raw is not None:
        columns = list(raw.columns)
        frames["raw_events"] = (raw, lambda: suites.raw_events_suite(cfg, columns))
    failures = validate_frames(frames, docs_dir)
    suites_done = time.perf_counter()
    outputs = dataset.load(data_dir, examples, behaviors)
    dataset_failures, dataset_report = dataset.check(outputs, cfg, _previous_counts(against))
    failures += dataset_failures
    dataset_done = time.perf_counter()
    # Drift is only meaningful (and computable) on data that passed the suites.
    current = drift.examples_profile(examples) if not failures else None
    findings = _drift_findings(current, against, cfg) if current is not None else []
    if findings and cfg.drift_action == "fail":
        failures += [
            Failure("drift", f.measure, None, round(f.observed, 4), {"max_value": f.bound}) for f in findings
        ]
    for finding in findings:
        log.warning("drift against %s: %s", against, finding.describe())
    docs_index = docs_dir / "index.html" if docs_dir else None
    done = time.perf_counter()
    report = {
        "success": not failures,
        "failures": [f.describe() for f in failures],
        "rows": {"examples": examples.num_rows, "behaviors": behaviors.num_rows},
        "columns_checked": sorted(set(EXAMPLES.names) | set(BEHAVIORS.names)),
        "seconds": round(done - start, 3),
        # The GX suites (with reading the data), the dataset-level checks, and drift.
        "seconds_by_part": {
            "suites": round(suites_done - start, 3),
            "dataset": round(dataset_done - suites_done, 3),
            "drift": round(done - dataset_done, 3),
        },
        "data_docs": str(docs_index) if docs_index else None,
        "dataset": dataset_report,
        "drift": [f.describe() for f in findings],
        "drift_against": str(against) if against else None,
    }
    if docs_dir is not None:
        write_json(Path(docs_dir) / "report.json", report)
        if current is not None:
            drift.save_profile(docs_dir, {**current, VOLUME_KEY: dataset_report["counts"]})
    if failures:
        raise ValidationFailed(failures, docs_index)
    log.info("validation passed in %.1fs (%d examples)", report["seconds"], examples.num_rows)
    return report


def accept(docs_dir: Path, accepted: Path) -> None:
    """Make a passed run's profile (distributions and row counts) the reference of the next run's
    drift and volume checks."""
    profile = drift.load_profile(docs_dir)
    if profile is not None:
        drift.save_profile(accepted, profile)


def run_features(
    feast_dir: Path,
    data_dir: Path,
    cfg: ValidateConfig,
    features_cfg: FeatureConfig,
    docs_dir: Path | None = None,
) -> dict[str, Any]:
    """Validate the feature tables built from `data_dir`: sequence caps, ids, freshness."""
    from components.validate import feature_tables

    start = time.perf_counter()
    behaviors_ts = read_table(Path(data_dir) / "behaviors").column("ts")
    newest = pc.max(pc.list_flatten(behaviors_ts)).as_py() if len(behaviors_ts) else None
    frames = feature_tables.frames(Path(feast_dir) / "data", int(newest or 0), cfg, features_cfg)
    failures = validate_frames(frames, docs_dir)
    report = {
        "success": not failures,
        "failures": [f.describe() for f in failures],
        "rows": feature_tables.summary(frames),
        "seconds": round(time.perf_counter() - start, 3),
        "data_docs": str(docs_dir / "index.html") if docs_dir else None,
    }
    if failures:
        raise ValidationFailed(failures, docs_dir / "index.html" if docs_dir else None)
    return report
