"""DIN target attention: the local activation unit that weighs each past behavior by the candidate."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn
from torch.autograd.function import FunctionCtx, once_differentiable

from training.layers.activation import make_activation

ATTENTION_ACTIVATIONS = ("sigmoid", "prelu", "relu")


class TargetAttention(nn.Module):
    """DIN activation unit (Zhou et al. 2018, "Deep Interest Network for CTR Prediction", fig. 2).

    Notation: B batch, L history length, D key/query size (all embeddings of one behavior,
    concatenated), H_1..H_k the hidden sizes.

    For each behavior e_l and candidate q the unit scores MLP([e, q, e − q, e ⊙ q]) and returns
    Σ_l score_l · e_l over the non-PAD positions. No softmax, as in the paper, so the output keeps
    the intensity of the user's interest.

    The first layer is never applied to the (B, L, 4D) concatenation. With its weight split as
    W = [W_e; W_q; W_d; W_p] over the four blocks,
        [e, q, e − q, e ⊙ q] W = e (W_e + W_d) + q (W_q − W_d) + e (diag(q) W_p),
    so the q-only term is computed once per candidate (B, H_1) and each behavior needs one
    (D × H_1) product with a per-candidate kernel (W_e + W_d + diag(q) W_p) instead of a
    (4D × H_1) one. The result is mathematically identical to the concatenated form; the
    parameters keep its layout, so `first` is exactly the paper's first layer. In fp32/fp64
    training on CPU the sigmoid unit runs as `_SigmoidUnit`, a few candidates at a time.

    Args:
        dim: D.
        hidden: hidden sizes of the activation unit, e.g. (80, 40).
        activation: "sigmoid" (the authors' released code), "prelu" or "relu". Dice is not offered
            here: its batch statistics would be polluted by PAD positions.

    Shapes: query (B, D), keys (B, L, D), mask (B, L) bool (True = real behavior) → (B, D).
    """

    def __init__(self, dim: int, hidden: Sequence[int] = (80, 40), activation: str = "sigmoid") -> None:
        super().__init__()
        if dim <= 0:
            raise ValueError(f"attention dim = {dim}: must be > 0")
        if not hidden or any(h <= 0 for h in hidden):
            raise ValueError(f"attention hidden = {list(hidden)}: needs at least one layer, every size > 0")
        if activation not in ATTENTION_ACTIVATIONS:
            raise ValueError(
                f"attention activation {activation!r}: expected one of {', '.join(ATTENTION_ACTIVATIONS)}"
            )
        self.dim = dim
        self.activation = activation
        sizes = [4 * dim, *hidden]
        self.first = nn.Linear(sizes[0], sizes[1])
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(hidden))
        self.activations = nn.ModuleList(make_activation(activation, size) for size in hidden)
        self.out = nn.Linear(sizes[-1], 1)

    def scores(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Attention weight of every behavior: (B, D), (B, L, D), (B, L) → (B, L), 0 at PAD."""
        self._check(query, keys)
        if self._fuses(keys):
            return self._fused(query, keys, mask)[0]
        batch, length, dim = keys.shape
        w_e, w_q, w_d, w_p = self.first.weight.split(dim, dim=1)  # each (H_1, D)
        per_query = torch.addmm(self.first.bias, query, (w_q - w_d).t())  # (B, H_1)
        kernel = torch.addcmul((w_e + w_d).t(), query.unsqueeze(2), w_p.t())  # (B, D, H_1)
        hidden = torch.baddbmm(per_query.unsqueeze(1), keys, kernel)  # (B, L, H_1)
        hidden = self._activate(0, hidden)  # (B·L, H_1)
        for i, linear in enumerate(self.layers, start=1):
            hidden = self._activate(i, linear(hidden))  # (B·L, H_i)
        raw = self.out(hidden).view(batch, length)
        return raw * mask.to(raw.dtype)

    def _activate(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        """Activation of hidden layer `layer`: (..., H) → (N, H)."""
        if self.activation == "sigmoid":
            # In place, as (B·L, H) pre-activations are the largest tensors of the model and neither
            # baddbmm nor linear needs its output for backward; on the base tensor, not a view of it,
            # or autograd copies the whole base.
            return hidden.sigmoid_().view(-1, hidden.shape[-1])
        return self.activations[layer](hidden.view(-1, hidden.shape[-1]))

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self._fuses(keys):
            self._check(query, keys)
            return self._fused(query, keys, mask)[1]
        weights = self.scores(query, keys, mask)  # (B, L)
        return torch.bmm(weights.unsqueeze(1), keys).squeeze(1)  # (B, D)

    def _check(self, query: torch.Tensor, keys: torch.Tensor) -> None:
        batch, _, dim = keys.shape
        if dim != self.dim or query.shape != (batch, dim):
            raise ValueError(
                f"attention expects query (B, {self.dim}) and keys (B, L, {self.dim}); "
                f"got {tuple(query.shape)} and {tuple(keys.shape)}"
            )

    def _fuses(self, keys: torch.Tensor) -> bool:
        """Whether `_SigmoidUnit` applies: training the sigmoid unit, eager fp32/fp64 on CPU.

        Autocast, other devices and compiled graphs keep the plain ops, which they know how to cast,
        place and trace. So does inference (no grad): with nothing to keep for backward the plain
        ops are as fast, and much faster when every candidate shares one history (serving), which
        they take as one product over a stride-0 batch.
        """
        return (
            torch.is_grad_enabled()
            and self.activation == "sigmoid"
            and keys.device.type == "cpu"
            and keys.dtype in (torch.float32, torch.float64)
            and not torch.is_autocast_enabled("cpu")
            and not torch.compiler.is_compiling()
        )

    def _fused(
        self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        params = [t for layer in (self.first, *self.layers, self.out) for t in (layer.weight, layer.bias)]
        chunk = max(1, _CHUNK_ROWS // max(1, keys.shape[1]))
        return _SigmoidUnit.apply(query, keys, mask.to(keys.dtype), chunk, *params)


class _SigmoidUnit(torch.autograd.Function):
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
