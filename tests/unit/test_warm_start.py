"""Warm start from a previous model: rows of ids both runs know carry over, new ids start fresh."""

from __future__ import annotations

import torch

from tests.helpers.models import HPARAMS, VOCAB, fixed_batch
from training.models import ModelSpec, build_model
from training.warm_start import warm_start


def _model(vocab: dict[str, int], seed: int, **hparams: object) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(ModelSpec("din", {**HPARAMS, **hparams}, vocab))


def test_grown_vocab_keeps_known_rows_and_fresh_new_rows() -> None:
    old = _model(VOCAB, seed=1)
    grown = {**VOCAB, "item": VOCAB["item"] + 7, "user": VOCAB["user"] + 3}
    new = _model(grown, seed=2)
    fresh = {k: v.clone() for k, v in new.state_dict().items()}

    result = warm_start(new, old.state_dict())

    assert result.grown and not result.skipped
    for name, before in old.state_dict().items():
        after = new.state_dict()[name]
        if after.shape == before.shape:
            torch.testing.assert_close(after, before)
        else:
            rows = before.shape[0]
            torch.testing.assert_close(after[:rows], before)
            torch.testing.assert_close(after[rows:], fresh[name][rows:])
    # Same weights on the ids both know: the same scores for a batch of those ids.
    old.eval(), new.eval()
    batch, _ = fixed_batch()
    torch.testing.assert_close(new(batch), old(batch))


def test_other_widths_are_left_as_initialised() -> None:
    old = _model(VOCAB, seed=1)
    wider = _model(VOCAB, seed=2, mlp_hidden=[64, 16])
    fresh = {k: v.clone() for k, v in wider.state_dict().items()}
    result = warm_start(wider, old.state_dict())
    assert result.skipped and result.copied
    for name in result.skipped:
        torch.testing.assert_close(wider.state_dict()[name], fresh[name])
