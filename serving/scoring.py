"""Request-shaped scoring: one user's features computed once, shared by all of the request's candidates.

A ranking request is one user and B candidates. The training batch (training.batch) holds the
user's history once per candidate; a model's `forward` over it repeats the user-side work B times
(DIN's activation unit builds a (D × H_1) kernel per candidate and multiplies it by the same
history; SIM's exact search embeds and projects each candidate's retrieved behaviors, which are
the same for every candidate of a category). The scorers here compute the same function from
compact inputs — the history once, the hard-search rows once per distinct category — with the
model's own modules and weights, so every parameter, table (hashing included) and activation is
the trained one. Their scores equal `model.forward` on the expanded batch within float rounding
(tests/unit/test_serving_scoring.py checks 1e-5). Models without a scorer here go through
`model.forward` on the expanded batch (`expand_batch`).

Notation: B candidates, L history positions, L' the real (non-PAD) ones, C distinct candidate
categories, K search_k, D embedding_dim, H_1 the activation unit's first hidden size.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from seqrank.schema import PAD
from serving import runtime
from training.batch import Batch
from training.layers import TargetAttention, leading_pad_columns
from training.models import CtrModel
from training.models.din import DIN
from training.models.sim import SIM


@dataclass(frozen=True)
class RequestInputs:
    """One request's model inputs, each held once; indices are already mapped to the model's vocab.

    user () int64; item, category (B,) int64; now_ms the impression time; hist_item,
    hist_category, hist_ts (L,) right-aligned; long_* (M,) likewise, for models reading them;
    cat_item, cat_ts (C, K) the hard-search rows of the distinct categories and cat_index (B,) the
    row of each candidate; item_dense (B, F) for models reading it.
    """

    user: int
    item: torch.Tensor
    category: torch.Tensor
    now_ms: int
    sequences: dict[str, torch.Tensor]  # hist_* (L,), long_* (M,)
    cat_item: torch.Tensor | None = None
    cat_ts: torch.Tensor | None = None
    cat_index: torch.Tensor | None = None
    item_dense: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return int(self.item.shape[0])


def expand_batch(inputs: RequestInputs) -> Batch:
    """The training-contract batch (training.batch) of `inputs`: per-candidate rows, the history
    as a stride-0 view (B, L) of the one row, not B copies."""
    b = inputs.size
    batch: Batch = {
        "user": torch.tensor([inputs.user], dtype=torch.int64).expand(b),
        "item": inputs.item,
        "category": inputs.category,
        "ts": torch.full((b,), inputs.now_ms, dtype=torch.int64),
    }
    for name, row in inputs.sequences.items():
        batch[name] = row.unsqueeze(0).expand(b, row.shape[0])
    if inputs.cat_item is not None and inputs.cat_ts is not None and inputs.cat_index is not None:
        batch["cat_item"] = inputs.cat_item[inputs.cat_index]
        batch["cat_ts"] = inputs.cat_ts[inputs.cat_index]
    if inputs.item_dense is not None:
        batch["item_dense"] = inputs.item_dense
    return batch


def shared_attention(
    unit: TargetAttention, query: torch.Tensor, keys: torch.Tensor, counts: torch.Tensor | None = None
) -> torch.Tensor:
    """DIN's activation unit over one history shared by all candidates: (B, D), (L', D) → (B, D).

    `keys` holds only real behaviors (PAD positions score 0 and add nothing, so dropping them is
    exact), each distinct behavior once with `counts` (L',) its repeats: a repeated behavior has
    the same key, so the same score for every candidate, and counts that many times in the sum.

    With the first layer split as in TargetAttention, [e, q, e − q, e ⊙ q] W + b =
    q (W_q − W_d + diag(e) W_p) + e (W_e + W_d) + b; per behavior l the bracket is one (D × H_1)
    matrix, so all B·L' first-layer activations are one (B × D) @ (D × L'·H_1) product plus a
    (L', H_1) term computed once, instead of B per-candidate kernels times B copies of the history.
    """
    batch, length, dim = query.shape[0], keys.shape[0], keys.shape[1]
    if length == 0:
        return query.new_zeros(batch, dim)
    w_e, w_q, w_d, w_p = unit.first.weight.split(dim, dim=1)  # each (H_1, D)
    hidden_1 = w_e.shape[0]
    # The (L', H_1) term rides in the product as the weight of a constant-1 query column: one pass
    # over the (B, L'·H_1) output instead of a broadcast copy and then the product. D is the
    # kernel's inner dimension, so building it runs along contiguous rows (63 µs at L' = 50
    # where the (D + 1, L', H_1) layout took 180).
    kernel = query.new_empty(length, hidden_1, dim + 1)  # (L', H_1, D + 1)
    torch.addcmul((w_q - w_d).unsqueeze(0), keys.unsqueeze(1), w_p.unsqueeze(0), out=kernel[..., :dim])
    kernel[..., dim] = torch.addmm(unit.first.bias, keys, (w_e + w_d).t())  # (L', H_1)
    query = torch.cat([query, query.new_ones(batch, 1)], dim=1)  # (B, D + 1)
    session = runtime.session_of(unit)
    if session is not None:  # the rest of the unit in ONNX Runtime (serving.runtime)
        scores = session.scores(query, kernel)  # (B, L')
    else:
        hidden = torch.mm(query, kernel.view(length * hidden_1, dim + 1).t())  # (B, L'·H_1)
        hidden = _activate(unit, 0, hidden.view(batch * length, hidden_1))  # (B·L', H_1)
        for i, linear in enumerate(unit.layers, start=1):
            hidden = _activate(unit, i, linear(hidden))
        scores = unit.out(hidden).view(batch, length)  # (B, L')
    if counts is not None:
        scores = scores * counts
    return scores @ keys  # (B, D)


def _activate(unit: TargetAttention, layer: int, hidden: torch.Tensor) -> torch.Tensor:
    if unit.activation == "sigmoid":
        return hidden.sigmoid_()
    return unit.activations[layer](hidden)


def _history_keys(model: DIN | SIM, inputs: RequestInputs) -> tuple[torch.Tensor, torch.Tensor | None]:
    """[item ⊕ category] embeddings of the distinct real history behaviors (L', 2D), and how often
    each occurs (L',), or None when none repeats. Users revisit items, and every repeat would
    cost the activation unit B more rows."""
    item, category = inputs.sequences["hist_item"], inputs.sequences["hist_category"]
    real = item != PAD
    item, category = item[real], category[real]  # (L',)
    counts = None
    if item.shape[0]:
        # One int64 key per (item, category) pair, so the distinct pairs come from a 1-D unique
        # (unique over columns of a (2, L') tensor walks them one by one: ~0.3 ms a request).
        # Keys sort as the pairs do, item first; ids are below 2^31 (vocab indexes).
        keys, repeats = torch.unique(item * 2**31 + category, return_counts=True)
        if keys.shape[0] < item.shape[0]:
            item, category = keys // 2**31, keys % 2**31
            counts = repeats.to(torch.get_default_dtype())
    tables = model.embeddings
    return torch.cat([tables.item_table(item), tables.category_table(category)], dim=-1), counts


def _user_and_target(model: DIN | SIM, inputs: RequestInputs) -> tuple[torch.Tensor, torch.Tensor]:
    """User (B, D) as a stride-0 view of its one row, and the candidates [item ⊕ category] (B, 2D)."""
    tables = model.embeddings
    user = tables.user_table(torch.tensor([inputs.user], dtype=torch.int64)).expand(inputs.size, -1)
    target = torch.cat([tables.item_table(inputs.item), tables.category_table(inputs.category)], dim=-1)
    return user, target


def _dense(model: DIN | SIM, inputs: RequestInputs, features: torch.Tensor) -> torch.Tensor:
    if model.dense is None:
        return features
    batch = {} if inputs.item_dense is None else {"item_dense": inputs.item_dense}
    return model.with_dense(batch, features)


def score_din(model: DIN, inputs: RequestInputs) -> torch.Tensor:
    """DIN's logits (B,) (training.models.din) with the history embedded and attended once."""
    user, target = _user_and_target(model, inputs)
    interest = shared_attention(model.attention, target, *_history_keys(model, inputs))  # (B, 2D)
    features = torch.cat([user, interest, target, interest * target], dim=1)  # (B, 7D)
    return runtime.tower(model.mlp, _dense(model, inputs, features)).squeeze(1)


def score_sim_hard(model: SIM, inputs: RequestInputs) -> torch.Tensor:
    """Hard-search SIM's logits (B,) (training.models.sim) with the retrieved behaviors embedded
    and projected once per category.

    Every candidate of a category retrieves the same K behaviors (C, K, 3D). The exact search's
    logits (W_a q) · (W_b z) are computed as ((W_bᵀ W_a q) · z), the query projected into the
    behaviors' space, so the keys are never projected per candidate.
    """
    assert inputs.cat_item is not None and inputs.cat_ts is not None and inputs.cat_index is not None
    user, target = _user_and_target(model, inputs)
    short_term = shared_attention(model.short_attention, target, *_history_keys(model, inputs))  # (B, 2D)

    # One row per distinct category: the candidates' category, as the model reads it. The rows
    # are right-aligned, and the columns that are PAD in every row add nothing (masked), so only
    # the longest row's columns are embedded and attended (in the serving benchmark's world 80% of
    # the K slots are PAD: 1,000 behaviors over 100 categories).
    found_item, found_ts, rows = inputs.cat_item, inputs.cat_ts, inputs.cat_index
    cut = leading_pad_columns(found_item != PAD)
    found_item, found_ts = found_item[:, cut:], found_ts[:, cut:]
    row_category = torch.zeros(found_item.shape[0], dtype=torch.int64).index_copy_(0, rows, inputs.category)
    found = found_item != PAD  # (C, K)
    found_category = torch.where(found, row_category.unsqueeze(1), PAD)
    tables = model.embeddings
    now = torch.full((found_item.shape[0],), inputs.now_ms, dtype=torch.int64)
    retrieved = torch.cat(
        [
            tables.item_table(found_item),
            tables.category_table(found_category),
            model.time_gap(now, found_ts, found),
        ],
        dim=-1,
    )  # (C, K, 3D)

    esu = model.exact_search
    b, heads = inputs.size, esu.heads
    query = esu.query_proj(target).view(b, heads, esu.head_dim)  # (B, h, H_d)
    key_weight = esu.key_proj.weight.view(heads, esu.head_dim, esu.key_dim)  # (h, H_d, 3D)
    query = torch.einsum("bhd,hde->bhe", query, key_weight) / math.sqrt(esu.head_dim)  # (B, h, 3D)
    long_term = category_attention(query, retrieved, found, rows)  # (B, h·3D)

    intensity = torch.log1p(found.sum(dim=1, keepdim=True).to(long_term.dtype)).index_select(0, rows)
    features = torch.cat([user, long_term, short_term, target, intensity], dim=1)
    return runtime.tower(model.mlp, _dense(model, inputs, features)).squeeze(1)


def category_attention(
    query: torch.Tensor, retrieved: torch.Tensor, found: torch.Tensor, rows: torch.Tensor
) -> torch.Tensor:
    """Softmax attention of each candidate's heads over its category's retrieved behaviors:
    query (B, h, E), retrieved (C, K, E), found (C, K), rows (B,) → (B, h·E); a row with nothing
    found gives zeros.

    The candidates of a category share its K keys, so they are attended together: each category's
    candidates fill the slots of one (n·h, E) block (n the largest number of candidates of a
    category), and two batched products over C blocks replace B gathered (K, E) copies of the
    keys. When the categories' sizes are so uneven that the padded slots would outnumber twice
    the candidates, each candidate gathers its keys instead.
    """
    batch, heads, width = query.shape
    n_rows = found.shape[0]
    counts = torch.bincount(rows, minlength=n_rows)
    slots = int(counts.max()) if batch else 0
    real = found.unsqueeze(1)  # (C or B, 1, K) below
    if n_rows * slots > 2 * batch:
        keys = retrieved.index_select(0, rows)  # (B, K, E)
        logits = torch.bmm(query, keys.transpose(1, 2))  # (B, h, K)
        real = found.index_select(0, rows).unsqueeze(1)
        logits = logits.masked_fill_(~real, torch.finfo(logits.dtype).min)
        weights = torch.softmax(logits, dim=-1).mul_(real)
        return torch.bmm(weights, keys).flatten(1)
    # Candidate i goes to slot rows[i]·n + (its rank among the candidates of rows[i]).
    order = torch.argsort(rows, stable=True)
    first = torch.cumsum(counts, 0) - counts  # (C,) position of each category's first candidate
    slot = torch.empty_like(rows)
    slot[order] = rows[order] * slots + torch.arange(batch) - first[rows[order]]
    blocks = query.new_zeros(n_rows * slots, heads, width)
    blocks[slot] = query
    logits = torch.bmm(blocks.view(n_rows, slots * heads, width), retrieved.transpose(1, 2))  # (C, n·h, K)
    logits = logits.masked_fill_(~real, torch.finfo(logits.dtype).min)
    weights = torch.softmax(logits, dim=-1).mul_(real)
    attended = torch.bmm(weights, retrieved)  # (C, n·h, E)
    return attended.view(n_rows * slots, heads * width)[slot]


def scorer_for(model: CtrModel) -> Callable[[CtrModel, RequestInputs], torch.Tensor] | None:
    """The request-shaped scorer of `model`, or None: score it with `model.forward` on `expand_batch`.

    Exact-type checks: a subclass may change the forward these scorers mirror.
    """
    if type(model) is DIN:
        return score_din  # type: ignore[return-value]
    if type(model) is SIM and model.search == "hard":
        return score_sim_hard  # type: ignore[return-value]
    return None


def prepare(model: CtrModel, name: runtime.Runtime, cores: int = 1) -> int:
    """`runtime.prepare` for the served model: its activation units, and its MLP tower when its
    request-shaped scorer runs the tower (`runtime.tower`); how many modules got sessions."""
    return runtime.prepare(model, name, cores, with_tower=scorer_for(model) is not None)


def logits(model: CtrModel, inputs: RequestInputs, fast: bool = True) -> torch.Tensor:
    """The model's logits (B,) for `inputs`: the request-shaped scorer when there is one and
    `fast`, else `model.forward` on the expanded batch. Call under torch.inference_mode()."""
    scorer = scorer_for(model) if fast else None
    if scorer is None:
        return model(expand_batch(inputs))
    return scorer(model, inputs)


def sigmoid_scores(model: CtrModel, inputs: RequestInputs, fast: bool = True) -> np.ndarray:
    """Click probabilities (B,) float32."""
    with torch.inference_mode():
        return torch.sigmoid(logits(model, inputs, fast).float()).numpy()
