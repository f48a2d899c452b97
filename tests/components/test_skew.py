"""Skew audit: the service's sampled request log replayed against the offline behaviors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.validate.skew import audit
from tests.helpers.feature_store import CFG, LONG_USER
from tests.helpers.serving import SERVE_CFG, raw_ids

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
