"""Ranking service: batch building, /rank, request limits, admin reload, and a real uvicorn server."""

from __future__ import annotations

import shutil
import socket
import threading
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from seqrank.config import ServeConfig
from tests.helpers.feature_store import (
    EMPTY_USER,
    LONG_USER,
    N_ITEMS,
    N_USERS,
    expected_tail,
)
from tests.helpers.serving import SEQ_LEN, SERVE_CFG, TOKEN, raw_ids, write_bundle

# fastapi.testclient warns that starlette will move to httpx2; nothing to act on in these tests.
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")


@pytest.fixture(scope="module")
def client(serving_env):
    from fastapi.testclient import TestClient

    from serving.app import create_app

    with TestClient(create_app(serving_env["bundle"], serving_env["feast"], SERVE_CFG)) as test_client:
        yield test_client


def test_batch_follows_the_model_convention(serving_env):
    from serving.bundle import load_bundle
    from serving.features import OnlineFeatures
    from serving.ranking import build_batch

    bundle = load_bundle(serving_env["bundle"])
    online = OnlineFeatures(serving_env["feast"])
    users, items = raw_ids(serving_env["ingest"], "user"), raw_ids(serving_env["ingest"], "item")
    item_table = pq.read_table(serving_env["ingest"] / "items").to_pylist()
    category_of = {row["item"]: row["category"] for row in item_table}

    candidates = [items[3], "never-seen-item", items[N_ITEMS]]
    sequence = online.user_sequence(LONG_USER)
    batch = build_batch(bundle, users[LONG_USER], candidates, sequence, now_ms=1_800_000_000_000)
    assert batch["user"].tolist() == [LONG_USER] * 3
    assert batch["item"].tolist() == [3, 0, N_ITEMS]
    assert batch["category"].tolist() == [category_of[3], 0, category_of[N_ITEMS]]
    assert batch["ts"].tolist() == [1_800_000_000_000] * 3
    tail = expected_tail(serving_env["ingest"], LONG_USER, SEQ_LEN)
    for key in ("item", "category", "ts"):
        assert batch[f"hist_{key}"].shape == (3, SEQ_LEN)
        assert batch[f"hist_{key}"].dtype == torch.int64
        for row in batch[f"hist_{key}"]:
            np.testing.assert_array_equal(row.numpy(), tail[f"seq_{key}"])

    # A short history is right-aligned, PAD on the left; an unknown user has no history at all.
    short_user = next(
        u
        for u in range(3, N_USERS + 1)
        if len(expected_tail(serving_env["ingest"], u, SEQ_LEN)["seq_item"]) < SEQ_LEN
    )
    short = expected_tail(serving_env["ingest"], short_user, SEQ_LEN)["seq_item"]
    batch = build_batch(bundle, users[short_user], candidates, online.user_sequence(short_user), 0)
    row = batch["hist_item"][0].numpy()
    assert (row[: SEQ_LEN - len(short)] == 0).all()
    np.testing.assert_array_equal(row[SEQ_LEN - len(short) :], short)
    batch = build_batch(bundle, "nobody", candidates, online.user_sequence(0), 0)
    assert batch["user"].tolist() == [0] * 3 and int(batch["hist_item"].abs().sum()) == 0


def test_rank_scores_every_candidate_sorted(serving_env, client, monkeypatch):
    from serving.bundle import load_bundle
    from serving.features import OnlineFeatures
    from serving.ranking import build_batch

    now_ms = 1_800_000_000_000
    monkeypatch.setattr(client.app.state.service, "now_ms", lambda: now_ms)
    users, items = raw_ids(serving_env["ingest"], "user"), raw_ids(serving_env["ingest"], "item")
    candidates = [items[i] for i in range(1, 21)]
    response = client.post("/rank", json={"user_id": users[LONG_USER], "candidates": candidates})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user_id"] == users[LONG_USER]
    assert body["model_version"] == "seqrank-ranker/1"
    assert sorted(i["item_id"] for i in body["items"]) == sorted(candidates)
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 < s < 1.0 for s in scores)

    # The same numbers as the model gives on the batch built outside the service.
    bundle = load_bundle(serving_env["bundle"])
    sequence = OnlineFeatures(serving_env["feast"]).user_sequence(LONG_USER)
    batch = build_batch(bundle, users[LONG_USER], candidates, sequence, now_ms)
    with torch.inference_mode():
        expected = torch.sigmoid(bundle.model({k: v.contiguous() for k, v in batch.items()})).numpy()
    served = {i["item_id"]: i["score"] for i in body["items"]}
    np.testing.assert_allclose([served[c] for c in candidates], expected, rtol=1e-5)


@pytest.mark.parametrize("user_id", ["nobody", "u-new-42"])
def test_unknown_user_and_items_get_defaults(serving_env, client, user_id):
    items = raw_ids(serving_env["ingest"], "item")
    candidates = ["brand-new-item", items[1], "another-new-one"]
    response = client.post("/rank", json={"user_id": user_id, "candidates": candidates})
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["items"]) == 3
    scores = {i["item_id"]: i["score"] for i in body["items"]}
    # Two unknown items map to the same (PAD) index, so the model cannot tell them apart.
    assert scores["brand-new-item"] == pytest.approx(scores["another-new-one"])


def test_user_without_behaviors_is_served(serving_env, client):
    users, items = raw_ids(serving_env["ingest"], "user"), raw_ids(serving_env["ingest"], "item")
    response = client.post("/rank", json={"user_id": users[EMPTY_USER], "candidates": [items[1], items[2]]})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        ({"candidates": ["i1"]}, 422),  # missing user_id
        ({"user_id": "u1"}, 422),  # missing candidates
        ({"user_id": True, "candidates": ["i1"]}, 422),  # wrong type (ints are ids, booleans not)
        ({"user_id": "u1", "candidates": "i1"}, 422),  # a string, not a list
        ({"user_id": "u1", "candidates": [1.5, 2]}, 422),
        ({"user_id": "u1", "candidates": []}, 422),
        ({"user_id": "", "candidates": ["i1"]}, 422),
        ({"user_id": "u1", "candidates": ["i1"], "extra": 1}, 422),
        ({"user_id": "u1", "candidates": [f"i{i}" for i in range(SERVE_CFG.max_candidates + 1)]}, 413),
    ],
)
def test_malformed_requests_get_4xx_with_message(client, payload, status):
    response = client.post("/rank", json=payload)
    assert response.status_code == status, response.text
    assert response.json()["detail"]


def test_invalid_json_is_422(client):
    response = client.post("/rank", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"]


def test_oversized_body_is_413(client):
    big = {"user_id": "u1", "candidates": ["x" * 100] * 45}  # few candidates, many bytes
    response = client.post("/rank", json=big)
    assert response.status_code == 413
    assert "bytes" in response.json()["detail"]

    # Without Content-Length (chunked upload) the bytes are counted as they arrive.
    def chunks():
        yield b'{"user_id": "u1", "candidates": ['
        for _ in range(60):
            yield b'"' + b"y" * 100 + b'",'
        yield b'"z"]}'

    response = client.post("/rank", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_healthz(client):
    body = client.get("/healthz").json()
    assert body["loaded"] is True
    assert body["model_version"] == "seqrank-ranker/1"


def test_admin_is_disabled_without_token(client, monkeypatch):
    monkeypatch.delenv("SEQRANK_ADMIN_TOKEN", raising=False)
    response = client.post("/admin/reload", headers={"X-Admin-Token": "anything"})
    assert response.status_code == 403
    assert "disabled" in response.json()["detail"]


def test_admin_reload_needs_token_and_keeps_last_good_model(serving_env, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from serving.app import create_app

    bundle_dir = tmp_path / "champion"
    shutil.copytree(serving_env["bundle"], bundle_dir)
    monkeypatch.setenv("SEQRANK_ADMIN_TOKEN", TOKEN)
    items = raw_ids(serving_env["ingest"], "item")
    request = {"user_id": "u1", "candidates": [items[1], items[2], items[3]]}

    with TestClient(create_app(bundle_dir, serving_env["feast"], SERVE_CFG)) as client:
        assert client.post("/admin/reload").status_code == 403
        assert client.post("/admin/reload", headers={"X-Admin-Token": "wrong"}).status_code == 403
        before = client.post("/rank", json=request).json()

        # A broken deployment: weights that do not parse. The old model keeps serving.
        (bundle_dir / "model" / "model.safetensors").write_bytes(b"not safetensors")
        response = client.post("/admin/reload", headers={"X-Admin-Token": TOKEN})
        assert response.status_code == 500
        assert response.json()["reloaded"] is False and response.json()["error"]
        assert response.json()["model_version"] == "seqrank-ranker/1"
        after_failure = client.post("/rank", json=request).json()
        assert after_failure["items"] == before["items"]
        assert after_failure["model_version"] == before["model_version"]
        metrics = client.get("/metrics").text
        assert 'seqrank_reloads_total{result="failed"} 1.0' in metrics
        assert 'seqrank_model_info{model="din",model_version="seqrank-ranker/1"} 1.0' in metrics
        assert client.get("/healthz").json()["last_reload_error"]

        # A good new bundle (another model family, another version) replaces it.
        shutil.rmtree(bundle_dir)
        write_bundle(bundle_dir, serving_env["ingest"], tmp_path, "emb_mlp", "seqrank-ranker/2", seed=1)
        response = client.post("/admin/reload", headers={"X-Admin-Token": TOKEN})
        assert response.status_code == 200, response.text
        assert response.json() == {
            "reloaded": True,
            "previous": "seqrank-ranker/1",
            "model_version": "seqrank-ranker/2",
        }
        after = client.post("/rank", json=request).json()
        assert after["model_version"] == "seqrank-ranker/2"
        metrics = client.get("/metrics").text
        assert 'seqrank_model_info{model="emb_mlp",model_version="seqrank-ranker/2"} 1.0' in metrics
        assert "seqrank-ranker/1" not in metrics
        assert client.get("/healthz").json()["last_reload_error"] is None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_real_uvicorn_server(serving_env):
    import httpx

    from serving.app import make_server

    cfg = ServeConfig(port=_free_port(), max_candidates=50, max_body_bytes=4_000)
    assert cfg.host == "127.0.0.1"
    threads = torch.get_num_threads()  # make_server sets it process-wide; later tests keep theirs
    server = make_server(serving_env["bundle"], serving_env["feast"], cfg)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        items = raw_ids(serving_env["ingest"], "item")
        base = f"http://127.0.0.1:{cfg.port}"
        with httpx.Client(base_url=base, timeout=10) as http:
            # The bundle loads in the background: alive at once, ready once it is in.
            assert http.get("/healthz").status_code == 200
            while http.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline, "service did not become ready"
                time.sleep(0.05)
            assert http.get("/healthz").json()["loaded"] is True
            response = http.post("/rank", json={"user_id": "u1", "candidates": [items[1], items[2]]})
            assert response.status_code == 200
            assert len(response.json()["items"]) == 2
            assert http.post("/rank", json={"user_id": "u1"}).status_code == 422
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        torch.set_num_threads(threads)
    assert not thread.is_alive()
