"""The chunked sigmoid activation unit against the paper's concatenated formula, and its fallbacks."""

from __future__ import annotations

import pytest
import torch

from training.layers import fused
from training.layers.attention import TargetAttention

DIM, LENGTH = 6, 7


def _reference(
    unit: TargetAttention, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores (B, L) and interest (B, D): MLP([e, q, e − q, e ⊙ q]) on every pair, as written in the paper."""
    q = query.unsqueeze(1).expand_as(keys)
    hidden = torch.sigmoid(unit.first(torch.cat([keys, q, keys - q, keys * q], dim=-1)))
    for layer in unit.layers:
        hidden = torch.sigmoid(layer(hidden))
    scores = unit.out(hidden).squeeze(-1) * mask.to(keys.dtype)
    return scores, (scores.unsqueeze(-1) * keys).sum(1)


def _inputs(
    batch: int, hidden: tuple[int, ...]
) -> tuple[TargetAttention, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    unit = TargetAttention(DIM, hidden).double()
    query = torch.randn(batch, DIM, dtype=torch.float64, requires_grad=True)
    keys = torch.randn(batch, LENGTH, DIM, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(batch, LENGTH) > 0.3
    if batch >= 3:
        mask[1] = False  # a row with no history at all
        mask[2, 4:] = False  # left-aligned history, PAD after it
    return unit, query, keys, mask


def _gradients(
    unit: TargetAttention, query: torch.Tensor, keys: torch.Tensor, loss: torch.Tensor
) -> list[torch.Tensor]:
    inputs = [query, keys, *unit.parameters()]
    return list(torch.autograd.grad(loss, inputs))


def _assert_same(actual: list[torch.Tensor], expected: list[torch.Tensor]) -> None:
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10)


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> int:
    """Chunks of 4 candidates, so that a batch of 13 ends on a partial chunk."""
    monkeypatch.setattr(fused, "_CHUNK_ROWS", 4 * LENGTH)
    return 4


@pytest.fixture
def fused_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per run of the fused unit, to tell which path a layer took."""
    calls: list[int] = []
    apply = fused.SigmoidUnit.apply
    monkeypatch.setattr(fused.SigmoidUnit, "apply", lambda *a: calls.append(1) or apply(*a))
    return calls


@pytest.mark.parametrize("hidden", [(9, 5), (4,), (8, 6, 3)])
@pytest.mark.parametrize("batch", [13, 4, 1])
def test_forward_matches_concatenated_formula(
    small_chunks: int, fused_calls: list[int], hidden: tuple[int, ...], batch: int
) -> None:
    unit, query, keys, mask = _inputs(batch, hidden)
    weights = torch.randn(query.shape, dtype=torch.float64)
    interest = unit(query, keys, mask)
    assert fused_calls == [1]
    _, expected = _reference(unit, query, keys, mask)
    torch.testing.assert_close(interest, expected, rtol=1e-10, atol=1e-10)
    _assert_same(
        _gradients(unit, query, keys, (interest * weights).sum()),
        _gradients(unit, query, keys, (expected * weights).sum()),
    )


@pytest.mark.parametrize("hidden", [(9, 5), (4,)])
def test_scores_match_concatenated_formula(
    small_chunks: int, fused_calls: list[int], hidden: tuple[int, ...]
) -> None:
    unit, query, keys, mask = _inputs(13, hidden)
    weights = torch.randn(mask.shape, dtype=torch.float64)
    scores = unit.scores(query, keys, mask)
    assert fused_calls == [1]
    expected, _ = _reference(unit, query, keys, mask)
    torch.testing.assert_close(scores, expected, rtol=1e-10, atol=1e-10)
    assert (scores[~mask] == 0).all()
    _assert_same(
        _gradients(unit, query, keys, (scores * weights).sum()),
        _gradients(unit, query, keys, (expected * weights).sum()),
    )


def test_gradients_through_both_outputs(small_chunks: int) -> None:
    unit, query, keys, mask = _inputs(13, (9, 5))
    scores, interest = fused.sigmoid_unit(query, keys, mask, [unit.first, *unit.layers, unit.out])
    ref_scores, ref_interest = _reference(unit, query, keys, mask)
    w_scores = torch.randn(mask.shape, dtype=torch.float64)
    w_interest = torch.randn(query.shape, dtype=torch.float64)
    _assert_same(
        _gradients(unit, query, keys, (scores * w_scores).sum() + (interest * w_interest).sum()),
        _gradients(unit, query, keys, (ref_scores * w_scores).sum() + (ref_interest * w_interest).sum()),
    )


def test_gradcheck(small_chunks: int) -> None:
    unit, query, keys, mask = _inputs(5, (4, 3))
    params = list(unit.parameters())

    def unit_fn(q: torch.Tensor, k: torch.Tensor, *p: torch.Tensor) -> torch.Tensor:
        return fused.SigmoidUnit.apply(q, k, mask.double(), small_chunks, *p)[1]

    assert torch.autograd.gradcheck(unit_fn, (query, keys, *params))


def test_no_grad_forward_keeps_the_plain_path(small_chunks: int, fused_calls: list[int]) -> None:
    # Inference (evaluation, serving) has nothing to save for backward: the plain ops serve it.
    unit, query, keys, mask = _inputs(13, (9, 5))
    with torch.no_grad():
        assert not fused.sigmoid_unit_applies(unit.activation, keys)
        torch.testing.assert_close(
            unit(query, keys, mask), _reference(unit, query, keys, mask)[1], rtol=1e-10, atol=1e-10
        )
    assert not fused_calls
    assert fused.sigmoid_unit_applies(unit.activation, keys)
    unit(query, keys, mask)
    assert fused_calls == [1]


def _plain(
    unit: TargetAttention, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor, calls: list[int]
) -> torch.Tensor:
    assert not fused.sigmoid_unit_applies(unit.activation, keys)
    out = unit(query, keys, mask)
    assert not calls
    return out


@pytest.mark.parametrize("activation", ["relu", "prelu"])
def test_other_activations_keep_the_plain_path(fused_calls: list[int], activation: str) -> None:
    torch.manual_seed(0)
    unit = TargetAttention(DIM, (5, 3), activation=activation).double()
    query = torch.randn(3, DIM, dtype=torch.float64, requires_grad=True)
    keys = torch.randn(3, LENGTH, DIM, dtype=torch.float64)
    _plain(unit, query, keys, torch.ones(3, LENGTH, dtype=torch.bool), fused_calls)


def test_autocast_keeps_the_plain_path(fused_calls: list[int]) -> None:
    unit, query, keys, mask = _inputs(3, (5, 3))
    unit.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _plain(unit, query.detach().float().requires_grad_(), keys.detach().float(), mask, fused_calls)


def test_compiling_keeps_the_plain_path(fused_calls: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    unit, query, keys, mask = _inputs(3, (5, 3))
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    out = _plain(unit, query, keys, mask, fused_calls)
    torch.testing.assert_close(out, _reference(unit, query, keys, mask)[1], rtol=1e-10, atol=1e-10)


def test_other_devices_keep_the_plain_path(fused_calls: list[int]) -> None:
    unit = TargetAttention(DIM, (5, 3)).to("meta")
    query = torch.empty(3, DIM, device="meta", requires_grad=True)
    keys = torch.empty(3, LENGTH, DIM, device="meta")
    mask = torch.ones(3, LENGTH, dtype=torch.bool, device="meta")
    assert _plain(unit, query, keys, mask, fused_calls).shape == (3, DIM)


def test_shape_errors_name_the_shapes() -> None:
    unit = TargetAttention(DIM, (5, 3))
    with pytest.raises(ValueError, match=r"got \(3, 5\)"):
        unit(torch.randn(3, DIM - 1), torch.randn(3, LENGTH, DIM), torch.ones(3, LENGTH, dtype=torch.bool))
