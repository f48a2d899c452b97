"""DIEN and BST: their recurrent and transformer blocks, PAD handling, the auxiliary loss, a short fit."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from seqrank.config import ModelConfig, TrainConfig
from seqrank.schema import PAD
from tests.helpers.models import HPARAMS, VOCAB, fixed_batch
from tests.helpers.synthetic import write_training_ingest
from training.ingest_data import load_ingest
from training.layers.gru import AUGRU, gather_steps, left_align
from training.layers.transformer import TransformerEncoderLayer
from training.models import ModelSpec, build_model
from training.trainer import fit


def build(name: str, **options: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelSpec(name, {**HPARAMS, **options}, dict(VOCAB)))


def with_noise_at_pad(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch with random category ids and timestamps wherever the history item is PAD."""
    pad = batch["hist_item"] == PAD
    assert pad.any() and (~pad).any()
    changed = dict(batch)
    g = torch.Generator().manual_seed(7)
    noise_category = torch.randint(1, VOCAB["category"], pad.shape, generator=g)
    noise_ts = torch.randint(1, 10**12, pad.shape, generator=g)
    changed["hist_category"] = torch.where(pad, noise_category, batch["hist_category"])
    changed["hist_ts"] = torch.where(pad, noise_ts, batch["hist_ts"])
    return changed


def test_left_align_moves_real_steps_first_in_order() -> None:
    mask = torch.tensor(
        [[0, 0, 1, 1, 1], [0, 0, 0, 0, 0], [1, 0, 1, 0, 1], [1, 1, 1, 1, 1]], dtype=torch.bool
    )
    values = torch.arange(20.0).view(4, 5, 1)
    index, aligned = left_align(mask)
    assert aligned.tolist() == [[1, 1, 1, 0, 0], [0] * 5, [1, 1, 1, 0, 0], [1] * 5]
    steps = gather_steps(values, index).squeeze(-1)
    assert steps[0, :3].tolist() == [2, 3, 4]
    assert steps[2, :3].tolist() == [10, 12, 14]
    assert steps[3].tolist() == [15, 16, 17, 18, 19]
    index, aligned = left_align(mask, steps=3)
    assert index.shape == aligned.shape == (4, 3) and bool(aligned[[0, 2, 3]].all())


def test_augru_with_full_attention_is_a_gru_and_zero_attention_keeps_the_state() -> None:
    torch.manual_seed(0)
    augru = AUGRU(5, 4).double()
    cell = torch.nn.GRUCell(5, 4).double()
    cell.load_state_dict(augru.state_dict())
    inputs = torch.randn(3, 6, 5, dtype=torch.double)
    h0 = torch.randn(3, 4, dtype=torch.double)

    expected = h0
    for t in range(6):
        expected = cell(inputs[:, t], expected)
    ones = torch.ones(3, 6, dtype=torch.double)
    torch.testing.assert_close(augru(inputs, ones, h0), expected, rtol=1e-12, atol=1e-12)

    # Steps of attention 0 leave the state exactly as it was: the same as not running them.
    attention = torch.rand(3, 6, dtype=torch.double)
    attention[:, [1, 4]] = 0
    kept = [0, 2, 3, 5]
    skipped = augru(inputs[:, kept], attention[:, kept], h0)
    torch.testing.assert_close(augru(inputs, attention, h0), skipped, rtol=1e-12, atol=1e-12)
    assert torch.equal(augru(inputs, torch.zeros_like(ones), h0), h0)

    # An attention in (0, 1) scales the update gate: the step moves the state part of the way.
    half = augru(inputs[:, :1], torch.full((3, 1), 0.5, dtype=torch.double), h0)
    full = augru(inputs[:, :1], torch.ones(3, 1, dtype=torch.double), h0)
    assert bool(((half - h0).abs() < (full - h0).abs()).all())
    with pytest.raises(ValueError, match="AUGRU expects"):
        augru(inputs, ones[:, :5])


def test_extractor_on_left_aligned_rows_equals_a_gru_over_each_row_alone() -> None:
    torch.manual_seed(0)
    gru = torch.nn.GRU(3, 4, batch_first=True).double()
    mask = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1], [1, 1, 1, 1]], dtype=torch.bool)
    x = torch.randn(3, 4, 3, dtype=torch.double)
    index, aligned = left_align(mask)
    states, _ = gru(gather_steps(x, index))
    for row in range(3):
        alone, _ = gru(x[row, mask[row]].unsqueeze(0))
        torch.testing.assert_close(states[row, aligned[row]], alone[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("attention", ["bilinear", "mlp"])
def test_dien_ignores_ids_at_pad_positions(attention: str) -> None:
    model = build("dien", attention=attention)
    batch, labels = fixed_batch()
    changed = with_noise_at_pad(batch)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(batch), model(changed))
    # The auxiliary loss too: same negatives (same generator state), same pairs.
    model.train()
    torch.manual_seed(1)
    _, aux = model(batch, labels)
    torch.manual_seed(1)
    _, changed_aux = model(changed, labels)
    assert torch.equal(aux, changed_aux)


@pytest.mark.parametrize("name", ["dien", "bst"])
def test_a_row_scores_the_same_whatever_else_is_in_the_batch(name: str) -> None:
    # Both cut the batch to its longest history, so rows must not depend on each other's lengths.
    model = build(name).eval()
    batch, _ = fixed_batch()
    rows = torch.tensor([0, 1, 2])  # empty, one and L/2 behaviors
    assert (batch["hist_item"][rows] != PAD).sum(1).tolist() == [0, 1, HPARAMS["seq_len"] // 2]
    with torch.no_grad():
        full = model(batch)[rows]
        alone = model({key: value[rows] for key, value in batch.items()})
    torch.testing.assert_close(alone, full, rtol=1e-5, atol=1e-6)


def test_dien_auxiliary_loss_comes_with_the_labels_and_is_weighted() -> None:
    batch, labels = fixed_batch()
    model = build("dien")
    torch.manual_seed(1)
    model.train()
    logits, aux = model(batch, labels)
    assert torch.equal(logits, model(batch))  # the same logits as without labels
    assert aux.requires_grad and math.isfinite(aux.item()) and aux.item() > 0
    # It trains the extractor (and the auxiliary network), not the evolution layer.
    aux.backward()
    assert model.extractor.weight_hh_l0.grad is not None
    assert model.extractor.weight_hh_l0.grad.abs().sum() > 0
    assert model.evolution.weight_hh.grad is None

    heavy = build("dien", aux_weight=2.5).train()
    torch.manual_seed(1)
    _, heavy_aux = heavy(batch, labels)
    torch.testing.assert_close(heavy_aux, 2.5 * aux.detach())
    off = build("dien", aux_weight=0).train()
    assert off(batch, labels)[1].item() == 0.0


def test_dien_auxiliary_loss_skips_rows_without_a_next_behavior() -> None:
    batch, labels = fixed_batch()
    model = build("dien").train()
    short = {key: value[:2] for key, value in batch.items()}  # histories of 0 and 1 behaviors
    assert model(short, labels[:2])[1].item() == 0.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"aux_weight": -1.0}, "model.options.aux_weight = -1.0"),
        ({"aux_hidden": []}, "model.options.aux_hidden = []"),
        ({"gru_hidden": 0}, "model.options.gru_hidden = 0"),
        ({"attention": "dot"}, "model.options.attention = 'dot'"),
        ({"attention": "mlp", "attention_hidden": [0]}, "hparams['attention_hidden'] = [0]"),
        ({"mlp_activation": "tanh"}, "model.options.mlp_activation = 'tanh'"),
    ],
)
def test_dien_options_name_bad_values(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        build("dien", **change)


def test_transformer_layer_matches_torch_encoder_layer_and_masks_pad_keys() -> None:
    torch.manual_seed(0)
    layer = TransformerEncoderLayer(width=8, heads=2, ffn_hidden=16).double()
    reference = torch.nn.TransformerEncoderLayer(
        8, 2, 16, dropout=0.0, activation=torch.nn.functional.leaky_relu, batch_first=True
    ).double()
    reference.self_attn.in_proj_weight.data.copy_(layer.qkv.weight)
    reference.self_attn.in_proj_bias.data.copy_(layer.qkv.bias)
    reference.self_attn.out_proj.load_state_dict(layer.out.state_dict())
    reference.linear1.load_state_dict(layer.ffn[0].state_dict())
    reference.linear2.load_state_dict(layer.ffn[2].state_dict())
    reference.norm1.load_state_dict(layer.norm_attention.state_dict())
    reference.norm2.load_state_dict(layer.norm_ffn.state_dict())

    x = torch.randn(3, 5, 8, dtype=torch.double)
    padding = torch.tensor([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.bool)
    out = layer(x, padding)
    expected = reference(x, src_key_padding_mask=padding)
    torch.testing.assert_close(out[~padding], expected[~padding], rtol=1e-10, atol=1e-10)

    changed = x.clone()
    changed[padding] = torch.randn(int(padding.sum()), 8, dtype=torch.double) * 100
    torch.testing.assert_close(layer(changed, padding)[~padding], out[~padding], rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="heads must divide width"):
        TransformerEncoderLayer(width=9, heads=2, ffn_hidden=4)


def test_bst_ignores_pad_positions_and_reads_time_gaps() -> None:
    model = build("bst").eval()
    batch, _ = fixed_batch()
    with torch.no_grad():
        scores = model(batch)
        assert torch.equal(scores, model(with_noise_at_pad(batch)))
        # The age of the behaviors is an input: the same history a week older scores differently.
        older = dict(batch)
        older["hist_ts"] = torch.where(batch["hist_item"] == PAD, PAD, batch["hist_ts"] - 7 * 86_400_000)
        moved = model(older) != scores
    has_history = (batch["hist_item"] != PAD).any(1)
    assert bool(moved[has_history].all()) and not bool(moved[~has_history].any())


def test_bst_dropout_only_in_training_and_options_checked() -> None:
    batch, _ = fixed_batch()
    model = build("bst", dropout=0.3, blocks=2)
    assert len(model.blocks) == 2
    assert not torch.equal(model(batch), model(batch))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(batch), model(batch))
    # width = 2·8 + position_dim 8 = 24: 5 heads do not divide it.
    with pytest.raises(ValueError, match=re.escape("hparams['heads'] = 5")):
        build("bst", heads=5)
    with pytest.raises(ValueError, match=re.escape("model.options.dropout = 1.0")):
        build("bst", dropout=1.0)
    with pytest.raises(ValueError, match=re.escape("model.options.blocks = 0")):
        build("bst", blocks=0)


@pytest.fixture(scope="module")
def ingest_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_training_ingest(tmp_path_factory.mktemp("dien_bst") / "ingest", users=80, impressions=30)


@pytest.mark.parametrize("name", ["dien", "bst"])
def test_one_epoch_of_fit_learns_something(name: str, ingest_dir: Path) -> None:
    model_cfg = ModelConfig(
        name=name, seq_len=20, embedding_dim=8, attention_hidden=[16, 8], mlp_hidden=[32, 16]
    )
    result = fit(load_ingest(ingest_dir), model_cfg, TrainConfig(epochs=1, batch_size=128, lr=1e-2, seed=0))
    valid_auc = result.history[0]["valid_auc"]
    assert math.isfinite(result.history[0]["train_loss"])
    assert 0.5 < valid_auc <= 1.0, result.history
