"""PAD-column trimming: the widths it reads back, and models that trace whole under torch.compile."""

from __future__ import annotations

import pytest
import torch

from seqrank.schema import PAD
from tests.helpers.models import HPARAMS, VOCAB, fixed_batch
from training.layers import leading_pad_columns, longest_row
from training.models import ModelSpec, build_model


def test_leading_pad_columns_counts_columns_pad_in_every_row() -> None:
    real = torch.tensor([[False, False, False, True], [False, False, True, True]])
    assert leading_pad_columns(real) == 2
    assert leading_pad_columns(real, keep=3) == 1
    assert leading_pad_columns(torch.ones(2, 4, dtype=torch.bool)) == 0
    # Nothing real: every column but `keep` goes.
    assert leading_pad_columns(torch.zeros(2, 4, dtype=torch.bool)) == 3
    assert leading_pad_columns(torch.zeros(2, 4, dtype=torch.bool), keep=4) == 0


def test_longest_row_is_at_least_one() -> None:
    assert longest_row(torch.tensor([[False, True, True], [False, False, True]])) == 2
    assert longest_row(torch.zeros(2, 3, dtype=torch.bool)) == 1


@pytest.mark.parametrize(
    ("name", "change"), [("bst", {}), ("sim", {"search": "hard"}), ("sim", {"search": "soft"})]
)
def test_model_traces_as_one_graph_with_the_same_logits(name: str, change: dict[str, object]) -> None:
    # Eager, the models cut the PAD columns a batch does not need; traced, they keep the full width
    # (no read-back of the width, so no graph break and no recompilation per batch) and must give
    # the same logits, since PAD positions are masked either way.
    torch.manual_seed(0)
    model = build_model(ModelSpec(name, {**HPARAMS, **change}, dict(VOCAB))).eval()
    batch, _ = fixed_batch()
    short = {**batch, "hist_item": batch["hist_item"].clone(), "long_item": batch["long_item"].clone()}
    short["hist_item"][:, :4] = PAD  # leading columns PAD in every row, so eager mode cuts them
    short["long_item"][:, :4] = PAD
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        for b in (batch, short):
            torch.testing.assert_close(compiled(b), model(b), rtol=1e-5, atol=1e-6)
