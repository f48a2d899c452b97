"""SIM behind the ranking service: the rows Feast gives it equal training's, and /rank scores them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from seqrank.config import ServeConfig
from tests.helpers.feature_store import CFG, LONG_USER, N_CATEGORIES, N_ITEMS, N_USERS, make_ingest_dir
from tests.helpers.serving import VOCAB_SIZES, raw_ids, read_behaviors

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

# K and M as large as the store keeps (CFG.category_k, CFG.max_sequence_length), so the service
# and training read the same number of behaviors.
HPARAMS = {
    "embedding_dim": 8,
    "seq_len": 10,
    "long_seq_len": CFG.max_sequence_length,
    "search_k": CFG.category_k,
    "heads": 2,
    "attention_hidden": [16, 8],
    "mlp_hidden": [16, 8],
}
SERVE_CFG = ServeConfig(max_candidates=N_ITEMS + 5, max_body_bytes=8_000)
NOW_MS = 1_800_000_000_000  # after every behavior of the fixture


def write_sim_bundle(target: Path, ingest_dir: Path, work: Path, search: str) -> Path:
    """A serving bundle around an initialized SIM model, exported by the deploy step's exporter."""
    from components.deploy.export import export_bundle
    from training.models import ModelSpec, build_model, save_model

    torch.manual_seed(0)
    model = build_model(ModelSpec("sim", {**HPARAMS, "search": search}, dict(VOCAB_SIZES)))
    model_dir = work / f"model-sim-{search}"
    save_model(model, model_dir)
    export_bundle(
        ingest_dir, model_dir, target, {"model_version": f"sim-{search}/1", "run_id": "r", "metrics": {}}
    )
    return target


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from components import features

    root = tmp_path_factory.mktemp("serving-sim")
    ingest_dir = make_ingest_dir(root / "ingest")
    features.run(ingest_dir, root / "feast", CFG)
    return {
        "ingest": ingest_dir,
        "feast": root / "feast",
        "hard": write_sim_bundle(root / "bundle-hard", ingest_dir, root, "hard"),
        "soft": write_sim_bundle(root / "bundle-soft", ingest_dir, root, "soft"),
    }


def item_categories(ingest_dir: Path) -> np.ndarray:
    table = pq.read_table(ingest_dir / "items", columns=["item", "category"]).to_pydict()
    lookup = np.zeros(N_ITEMS + 1, dtype=np.int64)
    lookup[table["item"]] = table["category"]
    return lookup


def test_hard_search_rows_from_feast_equal_the_training_index_for_every_user(env):
    from serving.bundle import load_bundle
    from serving.features import OnlineFeatures
    from serving.ranking import build_batch, candidate_items, categories_of

    bundle = load_bundle(env["hard"])
    online = OnlineFeatures(env["feast"])
    behaviors = read_behaviors(env["ingest"])
    users, items = raw_ids(env["ingest"], "user"), raw_ids(env["ingest"], "item")
    candidates = [items[i] for i in range(1, N_ITEMS + 1)] + ["never-seen-item"]
    category = item_categories(env["ingest"])[np.r_[1 : N_ITEMS + 1, 0]]  # the unknown item: PAD
    k = HPARAMS["search_k"]
    categories = categories_of(bundle, candidate_items(bundle, candidates))  # as the service does
    np.testing.assert_array_equal(categories, category)
    shorter = full = 0
    for user in range(1, N_USERS + 1):
        by_category = online.category_sequences(user, categories[categories != 0].tolist())
        batch = build_batch(bundle, users[user], candidates, online.user_sequence(user), NOW_MS, by_category)

        # Training's hard search for "now": every behavior of the user lies before the impression.
        rows = np.full(len(candidates), user)
        hist_end = behaviors.lengths(rows)
        flat = behaviors.category_index(rows, category, hist_end, k)  # (B, K)
        np.testing.assert_array_equal(batch["cat_item"].numpy(), behaviors.item[flat], err_msg=f"user {user}")
        np.testing.assert_array_equal(batch["cat_ts"].numpy(), behaviors.ts[flat], err_msg=f"user {user}")
        shorter += int((flat == 0).any(axis=1).sum())
        full += int((flat != 0).all(axis=1).sum())
    # Both kinds of rows occur: K hits, and PAD-filled ones (fewer than K behaviors in a category).
    assert shorter > 0 and full > 0


@pytest.mark.parametrize("search", ["hard", "soft"])
def test_rank_serves_sim_on_the_rows_training_would_build(env, search, monkeypatch):
    from fastapi.testclient import TestClient

    from serving.app import create_app

    behaviors = read_behaviors(env["ingest"])
    users, items = raw_ids(env["ingest"], "user"), raw_ids(env["ingest"], "item")
    candidates = [items[i] for i in range(1, 31)] + ["never-seen-item"]
    category = item_categories(env["ingest"])[np.r_[1:31, 0]]

    with TestClient(create_app(env[search], env["feast"], SERVE_CFG)) as client:
        service = client.app.state.service
        monkeypatch.setattr(service, "now_ms", lambda: NOW_MS)
        response = client.post("/rank", json={"user_id": users[LONG_USER], "candidates": candidates})
        assert response.status_code == 200, response.text

    body = response.json()
    assert body["model_version"] == f"sim-{search}/1"
    assert sorted(i["item_id"] for i in body["items"]) == sorted(candidates)
    served = np.array([{i["item_id"]: i["score"] for i in body["items"]}[c] for c in candidates])
    assert bool(((served > 0) & (served < 1)).all())
    assert len(np.unique(served[:-1])) > 1  # the scores tell candidates apart

    assert len(np.unique(category[:-1])) == N_CATEGORIES  # the candidates reach every category
    # The batch the service's inputs expand to (serving.ranking.build_batch, the same builder).
    from serving.bundle import load_bundle
    from serving.features import OnlineFeatures
    from serving.ranking import build_batch, candidate_items, categories_of

    bundle = load_bundle(env[search])
    online = OnlineFeatures(env["feast"])
    wanted = categories_of(bundle, candidate_items(bundle, candidates))
    by_category = (
        online.category_sequences(LONG_USER, wanted[wanted != 0].tolist()) if search == "hard" else None
    )
    batch = build_batch(
        bundle, users[LONG_USER], candidates, online.user_sequence(LONG_USER), NOW_MS, by_category
    )
    rows = np.full(len(candidates), LONG_USER)
    hist_end = behaviors.lengths(rows)
    if search == "hard":
        assert "long_item" not in batch
        flat = behaviors.category_index(rows, category, hist_end, HPARAMS["search_k"])
        np.testing.assert_array_equal(batch["cat_item"].numpy(), behaviors.item[flat])
        np.testing.assert_array_equal(batch["cat_ts"].numpy(), behaviors.ts[flat])
        assert bool((batch["cat_item"][:-1] != 0).all())  # the long user has K hits in every category
        assert bool((batch["cat_item"][-1] == 0).all())  # an unknown item has no category to search
    else:
        assert "cat_item" not in batch
        flat = behaviors.history_index(rows, hist_end, HPARAMS["long_seq_len"])
        for name in ("item", "category", "ts"):
            np.testing.assert_array_equal(batch[f"long_{name}"].numpy(), getattr(behaviors, name)[flat])

    # The scores are the model's forward on that batch.
    model = bundle.model
    with torch.inference_mode():
        expected = torch.sigmoid(model({k: v.contiguous() for k, v in batch.items()})).numpy()
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-6)
