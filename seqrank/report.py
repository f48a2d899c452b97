"""The closing summary of `seqrank run`: metrics, gate decision, where state lives, how to serve."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from seqrank.config import PipelineConfig
from seqrank.paths import StatePaths

STEPS = ("ingest", "validate", "features", "train", "gate", "deploy")


def load_steps(paths: StatePaths, run_id: str) -> dict[str, dict[str, Any]]:
    """Each finished step's summary for `run_id` (steps that did not run are absent)."""
    steps = {}
    for step in STEPS:
        path = paths.run_dir(run_id) / "steps" / f"{step}.json"
        if path.exists():
            steps[step] = json.loads(path.read_text())
    return steps


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def print_run_summary(console: Console, cfg: PipelineConfig, run_id: str, seconds: float) -> None:
    paths = StatePaths(cfg.state_dir)
    steps = load_steps(paths, run_id)
    table = Table(title=f"seqrank run {run_id} ({seconds:.0f}s)", show_header=True)
    table.add_column("step")
    table.add_column("result")
    if "ingest" in steps:
        m = steps["ingest"]
        rejected = sum(m.get("rejected", {}).values())
        table.add_row(
            "ingest",
            f"read {m.get('read')}, accepted {m.get('accepted')}, rejected {rejected}, "
            f"duplicates {m.get('duplicates')}; examples {m.get('examples')}",
        )
    if "validate" in steps:
        table.add_row("validate", f"passed ({steps['validate'].get('seconds')}s)")
    if "features" in steps:
        f = steps["features"]
        table.add_row(
            "features", ", ".join(f"{k} {_fmt(v)}" for k, v in f.items() if not isinstance(v, dict))
        )
    if "train" in steps:
        t = steps["train"]
        metrics = t.get("metrics", {})
        shown = ", ".join(f"{k} {_fmt(v)}" for k, v in metrics.items() if k.startswith("test_"))
        table.add_row("train", f"{t.get('model_name', cfg.model.name)} run {t.get('run_id')}: {shown}")
    if "gate" in steps:
        g = steps["gate"]
        table.add_row("gate", f"{'PROMOTE' if g.get('promote') else 'REJECT'}: {g.get('reason')}")
    if "deploy" in steps:
        table.add_row("deploy", f"{steps['deploy'].get('model_version')} -> {steps['deploy'].get('bundle')}")
    missing = [s for s in STEPS if s not in steps and not (s == "deploy" and "gate" in steps)]
    if missing:
        table.add_row("not run", ", ".join(missing))
    console.print(table)
    console.print(f"state dir:  {paths.root}")
    console.print(f"MLflow UI:  mlflow ui --backend-store-uri {paths.mlflow_uri}")
    if (paths.champion_bundle / "bundle.json").exists():
        port = cfg.serve.port
        console.print(f"serve:      seqrank serve --set state_dir={paths.root}")
        console.print(
            f"then:       curl -s localhost:{port}/rank -H 'content-type: application/json' "
            f"-d '{json.dumps(example_request(paths.champion_bundle))}'"
        )


def example_request(bundle: Path, candidates: int = 5) -> dict[str, Any]:
    """A ranking request for a real user and items of the bundle's vocab, for the printed example."""
    import pyarrow.parquet as pq

    users = pq.read_table(bundle / "vocab" / "user.parquet").column("raw").to_pylist()
    items = pq.read_table(bundle / "vocab" / "item.parquet").column("raw").to_pylist()
    return {"user_id": users[0] if users else "u0", "candidates": items[:candidates]}
