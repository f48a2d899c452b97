"""Request-shaped scorers (serving.scoring) against the models' own forward on the expanded batch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from serving import scoring
from serving.scoring import RequestInputs, _history_keys, expand_batch, logits, scorer_for
from training.models import ModelSpec, build_model

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

SIZES = {"user": 30, "item": 400, "category": 12, "brand": 4}
NOW_MS = 1_800_000_000_000
BASE = {
    "embedding_dim": 8,
    "seq_len": 16,
    "search_k": 6,
    "heads": 2,
    "attention_hidden": [20, 10],
    "mlp_hidden": [24, 12],
}


def _model(name: str, **hparams: object) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(ModelSpec(name, {**BASE, **hparams}, dict(SIZES)))
    # Trained-looking weights: embeddings far from their 1e-2 init, BatchNorm statistics not 0/1.
    with torch.no_grad():
        for name_, parameter in model.named_parameters():
            parameter.mul_(30.0 if "table" in name_ or name_ == "weight" else 3.0)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _inputs(seed: int, history: int, candidates: int = 40, dense: bool = False) -> RequestInputs:
    g = torch.Generator().manual_seed(seed)
    item = torch.randint(0, SIZES["item"], (candidates,), generator=g)
    category = torch.randint(0, SIZES["category"], (candidates,), generator=g)
    category[item == 0] = 0
    length = BASE["seq_len"]
    hist_item = torch.zeros(length, dtype=torch.int64)
    hist_item[length - history :] = torch.randint(1, SIZES["item"], (history,), generator=g)
    if history > 3:
        hist_item[-2] = 0  # an id the model's vocab maps to PAD, inside the history
    hist_category = torch.where(
        hist_item != 0, torch.randint(1, SIZES["category"], (length,), generator=g), 0
    )
    hist_ts = torch.where(hist_item != 0, NOW_MS - torch.randint(1, 10**10, (length,), generator=g), 0)
    distinct, index = torch.unique(category, return_inverse=True)
    k = BASE["search_k"]
    cat_item = torch.randint(1, SIZES["item"], (len(distinct), k), generator=g)
    cat_item[:, : k // 2] = 0  # PAD-filled rows: fewer than K behaviors in the category
    cat_item[0] = 0  # a category without any
    cat_ts = torch.where(cat_item != 0, NOW_MS - torch.randint(1, 10**10, cat_item.shape, generator=g), 0)
    return RequestInputs(
        user=int(torch.randint(0, SIZES["user"], (1,), generator=g)),
        item=item,
        category=category,
        now_ms=NOW_MS,
        sequences={"hist_item": hist_item, "hist_category": hist_category, "hist_ts": hist_ts},
        cat_item=cat_item,
        cat_ts=cat_ts,
        cat_index=index,
        item_dense=torch.randn(candidates, 4, generator=g) if dense else None,
    )


@pytest.mark.parametrize(
    ("name", "hparams"),
    [
        ("din", {}),
        ("din", {"dense": "normalized"}),
        ("din", {"embedding": "double_hash", "full_rows": 50, "hash_rows": 40}),
        ("sim", {}),
        ("sim", {"dense": "autodis"}),
        ("sim", {"embedding": "double_hash", "full_rows": 50, "hash_rows": 40}),
    ],
)
@pytest.mark.parametrize("history", [16, 5, 0])
def test_request_scorer_equals_the_models_forward(name, hparams, history):
    model = _model(name, **hparams)
    assert scorer_for(model) is not None
    inputs = _inputs(seed=history, history=history, dense=hparams.get("dense", "off") != "off")
    with torch.inference_mode():
        fast = torch.sigmoid(logits(model, inputs)).numpy()
        batch = {key: value.contiguous() for key, value in expand_batch(inputs).items()}
        reference = torch.sigmoid(model(batch)).numpy()
    np.testing.assert_allclose(fast, reference, atol=1e-5, rtol=0)
    assert np.std(reference) > 1e-3, "the weights should tell candidates apart"


@pytest.mark.parametrize("name", ["din", "sim"])
def test_repeated_behaviors_are_scored_once_and_counted(name):
    # A user who revisits items: the scorers attend each distinct behavior once, weighted by its
    # repeats, which must equal the forward over every position.
    model = _model(name)
    inputs = _inputs(seed=7, history=16)
    sequences = dict(inputs.sequences)
    for key in ("hist_item", "hist_category"):
        row = sequences[key].clone()
        row[4:10] = row[10]  # six repeats of one behavior
        row[12] = row[14]
        sequences[key] = row
    inputs = RequestInputs(**{**inputs.__dict__, "sequences": sequences})
    _, counts = _history_keys(model, inputs)
    assert counts is not None and counts.max() == 7
    with torch.inference_mode():
        fast = torch.sigmoid(logits(model, inputs)).numpy()
        batch = {key: value.contiguous() for key, value in expand_batch(inputs).items()}
        reference = torch.sigmoid(model(batch)).numpy()
    np.testing.assert_allclose(fast, reference, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("name", "hparams"), [("sim", {"search": "soft", "long_seq_len": 20}), ("emb_mlp", {})]
)
def test_models_without_a_scorer_go_through_their_forward(name, hparams):
    model = _model(name, **hparams)
    assert scorer_for(model) is None
    inputs = _inputs(seed=1, history=10)
    long = {
        f"long_{k.removeprefix('hist_')}": torch.cat([torch.zeros(4, dtype=torch.int64), v])
        for k, v in inputs.sequences.items()
    }
    inputs = RequestInputs(**{**inputs.__dict__, "sequences": {**inputs.sequences, **long}})
    with torch.inference_mode():
        served = logits(model, inputs)
        reference = model({key: value.contiguous() for key, value in expand_batch(inputs).items()})
    torch.testing.assert_close(served, reference)


def test_request_log_records_the_bundle_the_request_used(serving_env, tmp_path):
    from fastapi.testclient import TestClient

    from seqrank.config import ServeConfig
    from serving.app import create_app
    from tests.helpers.serving import raw_ids

    cfg = ServeConfig(request_log_sample=1.0)
    items = raw_ids(serving_env["ingest"], "item")
    with TestClient(create_app(serving_env["bundle"], serving_env["feast"], cfg, tmp_path / "log")) as client:
        response = client.post(
            "/v1/rank",
            json={"user_id": 1, "candidates": [items[1], 2], "context": {"request_id": "r-9"}},
        )
        assert response.status_code == 200, response.text
    [log_file] = (tmp_path / "log").iterdir()
    [entry] = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert entry["request_id"] == "r-9"
    assert entry["user_id"] == "1"  # an integer id is its decimal string
    assert entry["model_version"] == "seqrank-ranker/1" and entry["run_id"] == "run-0"
    assert entry["bundle"] == str(serving_env["bundle"])


@pytest.mark.parametrize("uneven", [False, True], ids=["blocks", "gathered"])
def test_category_attention_equals_per_candidate_attention(uneven: bool) -> None:
    # Each candidate attends its own category's keys; grouping candidates into per-category blocks
    # (and the gathered path for very uneven categories) must give the same rows, in the same order.
    from serving.scoring import category_attention

    g = torch.Generator().manual_seed(3)
    batch, heads, width, n_rows, k = 30, 2, 6, 5, 7
    rows = torch.randint(0, n_rows, (batch,), generator=g)
    if uneven:
        rows[:] = 0
        rows[-4:] = torch.arange(1, n_rows)  # one big category and four singletons: 5·26 > 2·30
    query = torch.randn(batch, heads, width, generator=g)
    retrieved = torch.randn(n_rows, k, width, generator=g)
    found = torch.rand(n_rows, k, generator=g) > 0.3
    found[1] = False  # nothing retrieved: zero interest

    out = category_attention(query, retrieved, found, rows)

    expected = torch.zeros(batch, heads * width)
    for i in range(batch):
        keys, real = retrieved[rows[i]], found[rows[i]]
        if real.any():
            weights = torch.softmax(query[i] @ keys[real].T, dim=-1)  # (h, K')
            expected[i] = (weights @ keys[real]).flatten()
    assert out.shape == (batch, heads * width)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["din", "sim"])
def test_onnxruntime_scores_equal_pytorchs(name):
    # The served runtime (serving.runtime) against eager PyTorch and the model's own forward.
    from serving import runtime

    model = _model(name)
    inputs = _inputs(seed=11, history=16, candidates=60)
    with torch.inference_mode():
        eager = torch.sigmoid(logits(model, inputs)).numpy()
        # DIN's unit or SIM's short-term unit, and the MLP tower their scorers run.
        assert scoring.prepare(model, "onnxruntime") == 2
        assert runtime.session_of(model.attention if name == "din" else model.short_attention) is not None
        assert isinstance(runtime._SESSIONS.get(model.mlp), runtime.TowerSession)
        served = torch.sigmoid(logits(model, inputs)).numpy()
        batch = {key: value.contiguous() for key, value in expand_batch(inputs).items()}
        reference = torch.sigmoid(model(batch)).numpy()
        assert runtime.prepare(model, "torch") == 0
        assert runtime.session_of(model.attention if name == "din" else model.short_attention) is None
        assert model.mlp not in runtime._SESSIONS
    np.testing.assert_allclose(served, eager, atol=1e-5, rtol=0)
    np.testing.assert_allclose(served, reference, atol=1e-5, rtol=0)
    assert np.std(served) > 1e-3


def test_non_sigmoid_units_stay_on_pytorch():
    # The served models' units are sigmoid; a PReLU unit (other models' choice) has no ONNX graph.
    from serving import runtime
    from training.layers import TargetAttention

    with pytest.raises(ValueError, match="only the sigmoid unit"):
        runtime.UnitSession(TargetAttention(8, (6, 4), activation="prelu"))


@pytest.mark.parametrize("name", ["din", "sim"])
def test_a_request_scored_alone_on_two_cores_gets_the_same_scores_bit_for_bit(name):
    # The parallel session splits the unit's products over threads; every score is computed by the
    # same instructions, so the request's answer does not depend on how busy the service is.
    from serving import runtime

    model = _model(name)
    inputs = _inputs(seed=5, history=16, candidates=300)  # 300 × 14 real behaviors ≥ MIN_PARALLEL_PAIRS
    with torch.inference_mode():
        assert scoring.prepare(model, "onnxruntime", cores=2) == 2
        unit = model.attention if name == "din" else model.short_attention
        session = runtime.session_of(unit)
        assert session is not None and session.sessions.parallel is not None
        used = []
        run = session.sessions.parallel.run

        def recording(*args, **kwargs):
            used.append("parallel")
            return run(*args, **kwargs)

        session.sessions.parallel.run = recording  # type: ignore[method-assign]
        one_core = logits(model, inputs)  # outside a request: one core
        assert used == []
        with runtime.CoreShare(2).request():
            two_cores = logits(model, inputs)
        assert used == ["parallel"]
        runtime.prepare(model, "torch")
    assert torch.equal(one_core, two_cores)


def test_a_request_keeps_to_one_core_while_another_is_in_flight():
    import threading

    from serving import runtime

    model = _model("din")
    inputs = _inputs(seed=5, history=16, candidates=300)
    share = runtime.CoreShare(2)
    with torch.inference_mode():
        runtime.prepare(model, "onnxruntime", cores=2)
        session = runtime.session_of(model.attention)
        assert session is not None and session.sessions.parallel is not None
        used = []
        run = session.sessions.parallel.run

        def recording(*args, **kwargs):
            used.append(threading.current_thread().name)
            return run(*args, **kwargs)

        session.sessions.parallel.run = recording  # type: ignore[method-assign]
        other_in_flight, scored = threading.Event(), threading.Event()

        def other_request():
            with share.request():
                other_in_flight.set()
                scored.wait(10)

        other = threading.Thread(target=other_request, name="other")
        with share.request():
            assert share.alone()
            logits(model, inputs)
            other.start()
            assert other_in_flight.wait(10)
            assert not share.alone()
            logits(model, inputs)  # another request is in flight: one core
            scored.set()
            other.join()
            assert share.alone()
            logits(model, inputs)  # alone again
        runtime.prepare(model, "torch")
    assert used == ["MainThread", "MainThread"]
    with pytest.raises(ValueError, match="unit cores = 0"):
        runtime.CoreShare(0)


def test_small_requests_stay_on_one_core():
    # Below MIN_PARALLEL_PAIRS the wake-up of a second thread costs more than it saves.
    from serving import runtime

    model = _model("din")
    inputs = _inputs(seed=5, history=16, candidates=20)
    with torch.inference_mode():
        runtime.prepare(model, "onnxruntime", cores=2)
        session = runtime.session_of(model.attention)
        assert session is not None and session.sessions.parallel is not None

        def refuse(*args, **kwargs):
            raise AssertionError("the parallel session ran for 20 candidates")

        session.sessions.parallel.run = refuse  # type: ignore[method-assign]
        with runtime.CoreShare(2).request():
            logits(model, inputs)
        runtime.prepare(model, "torch")


@pytest.mark.parametrize("activation", ["dice", "prelu", "relu", "sigmoid"])
def test_a_tower_in_onnxruntime_equals_its_eager_forward(activation):
    # Every activation an MLP offers, with dropout (the identity in eval mode) and trained-looking
    # statistics, on one core and on two (bit for bit).
    from serving import runtime
    from training.layers import MLP

    torch.manual_seed(3)
    mlp = MLP(24, [32, 16], activation=activation, out_dim=1, dropout=0.1)
    with torch.no_grad():
        for module in mlp.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
        for parameter in mlp.parameters():
            if parameter.dim() == 1:  # biases, Dice's α, PReLU's slopes
                parameter.uniform_(-0.5, 0.5)
    mlp.eval()
    x = torch.randn(runtime.MIN_PARALLEL_ROWS + 44, 24) * 3
    session = runtime.TowerSession(mlp, cores=2)
    with torch.inference_mode():
        eager = mlp(x)
        one_core = session.forward(x)
        with runtime.CoreShare(2).request():
            two_cores = session.forward(x)
    assert one_core.shape == eager.shape == (x.shape[0], 1)
    torch.testing.assert_close(one_core, eager, rtol=0, atol=1e-5)
    assert torch.equal(one_core, two_cores)
    assert float(eager.std()) > 1e-2


def test_a_tower_with_a_layer_the_graph_does_not_know_stays_on_pytorch():
    from serving import runtime
    from training.layers import MLP

    mlp = MLP(8, [6], activation="relu").eval()
    mlp.net.insert(1, torch.nn.LayerNorm(6))
    with pytest.raises(ValueError, match="tower layer LayerNorm"):
        runtime.TowerSession(mlp)
    model = _model("din")
    model.mlp = mlp
    assert runtime.prepare(model, "onnxruntime", with_tower=True) == 1  # the unit only
    x = torch.randn(5, 8)
    with torch.inference_mode():
        torch.testing.assert_close(runtime.tower(mlp, x), mlp(x), rtol=0, atol=0)
    runtime.prepare(model, "torch")


def test_usable_cores_follow_the_containers_cpu_limit(tmp_path):
    # A replica limited to 2 CPUs on a 64-core node must not give a request 64 threads.
    import os

    from serving import runtime

    affinity = len(os.sched_getaffinity(0))
    assert runtime.usable_cores(tmp_path / "none") == affinity  # no cgroup files: affinity
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("max 100000\n")
    assert runtime.usable_cores(v2) == affinity  # no quota
    (v2 / "cpu.max").write_text("50000 100000\n")
    assert runtime.usable_cores(v2) == 1  # half a CPU: still one
    (v2 / "cpu.max").write_text(f"{150000 * affinity} 100000\n")
    assert runtime.usable_cores(v2) == affinity  # a quota above the affinity: the affinity
    v1 = tmp_path / "v1" / "cpu"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert runtime.usable_cores(v1.parent) == affinity
    (v1 / "cpu.cfs_quota_us").write_text("100000\n")
    assert runtime.usable_cores(v1.parent) == 1


def test_only_a_scorer_that_runs_the_tower_gets_its_session():
    # DIEN scores through its own forward, which never asks serving.runtime for the tower.
    from serving import runtime

    model = _model("dien")
    assert scorer_for(model) is None
    scoring.prepare(model, "onnxruntime")
    assert model.mlp not in runtime._SESSIONS
    runtime.prepare(model, "torch")
