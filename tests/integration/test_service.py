"""The ranking service as deployed: `seqrank serve` (uvicorn) in a subprocess over a real Feast
SQLite store and real bundles, exercised over HTTP."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from tests.helpers.feature_store import CFG, LONG_USER, N_ITEMS, N_USERS, make_ingest_dir
from tests.helpers.serving import HPARAMS, VOCAB_SIZES, raw_ids, read_behaviors, service_process

pytestmark = pytest.mark.slow

NOW_MS = 1_800_000_000_000  # after every behavior of the fixture
# SIM with K and L as large as the store keeps, so service and training read the same behaviors.
MODELS = {
    "din": {**HPARAMS, "seq_len": CFG.max_sequence_length},
    "sim": {
        **HPARAMS,
        "seq_len": CFG.max_sequence_length,
        "search_k": CFG.category_k,
        "heads": 2,
    },
}


def _bundle(target: Path, ingest_dir: Path, work: Path, name: str) -> Path:
    from components.deploy.export import export_bundle
    from training.models import ModelSpec, build_model, save_model

    torch.manual_seed(0)
    model = build_model(ModelSpec(name, dict(MODELS[name]), dict(VOCAB_SIZES)))
    # Spread the embeddings (initialized at std 1e-2) so the scores differ enough to make the
    # order meaningful.
    with torch.no_grad():
        for name_, parameter in model.named_parameters():
            if "table" in name_:
                parameter.mul_(30.0)
    save_model(model, work / f"model-{name}")
    export_bundle(
        ingest_dir,
        work / f"model-{name}",
        target,
        {"model_version": f"{name}/7", "run_id": "r7", "metrics": {}},
    )
    return target


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from components import features

    root = tmp_path_factory.mktemp("service")
    ingest_dir = make_ingest_dir(root / "ingest")
    features.run(ingest_dir, root / "feast", CFG)
    return {
        "root": root,
        "ingest": ingest_dir,
        "feast": root / "feast",
        "din": _bundle(root / "bundle-din", ingest_dir, root, "din"),
        "sim": _bundle(root / "bundle-sim", ingest_dir, root, "sim"),
    }


@pytest.fixture(scope="module")
def din_service(env):
    with service_process(env["din"], env["feast"], env["root"] / "state-din") as base:
        yield base


def _offline_scores(env: dict[str, Path], name: str, user: int, items: np.ndarray) -> np.ndarray:
    """Scores from training's own batch builder: the user's whole history lies before NOW_MS."""
    from training.batching import BatchBuilder, batch_keys
    from training.ingest_data import Examples
    from training.models import load_model

    model = load_model(env[name] / "model")
    behaviors = read_behaviors(env["ingest"])
    item_table = pq.read_table(env["ingest"] / "items", columns=["item", "category"]).to_pydict()
    category = np.zeros(N_ITEMS + 1, dtype=np.int64)
    category[item_table["item"]] = item_table["category"]
    n = len(items)
    users = np.full(n, user, dtype=np.int64)
    examples = Examples(
        user=users,
        item=items,
        category=category[items],
        ts=np.full(n, NOW_MS, dtype=np.int64),
        label=np.zeros(n, dtype=np.float32),
        hist_end=behaviors.lengths(users),
        position=np.zeros(n, dtype=np.int32),
        session=np.zeros(n, dtype=np.int32),
        split=np.zeros(n, dtype=np.int8),
    )
    data = SimpleNamespace(behaviors=behaviors, item_dense=None, vocab_sizes=dict(VOCAB_SIZES), max_ids={})
    builder = BatchBuilder(data, model.sequence_lengths(), keys=batch_keys(model))  # type: ignore[arg-type]
    batch, _ = builder.build(examples, slice(None))
    with torch.inference_mode():
        return torch.sigmoid(model(batch)).numpy()


@pytest.mark.parametrize("name", ["din", "sim"])
def test_ranking_order_equals_offline_scores_from_the_training_batch_builder(env, name):
    users, items = raw_ids(env["ingest"], "user"), raw_ids(env["ingest"], "item")
    indices = np.arange(1, N_ITEMS + 1, dtype=np.int64)
    candidates = [items[int(i)] for i in indices]
    with service_process(env[name], env["feast"], env["root"] / f"state-{name}-order") as base:
        response = httpx.post(
            f"{base}/v1/rank",
            json={
                "user_id": users[LONG_USER],
                "candidates": candidates,
                "context": {"request_id": "req-1", "request_time_ms": NOW_MS},
            },
            timeout=30,
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model"], body["model_version"], body["request_id"]) == (name, f"{name}/7", "req-1")
    assert body["degraded"] is False and body["degraded_reason"] is None
    assert set(body["timing"]) == {"features_ms", "model_ms", "total_ms"}

    expected = _offline_scores(env, name, LONG_USER, indices)
    # The served order sorts the offline scores: each next item scores no higher (up to the
    # 1e-5 the two computations may differ by, which only near-ties can swap).
    position = {c: i for i, c in enumerate(candidates)}
    offline_in_served_order = expected[[position[item["item_id"]] for item in body["items"]]]
    assert sorted(position[item["item_id"]] for item in body["items"]) == list(range(len(candidates)))
    assert bool((np.diff(offline_in_served_order) <= 1e-5).all())
    assert len(np.unique(np.round(expected, 4))) > len(expected) // 2  # the order is not trivial
    served = {item["item_id"]: item["score"] for item in body["items"]}
    np.testing.assert_allclose([served[c] for c in candidates], expected, atol=1e-5)


@pytest.mark.parametrize(
    ("payload", "status", "field"),
    [
        ({"candidates": ["i1"]}, 422, "user_id"),
        ({"user_id": "u1"}, 422, "candidates"),
        ({"user_id": True, "candidates": ["i1"]}, 422, "user_id"),
        ({"user_id": "u1", "candidates": "i1"}, 422, "candidates"),
        ({"user_id": "u1", "candidates": [1.5]}, 422, "candidates[0]"),
        ({"user_id": "u1", "candidates": ["i1", ""]}, 422, "candidates[1]"),
        ({"user_id": "u1", "candidates": []}, 422, "candidates"),
        ({"user_id": "", "candidates": ["i1"]}, 422, "user_id"),
        ({"user_id": "u1", "candidates": ["i1"], "extra": 1}, 422, "extra"),
        (
            {"user_id": "u1", "candidates": ["i1"], "context": {"request_time_ms": -5}},
            422,
            "context.request_time_ms",
        ),
        ({"user_id": "u1", "candidates": [f"i{i}" for i in range(1_001)]}, 413, "candidates"),
    ],
)
def test_each_bad_input_gets_its_4xx_naming_the_field(din_service, payload, status, field):
    response = httpx.post(f"{din_service}/v1/rank", json=payload, timeout=10)
    assert response.status_code == status, response.text
    assert field in response.json()["detail"]


def test_invalid_json_and_oversized_body(din_service):
    response = httpx.post(
        f"{din_service}/v1/rank", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422 and "body" in response.json()["detail"]
    response = httpx.post(f"{din_service}/v1/rank", json={"user_id": "u", "candidates": ["x" * 2_000] * 600})
    assert response.status_code == 413 and "bytes" in response.json()["detail"]


def test_bounded_loopback_load_loop_ends_with_zero_errors(env, din_service):
    users, items = raw_ids(env["ingest"], "user"), raw_ids(env["ingest"], "item")
    rng = np.random.default_rng(0)
    payloads = [
        {
            "user_id": users[int(rng.integers(1, N_USERS + 1))],
            "candidates": [items[int(i)] for i in rng.choice(np.arange(1, N_ITEMS + 1), 40, replace=False)],
        }
        for _ in range(25)
    ]
    failures: list[str] = []

    def client() -> None:
        with httpx.Client(base_url=din_service, timeout=30) as http:
            for payload in payloads:
                response = http.post("/v1/rank", json=payload)
                if response.status_code != 200 or response.json()["degraded"]:
                    failures.append(response.text)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == []
    metrics = httpx.get(f"{din_service}/metrics").text
    served = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith('seqrank_request_seconds_count{route="/v1/rank",status="200"}')
    ]
    assert served and served[0] >= 4 * len(payloads)


def test_metrics_readiness_and_docs(din_service):
    assert httpx.get(f"{din_service}/healthz").json()["loaded"] is True
    ready = httpx.get(f"{din_service}/readyz")
    assert ready.status_code == 200 and ready.json()["model_version"] == "din/7"
    assert httpx.get(f"{din_service}/docs").status_code == 200
    assert "/v1/rank" in httpx.get(f"{din_service}/openapi.json").json()["paths"]
    metrics = httpx.get(f"{din_service}/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    for series in (
        'seqrank_model_info{model="din",model_version="din/7"} 1.0',
        "seqrank_request_seconds_bucket",
        "seqrank_candidates_bucket",
        'seqrank_store_read_seconds_bucket{le="0.001",view="user_behavior"}',
        "seqrank_ready 1.0",
    ):
        assert series in text


def _popularity_order(env: dict[str, Path], indices: np.ndarray) -> list[int]:
    stats = pq.read_table(env["ingest"] / "item_stats").to_pydict()
    latest: dict[int, tuple[int, int]] = {}
    for item, ts, clicks in zip(stats["item"], stats["ts"], stats["clicks_total"], strict=True):
        if item not in latest or ts > latest[item][0]:
            latest[item] = (ts, clicks)
    clicks = np.array([latest.get(int(i), (0, 0))[1] for i in indices], dtype=np.float64)
    return np.argsort(-clicks, kind="stable").tolist()


def _wait_loaded(http: httpx.Client, timeout_s: float = 60) -> None:
    # A service started without waiting for /readyz loads its bundle (and the bundle's runtime
    # sessions, ~1 s the first time) in the background; /v1/rank answers 503 until then.
    deadline = time.monotonic() + timeout_s
    while not http.get("/healthz").json()["loaded"]:
        assert time.monotonic() < deadline, "the bundle did not load"
        time.sleep(0.1)


def test_slow_store_gives_the_degraded_answer_not_a_hang(env):
    users, items = raw_ids(env["ingest"], "user"), raw_ids(env["ingest"], "item")
    indices = np.arange(1, 21, dtype=np.int64)
    candidates = [items[int(i)] for i in indices]
    # The real store answers, 300 ms late, past a 50 ms deadline. The item table is read before
    # readiness, so the popularity order is known; /readyz's probe itself times out.
    overrides = ("serve.fault_store_delay_ms=300", "serve.feature_timeout_ms=50")
    slow = service_process(env["din"], env["feast"], env["root"] / "state-slow", *overrides, ready=False)
    with slow as base, httpx.Client(base_url=base, timeout=30) as http:
        _wait_loaded(http)
        # Until the item table (read at 300 ms per chunk) is in and the store is open (Feast is
        # imported on opening it): before that the answer degrades as "store_unavailable".
        deadline = time.monotonic() + 60
        while True:
            body = http.post("/v1/rank", json={"user_id": users[LONG_USER], "candidates": candidates}).json()
            scored = any(item["score"] > 0 for item in body["items"])
            if (scored and body.get("degraded_reason") != "store_unavailable") or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert body["degraded"] is True and body["degraded_reason"] == "feature_timeout"
        assert [item["item_id"] for item in body["items"]] == [
            candidates[i] for i in _popularity_order(env, indices)
        ]
        assert body["timing"]["total_ms"] < 1_000
        readiness = http.get("/readyz")
        assert readiness.status_code == 503 and "store" in " ".join(readiness.json()["problems"])
        metrics = http.get("/metrics").text
    assert 'seqrank_degraded_total{reason="feature_timeout"}' in metrics
    assert 'seqrank_errors_total{kind="feature_timeout"}' in metrics


def test_unreachable_store_fails_readiness_and_the_process_stays_up(env):
    missing = env["root"] / "no-store-yet"
    shutil.rmtree(missing, ignore_errors=True)
    service = service_process(env["din"], missing, env["root"] / "state-nostore", ready=False)
    with service as base, httpx.Client(base_url=base, timeout=30) as http:
        readiness = http.get("/readyz")
        assert readiness.status_code == 503
        assert any(p.startswith("store:") for p in readiness.json()["problems"])
        _wait_loaded(http)
        body = http.post("/v1/rank", json={"user_id": "u1", "candidates": ["a", "b"]}).json()
        assert body["degraded"] is True and body["degraded_reason"] == "store_unavailable"
        assert http.get("/healthz").status_code == 200
