"""The closing summary of `seqrank run`: metrics, gate decision, where state lives, how to serve."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from seqrank.config import PipelineConfig
from seqrank.paths import StatePaths

STEPS = ("ingest", "validate", "features", "validate_features", "train", "gate", "deploy")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) >= 1 else f"{value:.4f}"
    return str(value)


def print_run_summary(
    console: Console, cfg: PipelineConfig, steps: dict[str, dict[str, Any]], seconds: float
) -> None:
    """Print what each step of one run reported (`pipelines.local.run_local`'s result)."""
    paths = StatePaths.of(cfg)
    run_name = steps.get("train", {}).get("pipeline_run", "")
    table = Table(title=f"seqrank run {run_name} ({seconds:.0f}s)", show_header=True)
    table.add_column("step")
    table.add_column("result")
    if "ingest" in steps:
        m = steps["ingest"]
        cached = " (cached)" if m.get("cached") else ""
        rejected = sum(m.get("rejected", {}).values())
        table.add_row(
            "ingest",
            f"read {m.get('read')}, accepted {m.get('accepted')}, rejected {rejected}, "
            f"duplicates {m.get('duplicates')}; examples {m.get('examples')}{cached}",
        )
    if "validate" in steps:
        v = steps["validate"]
        drift = f"; drift: {'; '.join(v['drift'])}" if v.get("drift") else ""
        cached = " (cached)" if v.get("cached") else ""
        table.add_row("validate", f"passed ({v.get('seconds')}s){cached}{drift}")
    if "features" in steps:
        f = steps["features"]
        table.add_row(
            "features", ", ".join(f"{k} {_fmt(v)}" for k, v in f.items() if not isinstance(v, dict))
        )
    if "validate_features" in steps:
        v = steps["validate_features"]
        table.add_row("validate features", f"passed ({v.get('seconds')}s)")
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
    # soft_wrap: commands must stay on one line to be copied.
    console.print(f"state dir:  {paths.root}", soft_wrap=True)
    if steps.get("ingest", {}).get("output"):
        console.print(f"ingest out: {steps['ingest']['output']}", soft_wrap=True)
    if paths.mlflow_uri.startswith(("http://", "https://")):
        console.print(f"MLflow UI:  {paths.mlflow_uri}", soft_wrap=True)
    else:
        console.print(f"MLflow UI:  mlflow ui --backend-store-uri {paths.mlflow_uri}", soft_wrap=True)
    for step in ("validate", "validate_features"):
        if steps.get(step, {}).get("data_docs"):
            console.print(f"Data Docs:  {steps[step]['data_docs']}", soft_wrap=True)
    if (paths.champion_bundle / "bundle.json").exists():
        ingest_dir = Path(steps["ingest"]["output"]) if "output" in steps.get("ingest", {}) else None
        request = json.dumps(example_request(paths.champion_bundle, ingest_dir))
        console.print(f"serve:      seqrank serve --set state_dir={paths.root}", soft_wrap=True)
        console.print(
            f"then:       curl -s localhost:{cfg.serve.port}/rank -H 'content-type: application/json' "
            f"-d '{request}'",
            soft_wrap=True,
        )


def example_request(bundle: Path, ingest_dir: Path | None = None, candidates: int = 5) -> dict[str, Any]:
    """A ranking request for the user with the longest history (when the ingest output is at hand)
    and a few items of the bundle's vocab, for the printed example."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    users = pq.read_table(bundle / "vocab" / "user.parquet")
    items = pq.read_table(bundle / "vocab" / "item.parquet").column("raw").to_pylist()
    user_id = users.column("raw")[0].as_py() if users.num_rows else "unknown-user"
    if ingest_dir is not None and (ingest_dir / "behaviors").exists():
        behaviors = pq.read_table(ingest_dir / "behaviors", columns=["user", "item"])
        if behaviors.num_rows:
            longest = pc.index(
                pc.list_value_length(behaviors.column("item")),
                pc.max(pc.list_value_length(behaviors.column("item"))),
            ).as_py()
            index = behaviors.column("user")[longest].as_py()
            match = pc.index(users.column("index"), index).as_py()
            if match >= 0:
                user_id = users.column("raw")[match].as_py()
    return {"user_id": user_id, "candidates": items[:candidates]}
