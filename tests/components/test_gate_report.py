"""The gate step on real models and MLflow runs, and the run report it feeds (parsed, and rendered
in headless Chromium when the Debian package is installed)."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from seqrank.config import PipelineConfig, from_dict
from seqrank.paths import StatePaths
from tests.helpers.feature_store import CFG, make_ingest_dir
from tests.helpers.synthetic import write_training_ingest

MODEL = "seqrank-ranker"
HPARAMS = {"embedding_dim": 8, "seq_len": 20, "attention_hidden": [32, 16], "mlp_hidden": [32, 16]}


def _config(root: Path, **gate: Any) -> PipelineConfig:
    return from_dict(
        {
            "state_dir": str(root),
            "features": {"project": CFG.project},
            "model": {"name": "din", **HPARAMS},
            "train": {"epochs": 6, "batch_size": 128, "device": "cpu", "lr": 5e-3, "patience": 2, "seed": 0},
            # Slices of this small test split hold a few hundred impressions: judge them anyway.
            "gate": {"latency_requests": 20, "min_slice_examples": 50, "max_slice_drop": 0.05, **gate},
        }
    )


def _untrained_run(paths: StatePaths, data_dir: Path, work: Path) -> str:
    """An MLflow run holding a DIN at its initialization: the model any trained one must beat."""
    import torch

    from components import tracking
    from training.ingest_data import load_ingest
    from training.models import ModelSpec, build_model, save_model

    torch.manual_seed(0)
    sizes = load_ingest(data_dir).vocab_sizes
    save_model(build_model(ModelSpec("din", dict(HPARAMS), dict(sizes))), work / "untrained")
    client = tracking.client(paths)
    run = client.create_run(
        tracking.experiment_id(paths, "seqrank"), tags={"seqrank.step": "train", "model_name": "din"}
    )
    client.log_artifacts(run.info.run_id, str(work / "untrained"), artifact_path="model")
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def _deploy(data_dir: Path, run_id: str, cfg: PipelineConfig, decision: dict[str, Any]) -> dict[str, Any]:
    from components.deploy import export, releases

    feast_dir, _ = releases.stage_store(cfg)
    shutil.rmtree(feast_dir)
    shutil.copytree(_STORE["feast"], feast_dir)  # any real store: the gate reads no features
    store = {"feast_dir": str(feast_dir), "project": CFG.project, "online_store": "sqlite"}
    return export.run(data_dir, run_id, cfg, decision, store=store)


_STORE: dict[str, Path] = {}


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Gate decisions on one state dir: first model (with and without a floor), better, worse,
    equal, and a champion whose vocab was renumbered (reject, and promote on the floor)."""
    from components import features, train
    from components.evaluate import gate

    root = tmp_path_factory.mktemp("gate")
    data = write_training_ingest(root / "ingest")
    ids = make_ingest_dir(root / "feature-ingest")
    features.run(ids, root / "feast", CFG)
    _STORE["feast"] = root / "feast"
    cfg = _config(root / "state")
    paths = StatePaths.of(cfg)
    untrained = _untrained_run(paths, data, root)
    out: dict[str, Any] = {"cfg": cfg, "paths": paths, "data": data}

    out["first_floor"] = gate.run(data, untrained, _config(root / "state", floor=0.6))
    out["first_no_floor"] = gate.run(data, untrained, _config(root / "state", floor=0.0))
    _deploy(data, untrained, cfg, out["first_no_floor"])
    trained = train.run(data, cfg, tags={"pipeline_run": "p-test"})["run_id"]
    out["better"] = gate.run(data, trained, cfg)
    out["trained_run"] = trained
    out["deploy"] = _deploy(data, trained, cfg, out["better"])
    out["worse"] = gate.run(data, untrained, cfg)
    out["equal"] = gate.run(data, trained, cfg)

    # Renumber the champion's item vocab: its ids no longer mean today's items.
    vocab = paths.champion_bundle / "vocab" / "item.parquet"
    table = pq.read_table(vocab)
    pq.write_table(
        table.set_column(0, "raw", pa.array(list(reversed(table.column("raw").to_pylist())))), vocab
    )
    out["incompatible"] = gate.run(data, untrained, cfg)
    out["incompatible_floor"] = gate.run(
        data, untrained, _config(root / "state", on_incompatible="floor", floor=0.0)
    )
    return out


def _verdicts(decision: dict[str, Any]) -> dict[str, str]:
    return {r["rule"]: r["verdict"] for r in decision["rules"]}


def test_first_model_against_the_floor(gated) -> None:
    assert not gated["first_floor"]["promote"]
    assert _verdicts(gated["first_floor"])["floor"] == "fail"
    assert gated["first_no_floor"]["promote"], gated["first_no_floor"]["reason"]
    assert gated["first_no_floor"]["champion_version"] is None


def test_better_challenger_promoted_worse_and_equal_not(gated) -> None:
    better = gated["better"]
    assert better["promote"], better["reason"]
    assert (
        better["champion_version"] == "1"
        and better["challenger_metrics"]["auc"] > better["champion_metrics"]["auc"]
    )
    assert {"auc_gain", "gauc", "logloss", "calibration_error", "latency_p99_ms"} <= set(_verdicts(better))
    assert any(rule.startswith("slice_") for rule in _verdicts(better))
    for case in ("worse", "equal"):
        decision = gated[case]
        assert not decision["promote"], case
        assert _verdicts(decision)["auc_gain"] == "fail", case
    assert gated["equal"]["challenger"] == pytest.approx(gated["equal"]["champion"], abs=1e-9)


def test_incompatible_champion_is_a_verdict_not_a_crash(gated) -> None:
    rejected, on_floor = gated["incompatible"], gated["incompatible_floor"]
    assert not rejected["promote"]
    assert "cannot compare" in rejected["reason"] and "no prefix" in rejected["reason"]
    assert _verdicts(rejected)["champion"] == "fail"
    assert on_floor["promote"] and _verdicts(on_floor)["champion"] == "skip"


def test_every_rule_and_both_models_are_on_the_mlflow_run(gated) -> None:
    from components import tracking
    from components.evaluate.gate import COMPARISON_ARTIFACT

    client = tracking.client(gated["paths"])
    run = client.get_run(gated["trained_run"])
    tags, metrics = run.data.tags, run.data.metrics
    # The run was gated last against itself as champion (the "equal" case): that verdict is recorded.
    last = gated["equal"]
    assert tags["gate_decision"] == "reject" and tags["gate_reason"] == last["reason"]
    for rule in last["rules"]:
        assert tags[f"gate_rule.{rule['rule']}"].startswith(rule["verdict"])
    assert {"gate_challenger_auc", "gate_champion_auc", "gate_challenger_latency_p99_ms"} <= set(metrics)
    table = json.loads(Path(client.download_artifacts(run.info.run_id, COMPARISON_ARTIFACT)).read_text())
    assert [row[0] for row in table["data"]] == [rule["rule"] for rule in last["rules"]]


class _Sections(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.images = 0
        self.gate_rows = 0
        self._in_gate = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "section":
            self.sections.append(str(values.get("id")))
            self._in_gate = values.get("id") == "gate"
        if tag == "img" and str(values.get("src", "")).startswith("data:image/png;base64,"):
            self.images += 1
        if tag == "tr" and self._in_gate:
            self.gate_rows += 1


@pytest.fixture(scope="module")
def report(gated, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from components.evaluate import report as run_report

    steps = {
        "ingest": {"read": 10, "accepted": 8, "rejected": {"bad_ts": 1}, "duplicates": 1, "examples": 8},
        "validate": {
            "success": True,
            "seconds": 0.1,
            "data_docs": str(gated["data"] / "docs.html"),
            "drift": [],
        },
        "validate_features": {"success": True, "seconds": 0.1, "data_docs": None},
        "features": {"feast_dir": "feast_versions/s1", "project": CFG.project, "rows": {"user_behavior": 3}},
        "gate": gated["better"],
        "deploy": gated["deploy"],
    }
    return run_report.write(gated["paths"], gated["trained_run"], steps)


def test_report_has_every_section_and_is_logged(gated, report: Path) -> None:
    from components import tracking
    from components.evaluate.report import SECTIONS

    parser = _Sections()
    parser.feed(report.read_text())
    assert parser.sections == list(SECTIONS)
    assert parser.images == 3  # the challenger's plots, inlined (this champion was logged without any)
    assert parser.gate_rows == len(gated["better"]["rules"]) + 1  # and the header
    text = report.read_text()
    assert "reconciled" in text and gated["deploy"]["model_version"] in text
    client = tracking.client(gated["paths"])
    logged = {a.path for a in client.list_artifacts(gated["trained_run"], "report")}
    assert f"report/{report.name}" in logged
    # `seqrank report RUN` rebuilds the page from what the run holds.
    from components.evaluate import report as run_report

    again = run_report.write(gated["paths"], gated["trained_run"])
    parser = _Sections()
    parser.feed(again.read_text())
    assert parser.sections == list(SECTIONS)


@pytest.mark.browser
def test_report_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("no chromium installed (apt-get install -y chromium)")
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", report.as_uri()],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    for section in ("data", "validation", "drift", "features", "models", "gate", "deploy"):
        assert f'<section id="{section}">' in dom
    shot = tmp_path / "report.png"
    subprocess.run(
        [chromium, *flags, f"--screenshot={shot}", "--window-size=1280,2400", report.as_uri()],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
