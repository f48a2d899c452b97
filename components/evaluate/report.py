"""The run report: one self-contained HTML page per pipeline run, logged to its MLflow run.

Sections (each a `<section id=...>`): data and reconciliation, validation (with links to Data
Docs), drift, features, models (metrics, slices, plots of both models), gate (rule table and
decision), deploy (what went live, or that nothing changed). Images are inlined as data URIs and
the style sheet is in the page, so the file can be mailed or attached as it is.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from components import tracking
from seqrank.paths import StatePaths
from seqrank.storage import write_json

log = logging.getLogger(__name__)

SECTIONS = ("data", "validation", "drift", "features", "models", "gate", "deploy")
STEPS_ARTIFACT = "pipeline/steps.json"
REPORT_ARTIFACT = "report"
PLOTS = {
    "learning_curve.png": "learning curve",
    "calibration.png": "calibration (test)",
    "auc_by_slice.png": "AUC by slice (test)",
}
METRICS = ("auc", "gauc", "logloss", "calibration", "n")

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1180px;
color:#1d2430;line-height:1.4}
h1{font-size:1.5em;margin-bottom:4px}h2{border-bottom:2px solid #dde3ea;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;margin:8px 0;font-size:.92em}th,td{border:1px solid #d5dbe3;padding:4px 8px;
text-align:left;vertical-align:top}th{background:#f2f5f8}td.num{text-align:right;font-variant-numeric:tabular-nums}
.pass{color:#137333;font-weight:600}.fail{color:#b3261e;font-weight:600}.skip{color:#6b7280}
.badge{display:inline-block;padding:3px 10px;border-radius:12px;color:#fff;font-weight:700}
.promote{background:#137333}.reject{background:#b3261e}.meta{color:#5f6b7a;font-size:.9em}
figure{display:inline-block;margin:6px 12px 6px 0}figure img{max-width:540px;border:1px solid #e3e7ec}
figcaption{font-size:.85em;color:#5f6b7a}code{background:#f2f5f8;padding:1px 4px;border-radius:3px}
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _num(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return _e("—" if value is None else value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "—"
        return f"{value:,.0f}" if value.is_integer() and abs(value) >= 100 else f"{value:.4f}"
    return _e(value)


def _table(header: list[str], rows: list[list[Any]], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes else ""
        cells = "".join(
            f'<td class="num">{_num(c)}</td>'
            if c is None or (isinstance(c, int | float) and not isinstance(c, bool))
            else f"<td>{c if isinstance(c, _Html) else _e(c)}</td>"
            for c in row
        )
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


class _Html(str):
    """Markup a table cell holds as it is (already escaped)."""


def _link(path: str | None, text: str) -> str:
    if not path:
        return _e("—")
    uri = Path(path).resolve().as_uri() if "://" not in path else path
    return f'<a href="{_e(uri)}">{_e(text)}</a>'


def _image(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (
        f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


# --- sections ------------------------------------------------------------------------------------


def _data(steps: dict[str, Any]) -> str:
    m = steps.get("ingest") or {}
    if not m:
        return "<p>No ingest summary.</p>"
    rejected = m.get("rejected") or {}
    total = sum(rejected.values())
    read, accepted, duplicates = m.get("read", 0), m.get("accepted", 0), m.get("duplicates", 0)
    balanced = read == accepted + total + duplicates
    rows = [
        ["read", read],
        ["accepted", accepted],
        ["rejected", total],
        *[[f"  rejected: {reason}", n] for reason, n in sorted(rejected.items())],
        ["duplicates", duplicates],
        ["examples", m.get("examples", "—")],
    ]
    for key in ("splits", "window"):
        if m.get(key):
            rows.append([key, json.dumps(m[key], sort_keys=True)])
    verdict = (
        f'<p class="pass">reconciled: read {read:,} = accepted + rejected + duplicates</p>'
        if balanced
        else f'<p class="fail">not reconciled: read {read:,} ≠ {accepted + total + duplicates:,}</p>'
    )
    cached = " (from kfp's cache)" if m.get("cached") else ""
    return (
        f"{verdict}{_table(['count', 'value'], rows)}"
        f"<p class='meta'>ingest output{cached}: <code>{_e(m.get('output', '—'))}</code></p>"
    )


def _validation(steps: dict[str, Any]) -> str:
    rows = []
    for step, label in (("validate", "ingest outputs"), ("validate_features", "feature tables")):
        v = steps.get(step)
        if not v:
            rows.append([label, _Html('<span class="skip">not run</span>'), "—", "—", "—"])
            continue
        ok = v.get("success", True)
        outcome = _Html(f'<span class="{"pass" if ok else "fail"}">{"passed" if ok else "failed"}</span>')
        failures = "; ".join(v.get("failures") or []) or "none"
        rows.append(
            [label, outcome, v.get("seconds", "—"), failures, _Html(_link(v.get("data_docs"), "Data Docs"))]
        )
    return _table(["suite", "outcome", "seconds", "failures", "details"], rows)


def _drift(steps: dict[str, Any]) -> str:
    v = steps.get("validate") or {}
    findings = v.get("drift") or []
    against = v.get("drift_against")
    if not against and not findings:
        return "<p>No accepted run to compare against yet: this run's profile becomes the reference.</p>"
    head = f"<p class='meta'>against the last accepted profile <code>{_e(against or '—')}</code></p>"
    if not findings:
        return head + '<p class="pass">no drift beyond the configured bounds</p>'
    return head + _table(["finding"], [[f] for f in findings])


def _features(steps: dict[str, Any]) -> str:
    f = steps.get("features") or {}
    if not f:
        return "<p>No features summary.</p>"
    rows = [[view, n] for view, n in sorted((f.get("rows") or {}).items())]
    meta = (
        f"<p class='meta'>staged store <code>{_e(f.get('feast_dir', '—'))}</code> (project "
        f"{_e(f.get('project', '—'))}, {_e(f.get('online_store', '—'))} online store); it goes live only "
        f"with a promoted model</p>"
    )
    return meta + _table(["feature view", "rows"], rows)


def _metrics_rows(gate: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    ch = gate.get("challenger_scores") or {"metrics": gate.get("challenger_metrics") or {}, "slices": {}}
    cp = gate.get("champion_scores")
    header = ["metric", f"challenger ({gate.get('challenger_model') or '?'})"]
    if cp:
        header += [f"champion v{gate.get('champion_version')} ({gate.get('champion_model') or '?'})", "Δ"]
    rows = []

    def add(label: str, new: Any, old: Any) -> None:
        row = [label, new]
        if cp:
            delta = new - old if isinstance(new, float) and isinstance(old, float) else "—"
            row += [old, f"{delta:+.4f}" if isinstance(delta, float) and math.isfinite(delta) else "—"]
        rows.append(row)

    for k in METRICS:
        add(f"test {k}", ch["metrics"].get(k), (cp or {}).get("metrics", {}).get(k))
    for k in ("latency_p50_ms", "latency_p99_ms"):
        add(k.replace("_", " "), ch.get(k), (cp or {}).get(k))
    for name in sorted(ch.get("slices") or {}):
        for k in ("auc", "gauc", "n"):
            add(
                f"{name} {k}",
                ch["slices"][name].get(k),
                ((cp or {}).get("slices") or {}).get(name, {}).get(k),
            )
    return header, rows


def _models(gate: dict[str, Any], plots: dict[str, list[Path]]) -> str:
    if not gate:
        return "<p>No model was scored.</p>"
    header, rows = _metrics_rows(gate)
    parts = [_table(header, rows)]
    for role, files in plots.items():
        if files:
            parts.append(f"<h3>{_e(role)}</h3>")
            parts += [_image(p, PLOTS.get(p.name, p.stem)) for p in files]
    return "".join(parts)


def gate_rows(gate: dict[str, Any]) -> list[list[Any]]:
    """The gate table: rule, challenger, champion, allowance, verdict, detail."""
    return [
        [
            r["rule"],
            r.get("challenger"),
            r.get("champion"),
            r.get("limit", ""),
            r["verdict"],
            r.get("detail", ""),
        ]
        for r in gate.get("rules") or []
    ]


def _gate(gate: dict[str, Any]) -> str:
    if not gate:
        return "<p>The gate did not run.</p>"
    decision = "promote" if gate.get("promote") else "reject"
    rows = gate_rows(gate)
    for row in rows:
        row[4] = _Html(f'<span class="{_e(row[4])}">{_e(row[4])}</span>')
    head = f'<p><span class="badge {decision}">{decision.upper()}</span> {_e(gate.get("reason", ""))}</p>'
    champion = (
        f"against champion version {_e(gate['champion_version'])} (run {_e(gate.get('champion_run_id'))})"
        if gate.get("champion_version")
        else "no champion yet"
    )
    if gate.get("cannot_compare"):
        champion += f"; cannot compare: {_e(gate['cannot_compare'])}"
    return (
        head
        + f"<p class='meta'>{champion}</p>"
        + _table(["rule", "challenger", "champion", "allowed", "verdict", "detail"], rows)
    )


def _deploy(steps: dict[str, Any]) -> str:
    d = steps.get("deploy")
    gate = steps.get("gate") or {}
    if not d:
        live = steps.get("live") or {}
        return (
            "<p>Nothing deployed: the live model and the live feature store are as they were"
            + (f" (<code>{_e(live.get('model_version'))}</code>)" if live.get("model_version") else "")
            + ".</p>"
            if gate
            else "<p>The run stopped before the gate.</p>"
        )
    rows = [
        ["model version", d.get("model_version")],
        ["replaces (alias previous)", d.get("previous") or "—"],
        ["release", _Html(f"<code>{_e(d.get('release', '—'))}</code>")],
        [
            "feature store",
            _Html(
                f"<code>{_e((d.get('feature_store') or {}).get('feast_dir', d.get('feast_dir', '—')))}</code>"
            ),
        ],
        [
            "feature service",
            (d.get("feature_store") or {}).get("feature_service", d.get("feature_service", "—")),
        ],
        ["exported at", d.get("exported_at", "—")],
    ]
    for r in d.get("reload") or []:
        rows.append(
            [f"reload {r['url']}", f"{r['status']}: {json.dumps(r.get('detail'), default=str)[:200]}"]
        )
    return _table(["what", "value"], rows)


def render(steps: dict[str, Any], run: dict[str, Any], plots: dict[str, list[Path]]) -> str:
    """The whole page for one run's step summaries, its MLflow run info, and plot files per model."""
    gate = steps.get("gate") or {}
    decision = ("promote" if gate.get("promote") else "reject") if gate else "no gate"
    bodies = {
        "data": _data(steps),
        "validation": _validation(steps),
        "drift": _drift(steps),
        "features": _features(steps),
        "models": _models(gate, plots),
        "gate": _gate(gate),
        "deploy": _deploy(steps),
    }
    titles = {
        "data": "Data and reconciliation",
        "validation": "Validation",
        "drift": "Drift",
        "features": "Features",
        "models": "Models",
        "gate": "Gate",
        "deploy": "Deploy",
    }
    sections = "".join(f'<section id="{s}"><h2>{titles[s]}</h2>{bodies[s]}</section>' for s in SECTIONS)
    title = f"seqrank run {run.get('pipeline_run') or run.get('run_name') or run.get('run_id')}"
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{_e(title)} <span class='badge {'promote' if decision == 'promote' else 'reject'}'>"
        f"{_e(decision.upper())}</span></h1>"
        f"<p class='meta'>MLflow run <code>{_e(run.get('run_id'))}</code> ({_e(run.get('run_name'))}) in "
        f"experiment {_e(run.get('experiment'))}; model {_e(run.get('model_name'))}; data "
        f"<code>{_e(run.get('data_fingerprint', '')[:12])}</code>; written "
        f"{_e(time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime()))}</p>"
        f"{sections}</body></html>"
    )


def _plots(client: Any, run_id: str | None, into: Path) -> list[Path]:
    if not run_id:
        return []
    names = {a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(run_id, "plots")}
    files = []
    for name in PLOTS:
        if name in names:
            files.append(Path(client.download_artifacts(run_id, f"plots/{name}", str(into))))
    return files


def write(paths: StatePaths, run_id: str, steps: dict[str, Any] | None = None) -> Path:
    """Write the report of MLflow run `run_id` (the train step's) under the state dir's reports/ and
    log it, with the step summaries, to the run. `steps` defaults to the summaries logged earlier."""
    client = tracking.client(paths)
    run = client.get_run(run_id)
    with tempfile.TemporaryDirectory(prefix="seqrank-report-") as tmp:
        work = Path(tmp)
        if steps is None:
            steps = json.loads(Path(client.download_artifacts(run_id, STEPS_ARTIFACT, tmp)).read_text())
        else:
            write_json(work / "steps.json", steps)
            client.log_artifact(run_id, str(work / "steps.json"), STEPS_ARTIFACT.rsplit("/", 1)[0])
        gate = steps.get("gate") or {}
        plots = {
            f"challenger ({gate.get('challenger_model') or run.data.tags.get('model_name')})": _plots(
                client, run_id, work / "challenger"
            )
        }
        if gate.get("champion_run_id"):
            plots[f"champion v{gate['champion_version']} ({gate.get('champion_model')})"] = _plots(
                client, gate["champion_run_id"], work / "champion"
            )
        experiment = client.get_experiment(run.info.experiment_id)
        info = {
            "run_id": run_id,
            "run_name": run.info.run_name,
            "experiment": experiment.name if experiment else run.info.experiment_id,
            "pipeline_run": run.data.tags.get("pipeline_run", ""),
            "model_name": run.data.tags.get("model_name", ""),
            "data_fingerprint": run.data.tags.get("data_manifest_sha256", ""),
        }
        page = render(steps, info, plots)
    paths.reports.mkdir(parents=True, exist_ok=True)
    target = paths.reports / f"{info['pipeline_run'] or run_id}.html"
    target.write_text(page)
    client.log_artifact(run_id, str(target), REPORT_ARTIFACT)
    log.info("run report: %s", target)
    return target
