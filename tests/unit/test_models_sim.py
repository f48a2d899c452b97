"""SIM: both search modes through the zoo checks, soft search's top-K, PAD and empty retrievals."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from seqrank.schema import PAD
from tests.helpers.models import HPARAMS, VOCAB, B, K, M, assert_learns, assert_round_trip, fixed_batch
from training.dense import DENSE_FEATURES
from training.layers.multihead import MultiHeadTargetAttention
from training.models import ModelSpec, build_model, load_model, save_model
from training.models.sim import SIM

MODES = ("hard", "soft")


def make_sim(search: str, seed: int = 0, **change: object) -> SIM:
    torch.manual_seed(seed)
    model = build_model(ModelSpec("sim", {**HPARAMS, "search": search, **change}, dict(VOCAB)))
    assert isinstance(model, SIM)
    return model


def test_soft_search_passes_the_zoo_checks(tmp_path: Path) -> None:
    # The zoo test (tests/unit/test_models.py) covers the default, hard search; the same checks here.
    search = "soft"
    model = make_sim(search)
    batch, labels = fixed_batch()
    assert set(model.required_inputs) <= set(batch)
    assert "long_item" in model.required_inputs and "cat_item" not in model.required_inputs
    assert "cat_item" in make_sim("hard").required_inputs

    bce = torch.nn.functional.binary_cross_entropy_with_logits
    logits = model(batch)
    assert logits.shape == (B,)
    assert torch.isfinite(bce(logits, labels) + model.regularization(batch))

    assert_learns(model, batch, labels)

    loaded = assert_round_trip(model, tmp_path / search, [batch, fixed_batch(seed=1)[0]])
    assert isinstance(loaded, SIM) and loaded.search == search


def test_soft_search_l2_covers_the_search_tables_rows_in_the_batch() -> None:
    model = make_sim("soft")
    batch, _ = fixed_batch()
    model.regularization(batch).backward()
    for table, keys in (
        (model.search_item, ("item", "long_item")),
        (model.search_category, ("category", "long_category")),
    ):
        used = torch.zeros(table.weight.shape[0], dtype=torch.bool)
        for key in keys:
            used[batch[key]] = True
        used[PAD] = False
        grad = table.weight.grad
        assert grad is not None
        assert bool((grad[used].abs().sum(1) > 0).all()) and bool((grad[~used] == 0).all())


def test_soft_search_picks_the_top_k_by_inner_product() -> None:
    model = make_sim("soft", seed=3).double()
    batch, _ = fixed_batch(seed=2)
    index, found, _ = model.soft_search(batch)
    assert index.shape == found.shape == (B, K)

    w_a, w_b = model.search_target.weight, model.search_behavior.weight
    item_table, category_table = model.search_item.weight, model.search_category.weight
    with torch.no_grad():
        for row in range(B):
            target = torch.cat([item_table[batch["item"][row]], category_table[batch["category"][row]]])
            scores = {}
            for position in range(M):
                item = int(batch["long_item"][row, position])
                if item != PAD:
                    behavior = torch.cat(
                        [item_table[item], category_table[batch["long_category"][row, position]]]
                    )
                    scores[position] = float((w_b @ behavior) @ (w_a @ target))
            best = sorted(scores.values(), reverse=True)[:K]
            # The same item twice in a history ties, so compare the retrieved scores, not positions.
            picked = [scores[p] for p in index[row][found[row]].tolist()]
            assert picked == pytest.approx(best, rel=1e-12), row
            # Fewer than K real behaviors: the other slots are PAD and flagged as nothing found.
            assert int(found[row].sum()) == min(K, len(scores))
            assert bool((batch["long_item"][row, index[row][~found[row]]] == PAD).all())
    assert int(found.sum(1).min()) == 0  # the fixture has rows without any history


def test_soft_search_gradient_reaches_retrieved_behaviors_and_the_search_space() -> None:
    # Every behavior a distinct item, so an item's gradient comes from one position only.
    rows, items = 4, 200
    model = build_model(
        ModelSpec("sim", {**HPARAMS, "search": "soft", "embedding_l2": 0.0}, {**VOCAB, "item": items})
    )
    long_item = torch.arange(1, rows * M + 1).view(rows, M)
    batch = {
        "user": torch.arange(1, rows + 1),
        "item": torch.arange(rows * M + 1, rows * M + 1 + rows),
        "category": torch.tensor([1, 2, 3, 4]),
        "ts": torch.full((rows,), 10**12),
        "long_item": long_item,
        "long_category": long_item % (VOCAB["category"] - 1) + 1,
        "long_ts": torch.arange(M).expand(rows, M) * 60_000 + 10**11,
    }
    for name in ("item", "category", "ts"):
        batch[f"hist_{name}"] = batch[f"long_{name}"][:, -HPARAMS["seq_len"] :]
    index, found, _ = model.soft_search(batch)
    assert bool(found.all())
    older = long_item[:, : M - HPARAMS["seq_len"]]  # beyond the short window
    retrieved = set(long_item.gather(1, index).flatten().tolist())
    picked = sorted(set(older.flatten().tolist()) & retrieved)
    skipped = sorted(set(older.flatten().tolist()) - retrieved)
    assert picked and skipped

    labels = torch.ones(rows)
    torch.nn.functional.binary_cross_entropy_with_logits(model(batch), labels).backward()
    item_grad = model.embeddings.item_table.weight.grad
    assert item_grad is not None
    assert bool((item_grad[picked].abs().sum(1) > 0).all())
    assert bool((item_grad[skipped] == 0).all())  # the choice itself carries no gradient
    assert model.search_item.weight.grad is None  # the main loss does not train the search space
    model(batch, labels)[1].backward()  # the GSU sub-model's own CTR loss does
    search_grad = model.search_item.weight.grad
    assert search_grad is not None and bool((search_grad[skipped].abs().sum(1) > 0).all())


def test_soft_search_auxiliary_loss_is_the_gsu_ctr_loss_returned_with_the_labels() -> None:
    model = make_sim("soft")
    batch, labels = fixed_batch()
    calls = []
    model.search_head.register_forward_hook(lambda *_: calls.append(1))
    logits, aux = model(batch, labels)
    assert calls == [1]
    assert aux.item() > 0.0
    heavy = make_sim("soft", gsu_weight=2.5)
    torch.testing.assert_close(heavy(batch, labels)[1], 2.5 * aux.detach())
    off = make_sim("soft", gsu_weight=0.0)
    assert off(batch, labels)[1].item() == 0.0
    # Without labels (evaluation, serving) the sub-model is skipped: only its loss reads it.
    with torch.no_grad():
        torch.testing.assert_close(model(batch), logits.detach())
        model.eval()
        model(batch)
    assert calls == [1]
    hard = make_sim("hard")
    assert hard(batch, labels)[1].item() == 0.0


@pytest.mark.parametrize("search", MODES)
def test_empty_retrieval_and_empty_history_give_finite_outputs(search: str) -> None:
    model = make_sim(search)
    batch, labels = fixed_batch()
    for key in (
        "hist_item",
        "hist_category",
        "hist_ts",
        "long_item",
        "long_category",
        "long_ts",
        "cat_item",
        "cat_ts",
    ):
        batch[key][: B // 2] = PAD
    logits = model(batch)
    assert bool(torch.isfinite(logits).all())
    torch.nn.functional.binary_cross_entropy_with_logits(logits, labels).backward()
    assert all(bool(torch.isfinite(p.grad).all()) for p in model.parameters() if p.grad is not None)

    # Nothing retrieved: the exact search unit's interest is exactly zero.
    keys = torch.randn(4, K, model.exact_search.key_dim)
    interest = model.exact_search(torch.randn(4, 2 * model.dim), keys, torch.zeros(4, K, dtype=torch.bool))
    assert bool((interest == 0).all())


@pytest.mark.parametrize("search", MODES)
def test_ids_at_pad_positions_change_nothing(search: str) -> None:
    model = make_sim(search).eval()
    batch, _ = fixed_batch()
    changed = {key: value.clone() for key, value in batch.items()}
    g = torch.Generator().manual_seed(7)
    for group, ids in (("hist", ("category", "ts")), ("long", ("category", "ts")), ("cat", ("ts",))):
        pad = batch[f"{group}_item"] == PAD
        assert bool(pad.any())
        for name in ids:
            high = VOCAB["category"] if name == "category" else 10**12
            changed[f"{group}_{name}"][pad] = torch.randint(1, high, (int(pad.sum()),), generator=g)
    with torch.no_grad():
        before, after = model(batch), model(changed)
    torch.testing.assert_close(before, after, rtol=0, atol=0)

    # A real position does count: the check above would notice a change.
    real = batch["cat_item" if search == "hard" else "long_item"] != PAD
    moved = {key: value.clone() for key, value in batch.items()}
    moved["cat_ts" if search == "hard" else "long_ts"][real] -= 10**10
    with torch.no_grad():
        assert not torch.equal(model(moved), before)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"search": "fuzzy"}, "model.options.search = 'fuzzy'"),
        ({"heads": 0}, "hparams['heads'] = 0"),
        ({"search_k": -2}, "hparams['search_k'] = -2"),
        ({"time_buckets": 1}, "model.options.time_buckets = 1"),
        ({"search": "soft", "search_dim": 0}, "model.options.search_dim = 0"),
        ({"search": "soft", "gsu_weight": -1}, "model.options.gsu_weight = -1"),
        ({"search": "soft", "long_seq_len": None}, "hparams['long_seq_len'] = None"),
    ],
)
def test_constructor_names_bad_values(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        build_model(ModelSpec("sim", {**HPARAMS, **change}, dict(VOCAB)))


def test_multi_head_attention_equals_a_per_head_loop() -> None:
    torch.manual_seed(0)
    attention = MultiHeadTargetAttention(4, 6, heads=3, head_dim=5).double()
    query, keys = torch.randn(2, 4, dtype=torch.double), torch.randn(2, 7, 6, dtype=torch.double)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1, 0, 1, 0, 1, 0, 0]], dtype=torch.bool)
    got = attention(query, keys, mask)
    assert got.shape == (2, attention.out_dim) == (2, 18)

    w_q = attention.query_proj.weight.view(3, 5, 4)
    w_k = attention.key_proj.weight.view(3, 5, 6)
    for row in range(2):
        real = keys[row][mask[row]]
        heads = []
        for head in range(3):
            logits = (real @ w_k[head].t()) @ (w_q[head] @ query[row]) / math.sqrt(5)
            heads.append(torch.softmax(logits, 0) @ real)
        torch.testing.assert_close(got[row], torch.cat(heads), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="multi-head attention expects"):
        attention(query, keys[..., :5], mask)
    with pytest.raises(ValueError, match="heads = 0"):
        MultiHeadTargetAttention(4, 6, heads=0)


@pytest.mark.parametrize("search", MODES)
def test_a_history_shared_by_all_rows_scores_as_copies_do(search: str) -> None:
    # Serving expands one user's history over the candidates (stride 0); soft search then embeds
    # it once. The scores must not depend on that.
    model = make_sim(search).eval()
    batch, _ = fixed_batch()
    shared = dict(batch)
    for key in ("hist_item", "hist_category", "hist_ts", "long_item", "long_category", "long_ts"):
        shared[key] = batch[key][5:6].expand_as(batch[key])
    copied = {key: value.contiguous() for key, value in shared.items()}
    with torch.no_grad():
        torch.testing.assert_close(model(shared), model(copied), rtol=1e-6, atol=1e-7)


def test_soft_search_ignores_leading_pad_columns() -> None:
    # Columns that are PAD in every row are cut before the search; results are the same.
    model = make_sim("soft").eval()
    batch, _ = fixed_batch()
    wider = dict(batch)
    for name in ("item", "category", "ts"):
        wider[f"long_{name}"] = torch.cat([torch.zeros(B, 20, dtype=torch.int64), batch[f"long_{name}"]], 1)
    with torch.no_grad():
        torch.testing.assert_close(model(wider), model(batch), rtol=0, atol=0)
    (index, found, _), (wide_index, wide_found, _) = model.soft_search(batch), model.soft_search(wider)
    assert torch.equal(found, wide_found) and torch.equal(wide_index[found], index[found] + 20)


@pytest.mark.parametrize("search", MODES)
def test_dense_features_and_double_hashing_reach_every_table(search: str, tmp_path: Path) -> None:
    model = make_sim(
        search, dense="autodis", autodis_buckets=4, embedding="double_hash", full_rows=10, hash_rows=8
    )
    assert "item_dense" in model.optional_inputs
    tables = [model.embeddings.item_table] + ([model.search_item] if search == "soft" else [])
    assert all(table.weight.shape[0] == 1 + 10 + 8 for table in tables)
    batch, _ = fixed_batch()
    g = torch.Generator().manual_seed(1)
    batch["item_dense"] = torch.randn(B, len(DENSE_FEATURES), generator=g)
    model.eval()
    save_model(model, tmp_path / search)
    loaded = load_model(tmp_path / search)
    with torch.no_grad():
        logits = model(batch)
        assert bool(torch.isfinite(logits).all()) and torch.equal(loaded(batch), logits)
        assert not torch.equal(model({**batch, "item_dense": batch["item_dense"] + 1}), logits)
