"""The closing summary of `seqrank run`: a line per step, the gate table, where the report and state are."""

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
    return "—" if value is None else str(value)


def _step_lines(cfg: PipelineConfig, steps: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """One (step, what it did) line per step that ran."""
    lines = []
    if "ingest" in steps:
        m = steps["ingest"]
        lines.append(
            (
                "ingest",
                f"read {m.get('read')}, accepted {m.get('accepted')}, rejected "
                f"{sum(m.get('rejected', {}).values())}, duplicates {m.get('duplicates')}; examples "
                f"{m.get('examples')}{' (cached)' if m.get('cached') else ''}",
            )
        )
    if "validate" in steps:
        v = steps["validate"]
        drift = f"{len(v['drift'])} drift findings" if v.get("drift") else "no drift"
        lines.append(
            ("validate", f"passed ({v.get('seconds')}s), {drift}{' (cached)' if v.get('cached') else ''}")
        )
    if "features" in steps:
        f = steps["features"]
        store = Path(str(f.get("feast_dir", ""))).name
        lines.append(
            ("features", f"staged {store}: {f.get('users')} users ({f.get('seconds', {}).get('total')}s)")
        )
    if "validate_features" in steps:
        lines.append(("validate features", f"passed ({steps['validate_features'].get('seconds')}s)"))
    if "train" in steps:
        t = steps["train"]
        m = t.get("metrics", {})
        shown = ", ".join(
            f"{k} {_fmt(m.get(f'test_{k}'))}" for k in ("auc", "gauc", "logloss", "calibration")
        )
        lines.append(("train", f"{t.get('model_name', cfg.model.name)} run {t.get('run_id')}: test {shown}"))
    if "gate" in steps:
        g = steps["gate"]
        versus = f"vs champion v{g['champion_version']}" if g.get("champion_version") else "first model"
        failed = [r["rule"] for r in g.get("rules", []) if r.get("verdict") == "fail"]
        why = f"failed: {', '.join(failed)}" if failed else "every rule passes"
        lines.append(("gate", f"{'PROMOTE' if g.get('promote') else 'REJECT'} ({versus}; {why})"))
    if "deploy" in steps:
        d = steps["deploy"]
        reloads = ", ".join(f"{r['url']} {r['status']}" for r in d.get("reload", [])) or "none"
        lines.append(
            (
                "deploy",
                f"{d.get('model_version')} live with store {Path(str(d.get('feast_dir', ''))).name} "
                f"(previous {d.get('previous') or '—'}; reload: {reloads})",
            )
        )
    elif "gate" in steps:
        live = steps.get("live", {}).get("model_version")
        lines.append(("deploy", f"skipped: live model {live or '(none)'} and its features unchanged"))
    return lines


def gate_table(gate: dict[str, Any]) -> Table:
    """The gate's rules, both models' numbers and each verdict, as a console table."""
    champion = f"champion v{gate['champion_version']}" if gate.get("champion_version") else "champion"
    table = Table(title=f"gate: {'PROMOTE' if gate.get('promote') else 'REJECT'}", title_justify="left")
    for column, justify in (
        ("rule", "left"),
        ("challenger", "right"),
        (champion, "right"),
        ("allowed", "left"),
        ("verdict", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    style = {"pass": "green", "fail": "bold red", "skip": "dim"}
    for rule in gate.get("rules", []):
        verdict = rule.get("verdict", "")
        table.add_row(
            rule.get("rule", ""),
            _fmt(rule.get("challenger")),
            _fmt(rule.get("champion")),
            rule.get("limit", ""),
            f"[{style.get(verdict, '')}]{verdict}[/]",
        )
    return table


def print_run_summary(
    console: Console,
    cfg: PipelineConfig,
    steps: dict[str, dict[str, Any]],
    seconds: float,
    log: Path | None = None,
) -> None:
    """Print one line per step of a run (`pipelines.local.run_local`'s result), the gate table,
    where the report, the run's log, MLflow and the service are, and how to run a challenger."""
    paths = StatePaths.of(cfg)
    run_name = steps.get("train", {}).get("pipeline_run", "")
    console.print(f"[bold]seqrank run {run_name}[/] ({seconds:.0f}s)", soft_wrap=True)
    for step, line in _step_lines(cfg, steps):
        console.print(f"  {step:<18} {line}", soft_wrap=True, highlight=False)
    missing = [s for s in STEPS if s not in steps and s != "deploy"]
    if missing:
        console.print(f"  {'not run':<18} {', '.join(missing)}")
    if steps.get("gate", {}).get("rules"):
        # Wide enough for the slice rule names whatever the terminal (a pipe reports 80 columns).
        Console(width=max(console.width, 110)).print(gate_table(steps["gate"]))
    # soft_wrap: paths and commands must stay on one line to be copied.
    if steps.get("report", {}).get("path"):
        console.print(f"report:     {steps['report']['path']}", soft_wrap=True)
    if log is not None:
        console.print(f"log:        {log}", soft_wrap=True)
    console.print(f"state dir:  {paths.root}", soft_wrap=True)
    if paths.mlflow_uri.startswith(("http://", "https://")):
        console.print(f"MLflow UI:  {paths.mlflow_uri}", soft_wrap=True)
    else:
        console.print(f"MLflow UI:  mlflow ui --backend-store-uri {paths.mlflow_uri}", soft_wrap=True)
    if (paths.champion_bundle / "bundle.json").exists():
        ingest_dir = Path(steps["ingest"]["output"]) if "output" in steps.get("ingest", {}) else None
        request = json.dumps(example_request(paths.champion_bundle, ingest_dir))
        console.print(f"serve:      seqrank serve --set state_dir={paths.root}", soft_wrap=True)
        console.print(
            f"then:       curl -s localhost:{cfg.serve.port}/v1/rank -H 'content-type: application/json' "
            f"-d '{request}'",
            soft_wrap=True,
        )
    # Another model on the same data: the gate compares it with this run's champion.
    other = "din" if cfg.model.name != "din" else "sim"
    state = "" if cfg.state_dir.resolve() == Path(".seqrank").resolve() else f" --state-dir {paths.root}"
    console.print(
        f"challenger: seqrank run --set model.name={other}{state}   (the gate compares it with the champion)",
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
