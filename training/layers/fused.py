"""Fused CPU autograd functions behind the plain layers: same values and gradients, fewer memory passes.

Each layer (TargetAttention, Embedding, batch_embedding_l2) reads like its paper and calls in here
where a fused function applies; every function below is checked against the plain formula in
tests/unit/test_attention_fused.py and tests/unit/test_embeddings.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.autograd.function import FunctionCtx, once_differentiable

from seqrank.schema import PAD

# --- DIN activation unit (training.layers.attention.TargetAttention) ---------------------------


def sigmoid_unit_applies(activation: str, keys: torch.Tensor) -> bool:
    """Whether `sigmoid_unit` serves a DIN activation unit: training the sigmoid unit, eager
    fp32/fp64 on CPU.

    Autocast, other devices and compiled graphs keep the plain ops, which they know how to cast,
    place and trace. So does inference (no grad): with nothing to keep for backward the plain
    ops are as fast, and much faster when every candidate shares one history (serving), which
    they take as one product over a stride-0 batch.
    """
    return (
        torch.is_grad_enabled()
        and activation == "sigmoid"
        and keys.device.type == "cpu"
        and keys.dtype in (torch.float32, torch.float64)
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
    )


def sigmoid_unit(
    query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor, linears: Sequence[nn.Linear]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The sigmoid activation unit with layers `linears` (first, hidden..., out) as `SigmoidUnit`:
    query (B, D), keys (B, L, D), mask (B, L) bool → scores (B, L), 0 at PAD, and interest (B, D)."""
    params = [t for layer in linears for t in (layer.weight, layer.bias)]
    chunk = max(1, _CHUNK_ROWS // max(1, keys.shape[1]))
    return SigmoidUnit.apply(query, keys, mask.to(keys.dtype), chunk, *params)


class SigmoidUnit(torch.autograd.Function):
    """The sigmoid activation unit and its weighted sum, run `chunk` candidates at a time.

    Inputs: query (B, D), keys (B, L, D), mask (B, L) as 0/1 floats, chunk, then weight and bias
    of `first`, of each later hidden layer and of `out`. Returns (scores (B, L), 0 at PAD;
    interest (B, D)).

    The unpacked unit makes a dozen passes over (B·L, H) tensors (33 MB at B = 1024, L = 100,
    H = 80): the per-candidate kernel, bias broadcast, sigmoid, sigmoid backward, the reductions
    of the kernel's gradient over the batch, the weighted sum's backward. Each goes to memory.
    Here a chunk of candidates runs forward from the first product to its scores while its
    activations stay in cache, and backward reads the chunk's saved sigmoid outputs once and goes
    from its scores to its inputs in cache; only the parameter gradients are summed across chunks.
    The sigmoid outputs are kept for backward, as the unpacked unit does: recomputing them per
    chunk (checkpointing) cost more in products than it saved in memory traffic.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx,
        query: torch.Tensor,
        keys: torch.Tensor,
        mask: torch.Tensor,
        chunk: int,
        *params: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch, length, dim = keys.shape
        w_e, w_q, w_d, w_p = params[0].split(dim, dim=1)  # each (H_1, D)
        base = w_e + w_d
        per_query = torch.addmm(params[1], query, (w_q - w_d).t())  # (B, H_1)
        scores = keys.new_empty(batch, length)
        interest = keys.new_empty(batch, dim)
        saved = []
        for start in range(0, batch, chunk):
            stop = min(start + chunk, batch)
            kernel = torch.addcmul(base, query[start:stop].unsqueeze(1), w_p)  # (c, H_1, D)
            first = torch.baddbmm(
                per_query[start:stop].unsqueeze(1), keys[start:stop], kernel.transpose(1, 2)
            )
            hidden = [first.sigmoid_().view(-1, first.shape[-1])]  # (c·L, H_1)
            for i in range(2, len(params) - 2, 2):
                hidden.append(torch.addmm(params[i + 1], hidden[-1], params[i].t()).sigmoid_())
            chunk_scores = scores[start:stop]
            torch.addmm(params[-1], hidden[-1], params[-2].t(), out=chunk_scores.view(-1, 1))
            chunk_scores.mul_(mask[start:stop])
            torch.bmm(chunk_scores.unsqueeze(1), keys[start:stop], out=interest[start:stop].unsqueeze(1))
            saved += hidden
        # Intermediates through save_for_backward too, so autograd frees them after backward
        # (unless retain_graph) like any saved tensor.
        ctx.chunk, ctx.params = chunk, len(params)  # type: ignore[attr-defined]
        ctx.save_for_backward(query, keys, mask, scores, *params, *saved)
        ctx.set_materialize_grads(False)
        return scores, interest

    @staticmethod
    @once_differentiable
    def backward(  # type: ignore[override]
        ctx: FunctionCtx, grad_scores: torch.Tensor | None, grad_interest: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, ...]:
        query, keys, mask, scores, *rest = ctx.saved_tensors  # type: ignore[attr-defined]
        if grad_scores is None and grad_interest is None:
            return (None,) * (4 + ctx.params)  # type: ignore[attr-defined]
        params, saved = rest[: ctx.params], rest[ctx.params :]  # type: ignore[attr-defined]
        chunk, depth = ctx.chunk, len(params) // 2 - 1  # type: ignore[attr-defined]
        batch, length, dim = keys.shape
        w_e, w_q, w_d, w_p = params[0].split(dim, dim=1)
        base = w_e + w_d
        grad_keys = torch.empty_like(keys) if grad_interest is not None else torch.zeros_like(keys)
        grad_query = torch.empty_like(query)
        grad_per_query = keys.new_empty(batch, w_p.shape[0])  # (B, H_1)
        grad_base, grad_w_p = torch.zeros_like(base), torch.zeros_like(w_p)
        grads = [torch.zeros_like(p) for p in params[2:]]
        for n, start in enumerate(range(0, batch, chunk)):
            stop = min(start + chunk, batch)
            hidden, chunk_keys = saved[n * depth : (n + 1) * depth], keys[start:stop]
            if grad_interest is None:
                assert grad_scores is not None
                grad = grad_scores[start:stop] * mask[start:stop]  # (c, L)
            else:
                grad_chunk = grad_interest[start:stop].unsqueeze(1)  # (c, 1, D)
                torch.mul(scores[start:stop].unsqueeze(2), grad_chunk, out=grad_keys[start:stop])
                grad = torch.bmm(grad_chunk, chunk_keys.transpose(1, 2)).squeeze(1)  # (c, L)
                if grad_scores is not None:
                    grad += grad_scores[start:stop]
                grad.mul_(mask[start:stop])
            grad = grad.view(-1, 1)  # (c·L, 1)
            grads[-2].addmm_(grad.t(), hidden[-1])
            grads[-1] += grad.sum()
            delta = grad * params[-2]  # (c·L, H_k)
            for i in range(len(hidden) - 1, 0, -1):
                delta = torch.ops.aten.sigmoid_backward.grad_input(delta, hidden[i], grad_input=delta)
                grads[2 * i - 2].addmm_(delta.t(), hidden[i - 1])
                grads[2 * i - 1] += delta.sum(0)
                delta = torch.mm(delta, params[2 * i])
            delta = torch.ops.aten.sigmoid_backward.grad_input(delta, hidden[0], grad_input=delta)
            delta = delta.view(stop - start, length, -1)  # (c, L, H_1)
            torch.sum(delta, 1, out=grad_per_query[start:stop])
            kernel = torch.addcmul(base, query[start:stop].unsqueeze(1), w_p)  # (c, H_1, D)
            grad_keys[start:stop].baddbmm_(delta, kernel)
            grad_kernel = torch.bmm(delta.transpose(1, 2), chunk_keys)  # (c, H_1, D)
            grad_base += grad_kernel.sum(0)
            grad_w_p += (grad_kernel * query[start:stop].unsqueeze(1)).sum(0)
            torch.sum(grad_kernel.mul_(w_p), 1, out=grad_query[start:stop])
        grad_query.addmm_(grad_per_query, w_q - w_d)
        grad_w_qd = grad_per_query.t() @ query  # (H_1, D), of W_q − W_d
        grad_first = torch.cat([grad_base, grad_w_qd, grad_base - grad_w_qd, grad_w_p], dim=1)
        return grad_query, grad_keys, None, None, grad_first, grad_per_query.sum(0), *grads


# Candidates per chunk: (chunk·L, 80) fp32 activations of ~2 MB, one core's L2. Measured at
# L = 100: 64 candidates beat 32 and 128.
_CHUNK_ROWS = 6400


# --- Embedding gather (training.layers.embedding.Embedding) -----------------------------------


def gather_applies(weight: torch.Tensor) -> bool:
    """Whether `gather_rows` serves an embedding lookup: a table on CPU."""
    return weight.device.type == "cpu"


def gather_rows(weight: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """nn.functional.embedding(rows, weight, padding_idx=PAD) as `GatherRows`: (R, D), (...) → (..., D).

    With no gradient to record (serving, evaluation) it is the bare gather: the autograd
    Function's own overhead was ~9 µs of a 25 µs lookup, a few lookups per scored request.
    """
    if not (weight.requires_grad and torch.is_grad_enabled()):
        return _gather(weight, rows)
    return GatherRows.apply(weight, rows)


def _gather(weight: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return weight.index_select(0, ids.reshape(-1)).view(*ids.shape, weight.shape[1])


class GatherRows(torch.autograd.Function):
    """Row gather whose backward is one index_add_, PAD row zeroed.

    Same result as nn.functional.embedding with padding_idx, whose CPU backward
    (embedding_dense_backward) measured 2.5-5x slower here for the (B·L) ids of a history batch.
    """

    @staticmethod
    def forward(ctx, weight: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(ids)
        ctx.rows = weight.shape[0]
        return _gather(weight, ids)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (ids,) = ctx.saved_tensors
        flat = grad.reshape(-1, grad.shape[-1])
        grad_weight = flat.new_zeros(ctx.rows, flat.shape[1]).index_add_(0, ids.reshape(-1), flat)
        grad_weight[PAD] = 0
        return grad_weight, None


# --- Mini-batch aware L2 (training.layers.regularization.batch_embedding_l2) -----------------


def used_rows_l2(weight: torch.Tensor, used: torch.Tensor) -> torch.Tensor:
    """weight[used].square().sum() as `UsedRowsL2`: (R, D), (R,) bool → scalar."""
    return UsedRowsL2.apply(weight, used)


class UsedRowsL2(torch.autograd.Function):
    """Σ ||w_r||² over the rows r with used[r]: (R, D), (R,) bool → scalar.

    Same value and gradient as weight[used].square().sum(), whose backward scatters into a zero
    table with a serial accumulating index_put; the gradient here, 2·g·w on used rows and 0
    elsewhere, is one parallel pass over the table, which the table's own gradient touches anyway.
    """

    @staticmethod
    def forward(ctx, weight: torch.Tensor, used: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(weight, used)
        rows = weight.index_select(0, used.nonzero().squeeze(1)).reshape(-1)
        return torch.dot(rows, rows)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        weight, used = ctx.saved_tensors
        scale = used.to(weight.dtype).mul_(2 * grad)  # (R,)
        return weight * scale.unsqueeze(1), None
