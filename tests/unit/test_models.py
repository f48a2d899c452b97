"""The model zoo: one smoke test over the registry, the shared layers, and learning a planted signal."""

from __future__ import annotations

import importlib
import inspect
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from seqrank.config import ModelConfig, TrainConfig
from seqrank.schema import PAD
from tests.helpers.models import HPARAMS, VOCAB, B, assert_learns, assert_round_trip, fixed_batch
from tests.helpers.synthetic import write_training_ingest
from training.batching import batch_keys
from training.evaluation import evaluate, predict
from training.ingest_data import load_ingest
from training.layers import Dice, Embedding, TargetAttention, fused
from training.models import MODELS, CtrModel, ModelSpec, build_model, load_model, save_state
from training.models.sim import SIM, SIMOptions
from training.trainer import fit, model_spec


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registered_model(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(ModelSpec(name, dict(HPARAMS), dict(VOCAB)))
    batch, labels = fixed_batch()
    assert set(model.required_inputs) <= set(batch)

    logits = model(batch)
    assert logits.shape == (B,)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels) + model.regularization(batch)
    assert torch.isfinite(loss)

    assert_learns(model, batch, labels)

    loaded = assert_round_trip(model, tmp_path / name, [batch, fixed_batch(seed=1)[0]])
    assert type(loaded) is type(model) and loaded.spec == model.spec
    assert sorted(p.name for p in (tmp_path / name).iterdir()) == ["model.json", "model.safetensors"]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_mini_batch_l2_touches_only_rows_in_the_batch(name: str) -> None:
    model = build_model(ModelSpec(name, dict(HPARAMS), dict(VOCAB)))
    batch, _ = fixed_batch()
    reg = model.regularization(batch)
    assert reg.item() > 0
    reg.backward()
    item_grad = model.embeddings.item_table.weight.grad
    used = torch.zeros(VOCAB["item"], dtype=torch.bool)
    for key in ("item", "hist_item", "long_item", "cat_item"):
        if key in model.required_inputs or key in model.optional_inputs:
            used[batch[key]] = True
    used[PAD] = False
    assert bool((item_grad[used].abs().sum(1) > 0).all())
    assert bool((item_grad[~used] == 0).all())

    off = build_model(ModelSpec(name, {**HPARAMS, "embedding_l2": 0.0}, dict(VOCAB)))
    assert off.regularization(batch).item() == 0.0


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"embedding_dim": 0}, "hparams['embedding_dim'] = 0"),
        ({"mlp_hidden": []}, "hparams['mlp_hidden'] = []"),
        ({"embedding_l2": -1.0}, "hparams['embedding_l2'] = -1.0"),
    ],
)
def test_constructors_name_bad_values(name: str, change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        build_model(ModelSpec(name, {**HPARAMS, **change}, dict(VOCAB)))


def test_model_argument_errors() -> None:
    with pytest.raises(ValueError, match="vocab_sizes lacks"):
        build_model(ModelSpec("din", dict(HPARAMS), {"user": 3, "item": 3}))
    with pytest.raises(ValueError, match=r"attention_hidden.*\[0\]"):
        build_model(ModelSpec("din", {**HPARAMS, "attention_hidden": [0]}, dict(VOCAB)))
    with pytest.raises(ValueError, match="pooling"):
        build_model(ModelSpec("emb_mlp", {**HPARAMS, "pooling": "max"}, dict(VOCAB)))
    with pytest.raises(ValueError, match=r"valid names: .*din, .*emb_mlp"):
        build_model(ModelSpec("nope", dict(HPARAMS), dict(VOCAB)))


def test_target_attention_equals_the_concatenated_form() -> None:
    torch.manual_seed(0)
    for hidden, activation in (([16, 8], "sigmoid"), ([12], "relu"), ([10, 6, 4], "prelu")):
        attention = TargetAttention(6, hidden, activation).double()
        query = torch.randn(5, 6, dtype=torch.double)
        keys = torch.randn(5, 9, 6, dtype=torch.double)
        mask = torch.rand(5, 9) > 0.3

        q = query.unsqueeze(1).expand_as(keys)
        h = attention.activations[0](
            attention.first(torch.cat([keys, q, keys - q, keys * q], -1)).view(45, -1)
        )
        for linear, act in zip(attention.layers, attention.activations[1:], strict=True):
            h = act(linear(h))
        weights = attention.out(h).view(5, 9) * mask
        expected = (weights.unsqueeze(-1) * keys).sum(1)
        torch.testing.assert_close(attention(query, keys, mask), expected, rtol=1e-12, atol=1e-12)


def test_target_attention_gradients_equal_the_concatenated_form(monkeypatch: pytest.MonkeyPatch) -> None:
    # The unfused path (autocast, CUDA, torch.compile; tests/unit/test_attention_fused.py covers
    # the fused one) rewrites the first layer; every gradient must still be the plain formula's.
    monkeypatch.setattr(fused, "sigmoid_unit_applies", lambda activation, keys: False)
    torch.manual_seed(0)
    attention = TargetAttention(6, [16, 8]).double()
    query = torch.randn(6, 6, dtype=torch.double, requires_grad=True)
    keys = torch.randn(6, 8, 6, dtype=torch.double, requires_grad=True)
    mask = torch.rand(6, 8) > 0.3
    upstream = torch.randn(6, 6, dtype=torch.double)

    q = query.unsqueeze(1).expand_as(keys)
    h = torch.sigmoid(attention.first(torch.cat([keys, q, keys - q, keys * q], -1)))
    h = torch.sigmoid(attention.layers[0](h))
    weights = attention.out(h).squeeze(-1) * mask
    plain = (weights.unsqueeze(-1) * keys).sum(1)

    inputs = [query, keys, *attention.parameters()]
    expected = torch.autograd.grad(plain, inputs, upstream)
    got = torch.autograd.grad(attention(query, keys, mask), inputs, upstream)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)


def test_target_attention_ignores_padded_positions() -> None:
    torch.manual_seed(0)
    attention = TargetAttention(4, [8, 4])
    query, keys = torch.randn(3, 4), torch.randn(3, 5, 4)
    mask = torch.tensor([[0, 0, 1, 1, 1], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    changed = keys.clone()
    changed[~mask] = torch.randn(int((~mask).sum()), 4) * 100
    torch.testing.assert_close(attention(query, keys, mask), attention(query, changed, mask))
    assert bool((attention(query, keys, mask)[1] == 0).all())
    with pytest.raises(ValueError, match="attention expects"):
        attention(torch.randn(3, 5), keys, mask)


def test_dice_uses_batch_statistics_in_training_and_running_ones_in_eval() -> None:
    dice = Dice(3)
    x = torch.randn(64, 3) * 5 + 2
    y = dice(x)
    assert y.shape == x.shape
    # alpha starts at 0: Dice is then p(x)·x with p ∈ (0, 1), so it keeps the sign and shrinks |x|.
    assert bool(((y * x) >= 0).all()) and bool((y.abs() <= x.abs()).all())
    dice.eval()
    assert not torch.equal(dice(x), y)  # running mean has only moved part way
    with pytest.raises(ValueError, match="num_features = 0"):
        Dice(0)


def test_embedding_keeps_pad_zero_and_hashes_into_buckets() -> None:
    table = Embedding(100, 4, buckets=10)
    assert table.weight.shape == (10, 4)
    ids = torch.tensor([0, 1, 9, 10, 99])
    assert table.rows(ids).tolist() == [0, 1, 9, 1, 9]
    assert bool((table(torch.tensor([PAD])) == 0).all())
    table(ids).sum().backward()
    assert bool((table.weight.grad[PAD] == 0).all())
    with pytest.raises(ValueError, match="vocab_size = 0"):
        Embedding(0, 4)


def test_batch_keys_names_what_training_cannot_provide() -> None:
    class NeedsPrice(CtrModel):
        required_inputs = ("user", "hist_price")

    model = NeedsPrice(ModelSpec("needs_price", {}, {}))
    with pytest.raises(ValueError, match=r"requires batch keys \['hist_price'\]"):
        batch_keys(model)


@pytest.fixture(scope="module")
def ingest_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_training_ingest(tmp_path_factory.mktemp("signal") / "ingest")


SIGNAL_MODEL = {"seq_len": 20, "embedding_dim": 8, "attention_hidden": [32, 16], "mlp_hidden": [32, 16]}
SIGNAL_TRAIN = TrainConfig(epochs=6, batch_size=128, lr=5e-3, patience=2, device="cpu", seed=0)


def test_din_learns_the_history_signal_and_beats_emb_mlp(ingest_dir: Path) -> None:
    data = load_ingest(ingest_dir)
    seen: list[int] = []
    din = fit(
        data, ModelConfig(name="din", **SIGNAL_MODEL), SIGNAL_TRAIN, on_epoch=lambda e, m: seen.append(e)
    )
    baseline = fit(data, ModelConfig(name="emb_mlp", **SIGNAL_MODEL), SIGNAL_TRAIN)

    assert din.test["auc"] > 0.75, din.test
    assert din.test["auc"] > baseline.test["auc"] + 0.03, (din.test, baseline.test)
    assert seen == [int(h["epoch"]) for h in din.history]
    assert din.best_epoch == 1 + int(np.argmax([h["valid_gauc"] for h in din.history]))
    assert set(din.history[0]) >= {
        "train_loss",
        "valid_auc",
        "valid_gauc",
        "valid_logloss",
        "valid_calibration",
    }
    assert din.spec.hparams["embedding_l2"] == SIGNAL_TRAIN.embedding_l2
    assert din.spec.vocab_sizes == data.vocab_sizes

    # evaluate and predict agree with what fit reports for the restored best model.
    assert evaluate(din.model, data, "test") == pytest.approx(din.test)
    probs = predict(din.model, data, "test")
    assert probs.shape == (len(data.split("test")),) and ((probs > 0) & (probs < 1)).all()


def test_fit_is_reproducible_and_evaluate_needs_matching_vocab(ingest_dir: Path) -> None:
    data = load_ingest(ingest_dir)
    cfg = TrainConfig(epochs=2, batch_size=256, device="cpu", seed=3)
    first = fit(data, ModelConfig(name="din", **SIGNAL_MODEL), cfg)
    second = fit(data, ModelConfig(name="din", **SIGNAL_MODEL), cfg)
    assert [h["train_loss"] for h in first.history] == [h["train_loss"] for h in second.history]
    assert first.test == second.test

    small = build_model(ModelSpec("din", {**SIGNAL_MODEL}, {**data.vocab_sizes, "item": 100}))
    with pytest.raises(ValueError, match="restricted_to"):
        evaluate(small, data, "test")
    metrics = evaluate(small, data.restricted_to(small.spec.vocab_sizes), "test")
    assert set(metrics) == {"auc", "gauc", "logloss", "calibration", "n"}


def test_every_model_file_is_in_the_registry() -> None:
    # MODELS is written out by hand: a model file whose class is missing there would never run.
    package = Path(build_model.__code__.co_filename).parent
    shared = {"__init__", "base", "sequence"}
    defined = set()
    for path in sorted(package.glob("*.py")):
        if path.stem in shared:
            continue
        module = importlib.import_module(f"training.models.{path.stem}")
        defined |= {
            cls
            for _, cls in inspect.getmembers(module, inspect.isclass)
            if issubclass(cls, CtrModel) and cls.__module__ == module.__name__
        }
    assert defined and defined <= set(MODELS.values()), sorted(
        c.__name__ for c in defined - set(MODELS.values())
    )


def test_model_options_name_the_bad_field_and_list_the_valid_ones() -> None:
    from training.models import check_options

    check_options("sim", {"search": "soft", "gsu_weight": 2})
    with pytest.raises(
        ValueError, match=re.escape("model.options.serch: not an option of model 'sim'")
    ) as err:
        check_options("sim", {"serch": "soft"})
    assert str(err.value).endswith(
        "valid options: autodis_skip, autodis_temperature, gsu_weight, search, search_dim, time_buckets"
    )
    with pytest.raises(ValueError, match=re.escape("model.options.gsu_weight = -1")):
        check_options("sim", {"gsu_weight": -1})
    with pytest.raises(ValueError, match=re.escape("model.options.blocks = 1.5")):
        check_options("bst", {"blocks": 1.5})
    with pytest.raises(ValueError, match=re.escape("model.options.time_buckets = '24'")):
        check_options("sim", {"time_buckets": "24"})  # a string is no number, even a numeric one
    # DIN has no options of its own, only the dense block's.
    with pytest.raises(
        ValueError,
        match=r"not an option of model 'din'; valid options: autodis_skip, autodis_temperature$",
    ):
        check_options("din", {"search": "soft"})
    with pytest.raises(ValueError, match=re.escape("model.options.autodis_temperature = 0")):
        check_options("din", {"autodis_temperature": 0})
    with pytest.raises(ValueError, match="unknown model 'dinn'; valid names: bst, deepfm"):
        check_options("dinn", {})
    # A spec whose hparams carry a misspelled option fails to build with the same message.
    with pytest.raises(ValueError, match=re.escape("model.options.serch: not an option of model 'sim'")):
        build_model(ModelSpec(name="sim", hparams={**HPARAMS, "serch": "soft"}, vocab_sizes=VOCAB))


# model.json as a spec saved before the options classes existed holds it (a637e0b, sim soft search
# from ModelConfig(..., options={"search": "soft", "gsu_weight": 0.5, "time_buckets": 12})): the
# ModelConfig fields, the options merged in beside them, and the trainer's embedding_l2.
OLD_SPEC = {
    "name": "sim",
    "hparams": {
        "attention_hidden": [16, 8],
        "autodis_buckets": 16,
        "dense": "off",
        "embedding": "full",
        "embedding_dim": 8,
        "embedding_l2": 1e-06,
        "full_rows": 50000,
        "gsu_weight": 0.5,
        "hash_rows": 10000,
        "heads": 2,
        "long_seq_len": 30,
        "mlp_hidden": [32, 16],
        "search": "soft",
        "search_k": 5,
        "seq_len": 12,
        "time_buckets": 12,
    },
    "vocab_sizes": {"category": 6, "item": 50, "user": 20},
}


def test_a_spec_saved_in_the_old_format_still_loads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(ModelSpec.from_dict(OLD_SPEC))
    save_state(model.spec, model.state_dict(), tmp_path)
    (tmp_path / "model.json").write_text(json.dumps(OLD_SPEC))
    loaded = load_model(tmp_path)
    assert isinstance(loaded, SIM) and loaded.options == SIMOptions(
        search="soft", gsu_weight=0.5, time_buckets=12
    )
    assert loaded.time_gap.buckets == 12
    batch, _ = fixed_batch()
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(batch), loaded(batch))


def test_dense_options_reach_autodis(ingest_dir: Path) -> None:
    # model.options that the dense block reads go through model_spec like any model's own option.
    data = load_ingest(ingest_dir)
    cfg = ModelConfig(name="din", **{**SIGNAL_MODEL, "dense": "autodis"}, options={"autodis_skip": 0.0})
    spec = model_spec(data, cfg, TrainConfig())
    autodis = build_model(spec).dense.autodis
    assert autodis is not None and (autodis.temperature, autodis.skip) == (1.0, 0.0)
