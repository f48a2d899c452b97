"""Skew audit: the service's sampled request log replayed against the offline behaviors, and each
feature's served distribution against the training examples'."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from components.validate.skew import audit
from seqrank.config import ValidateConfig
from tests.helpers.feature_store import CFG, LONG_USER
from tests.helpers.serving import SERVE_CFG, raw_ids
from tests.helpers.validation import ingested_world

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")


@pytest.fixture(scope="module")
def request_log(serving_env) -> Path:
    from fastapi.testclient import TestClient

    from serving.app import create_app

    log_dir = serving_env["root"] / "requests"
    items = list(raw_ids(serving_env["ingest"], "item").values())[:10]
    users = raw_ids(serving_env["ingest"], "user")
    logged = SERVE_CFG.model_copy(update={"request_log_sample": 1.0})
    with TestClient(
        create_app(serving_env["bundle"], serving_env["feast"], logged, request_log_dir=log_dir)
    ) as client:
        for user in (users[LONG_USER], users[1], users[2], "never-seen-user"):
            assert client.post("/rank", json={"user_id": user, "candidates": items}).status_code == 200
    return log_dir


def _lines(log_dir: Path) -> list[dict]:
    return [
        json.loads(line) for path in sorted(log_dir.glob("*.jsonl")) for line in path.read_text().splitlines()
    ]


def test_every_sampled_request_is_logged_with_its_features(request_log: Path) -> None:
    lines = _lines(request_log)
    assert len(lines) == 4
    long_user = lines[0]
    assert len(long_user["features"]["seq_item"]) == long_user["seq_len"]
    assert set(long_user["category_features"]) == {"cat_seq_item", "cat_seq_ts"}


def test_consistent_store_has_no_skew(serving_env, request_log: Path) -> None:
    report = audit(request_log, serving_env["ingest"], CFG.category_k)
    assert report["requests"] == 4
    assert all(rate == 0.0 for rate in report["mismatch_rate"].values()), report
    # This store's ingest output holds no examples: no training distribution to compare with.
    assert report["distribution"]["features"] == {} and report["failures"] == []


def test_planted_mismatch_is_found_and_named(serving_env, request_log: Path, tmp_path: Path) -> None:
    lines = _lines(request_log)
    lines[0]["features"]["seq_item"][-1] += 1  # the service read a wrong latest item
    lines[0]["category_features"]["cat_seq_ts"] = lines[0]["category_features"]["cat_seq_ts"][:-1]
    planted = tmp_path / "planted"
    planted.mkdir()
    (planted / "requests-20260101.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    report = audit(planted, serving_env["ingest"], CFG.category_k)
    assert report["mismatches"] == {
        "seq_item": 1,
        "seq_category": 0,
        "seq_ts": 0,
        "cat_seq_item": 0,
        "cat_seq_ts": 1,
    }
    assert report["mismatch_rate"]["seq_item"] == 0.25
    assert {e["feature"] for e in report["examples"]} == {"seq_item", "cat_seq_ts"}


# ---- distributions: training examples vs served requests ------------------------------------------

SKEW_CFG = ValidateConfig()
SERVED = 400  # sampled requests, well over skew_min_requests
SEQ_LEN, CATEGORY_K = 50, 20
WEEK_MS = 7 * 86_400_000


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ingested_world(tmp_path_factory.mktemp("skew-world"))


def _served_log(ingest: Path, out: Path, n: int, plant: Callable[[dict], None] | None = None) -> Path:
    """Requests as a service over a consistent store logs them, at `n` sampled training impressions."""
    examples = pq.read_table(ingest / "examples", columns=["user", "category", "ts", "hist_end", "split"])
    examples = examples.filter(pc.equal(examples.column("split"), "train")).to_pylist()
    history = {row["user"]: row for row in pq.read_table(ingest / "behaviors").to_pylist()}
    users = raw_ids(ingest, "user")
    lines = []
    for k in np.random.default_rng(0).choice(len(examples), n, replace=False):
        ex = examples[k]
        row = history.get(ex["user"], {"item": [], "category": [], "ts": []})
        before = {col: row[col][: ex["hist_end"]] for col in ("item", "category", "ts")}
        in_category = [i for i, c in enumerate(before["category"]) if c == ex["category"]][-CATEGORY_K:]
        line = {
            "ts": ex["ts"],
            "user_id": users[ex["user"]],
            "user": ex["user"],
            "model_version": "seqrank-ranker/1",
            "seq_len": SEQ_LEN,
            "features": {f"seq_{col}": values[-SEQ_LEN:] for col, values in before.items()},
            "category": ex["category"],
            "category_features": {
                "cat_seq_item": [before["item"][i] for i in in_category],
                "cat_seq_ts": [before["ts"][i] for i in in_category],
            },
        }
        if plant is not None:
            plant(line)
        lines.append(json.dumps(line) + "\n")
    out.mkdir(parents=True, exist_ok=True)
    (out / "requests-20260110.jsonl").write_text("".join(lines))
    return out


def test_served_like_training_shows_no_distribution_skew(world: Path, tmp_path: Path) -> None:
    report = audit(_served_log(world, tmp_path / "log", SERVED), world, CATEGORY_K, validate_cfg=SKEW_CFG)
    assert all(count == 0 for count in report["mismatches"].values()), report["mismatches"]
    distribution = report["distribution"]
    assert distribution["judged"] and distribution["seq_len"] == SEQ_LEN
    assert set(distribution["features"]) == {
        "seq_item",
        "seq_category",
        "history_length",
        "last_behavior_age_hours",
    }
    for name, feature in distribution["features"].items():
        assert feature["distance"] < feature["threshold"], (name, feature)
    assert report["failures"] == []


def _one_category(line: dict) -> None:
    line["features"]["seq_category"] = [1] * len(line["features"]["seq_category"])


def _short_history(line: dict) -> None:
    line["features"] = {name: values[-3:] for name, values in line["features"].items()}


def _week_stale_store(line: dict) -> None:
    line["ts"] += WEEK_MS  # scored a week later, on a store no behavior reached since


@pytest.mark.parametrize(
    ("plant", "feature", "check", "bound"),
    [
        (_one_category, "seq_category", "linf_distance", SKEW_CFG.skew_max_linf),
        (_short_history, "history_length", "js_divergence", SKEW_CFG.skew_max_js),
        (_week_stale_store, "last_behavior_age_hours", "js_divergence", SKEW_CFG.skew_max_js),
    ],
)
def test_planted_distribution_skew_is_named(
    world: Path, tmp_path: Path, plant: Callable[[dict], None], feature: str, check: str, bound: float
) -> None:
    report = audit(
        _served_log(world, tmp_path / "log", SERVED, plant), world, CATEGORY_K, validate_cfg=SKEW_CFG
    )
    distance = report["distribution"]["features"][feature]["distance"]
    assert distance > bound
    # Only the planted feature: the others kept their training distribution.
    assert report["failures"] == [
        f"[skew] {check} on column '{feature}': observed {round(distance, 4)}, bound max_value={bound}"
    ]


def test_few_requests_are_measured_but_not_judged(world: Path, tmp_path: Path) -> None:
    log_dir = _served_log(world, tmp_path / "log", 20, _one_category)
    report = audit(log_dir, world, CATEGORY_K, validate_cfg=SKEW_CFG)
    assert not report["distribution"]["judged"]
    assert report["distribution"]["features"]["seq_category"]["distance"] > SKEW_CFG.skew_max_linf
    assert report["failures"] == []


def test_cli_exits_non_zero_on_distribution_skew(world: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from seqrank.cli import main

    args = ["audit", "skew", "--data", str(world), "--set", f"state_dir={tmp_path / 'state'}"]
    args += ["--set", f"features.category_k={CATEGORY_K}"]
    clean = CliRunner().invoke(main, [*args, "--log", str(_served_log(world, tmp_path / "clean", SERVED))])
    assert clean.exit_code == 0, clean.output
    planted = _served_log(world, tmp_path / "planted", SERVED, _one_category)
    skewed = CliRunner().invoke(main, [*args, "--log", str(planted)])
    assert skewed.exit_code != 0
    assert "[skew] linf_distance on column 'seq_category'" in skewed.output
