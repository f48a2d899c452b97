"""MIMN: Multi-channel user Interest Memory Network (Pi et al., KDD 2019, arXiv:1905.09248)."""

from __future__ import annotations

import torch
from torch import nn

from seqrank.schema import PAD
from training.layers.attention import TargetAttention
from training.layers.hparams import layer_sizes, non_negative, positive_int
from training.layers.memory import UserInterestMemory
from training.layers.mlp import MLP
from training.models import register
from training.models.base import Batch, ModelSpec
from training.models.sequence import BehaviorSequenceModel


@register("mimn")
class MIMN(BehaviorSequenceModel):
    """MIMN: the long behavior history is written into a memory; the candidate reads it.

    "Practice on Long Sequential User Behavior Modeling for Click-Through Rate Prediction" (Pi et
    al., KDD 2019). The User Interest Center (UIC) keeps a memory per user that every new
    behavior updates, so serving reads a fixed-size state instead of the whole history; here the
    state is built from the long history at every forward, through the incremental update the
    server would run (`training.layers.memory.UserInterestMemory`).

    Notation: B batch, M long history length (hparams long_seq_len), N = min(memory_steps, M)
    behaviors written, D embedding_dim, E = 2D, m memory_slots. Items are [item ⊕ category].

        user       (B, D)
        target     (B, E)
        behaviors  (B, N, E)       the latest N of long_item / long_category, PAD masked
        state      memory (B, m, E), MIU channels (B, m, E) after writing the N behaviors in order
        memory read    (B, E)      NTM read of the memory with a key and strength from the target
        channel read   (B, E)      DIN activation unit of the target over the m MIU channels
        MLP([user, target, memory read, channel read]) with Dice → logit (B,)

    The memory update is sequential: N steps per forward, each a GRU controller step, two
    addressings over m slots, an erase/add write and an MIU GRU step on the top-k slots, forward
    and backward. `memory_steps` bounds N (the paper writes the whole history; on a CPU 100
    steps keep training affordable, at about ten times DIN's cost per sample with L = 100); batches
    hold only those N (`sequence_lengths`).

    Training-mode forwards stash memory_reg · the memory utilization loss (the spread of the
    write shares over the slots, `UserInterestMemory.utilization_loss`) for `auxiliary_loss`.

    Hparams: embedding_dim, seq_len (unused here, required by the base), long_seq_len,
    attention_hidden (the channel attention), mlp_hidden, embedding_l2, and model options:
        memory_slots       m, default 8
        memory_steps       N's bound, default 100
        controller_hidden  the GRU controller's size, default E
        miu_top_k          MIU channels updated per behavior, default 1
        memory_reg         weight of the utilization loss, default 0.1 (0 disables it)
    """

    required_inputs = ("user", "item", "category", "long_item", "long_category")

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        hp, dim = spec.hparams, self.dim
        self.long_seq_len = positive_int(hp, "long_seq_len")
        slots = positive_int(hp, "memory_slots", 8)
        self.memory_steps = positive_int(hp, "memory_steps", 100)
        controller = positive_int(hp, "controller_hidden", 2 * dim)
        top_k = positive_int(hp, "miu_top_k", 1)
        if top_k > slots:
            raise ValueError(f"hparams['miu_top_k'] = {top_k}: must be <= memory_slots = {slots}")
        self.memory_reg = non_negative(hp, "memory_reg", 0.1)
        self.memory = UserInterestMemory(2 * dim, slots, controller, top_k)
        self.target_key = nn.Linear(2 * dim, 2 * dim + 1)  # read key and strength from the target
        self.channel_attention = TargetAttention(
            2 * dim, layer_sizes(hp, "attention_hidden"), activation="sigmoid"
        )
        self.mlp = MLP(
            7 * dim + self.enable_dense(), layer_sizes(hp, "mlp_hidden"), activation="dice", out_dim=1
        )
        self._utilization: torch.Tensor | None = None

    def sequence_lengths(self) -> dict[str, int]:
        """Batches need only the N long-history positions the memory writes."""
        return {**super().sequence_lengths(), "long": min(self.memory_steps, self.long_seq_len)}

    def written(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The long-history ids the memory reads: the latest N of long_item, long_category (B, N)."""
        steps = self.memory_steps
        return batch["long_item"][:, -steps:], batch["long_category"][:, -steps:]

    def target_and_behaviors(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Candidate (B, E), the behaviors to write (B, N, E) and their mask (B, N); one gather per table."""
        items, categories = self.written(batch)
        item, behavior_item = self.embeddings.item_table.lookup(batch["item"], items)
        category, behavior_category = self.embeddings.category_table.lookup(batch["category"], categories)
        target = torch.cat([item, category], dim=-1)
        behaviors = torch.cat([behavior_item, behavior_category], dim=-1)
        return target, behaviors, items != PAD

    def forward(self, batch: Batch) -> torch.Tensor:
        """Logits (B,) for a batch holding `required_inputs` (see training.models.base)."""
        user = self.embeddings.user(batch)  # (B, D)
        target, behaviors, mask = self.target_and_behaviors(batch)  # (B, E), (B, N, E), (B, N)
        state = self.memory.advance(self.memory.initial_state(len(target)), behaviors, mask)
        self._utilization = self.memory.utilization_loss(state) if self.training else None

        query = self.target_key(target)  # (B, E + 1)
        strength = 1.0 + nn.functional.softplus(query[:, -1])  # (B,)
        memory_read = self.memory.read(state.memory, torch.tanh(query[:, :-1]), strength)  # (B, E)
        every_channel = torch.ones(state.channels.shape[:2], dtype=torch.bool, device=target.device)
        channel_read = self.channel_attention(target, state.channels, every_channel)  # (B, E)
        features = torch.cat([user, target, memory_read, channel_read], dim=1)  # (B, 7D)
        features = self.with_dense(batch, features)  # (B, 7D + dense width) when hparams dense is on
        return self.mlp(features).squeeze(1) + self.position_logit(batch)

    def auxiliary_loss(self, labels: torch.Tensor | None = None) -> torch.Tensor:
        """memory_reg · the utilization loss of the last training-mode forward; zero otherwise."""
        if self._utilization is None or self.memory_reg == 0.0:
            return super().auxiliary_loss(labels)
        return self.memory_reg * self._utilization

    def regularization(self, batch: Batch) -> torch.Tensor:
        """embedding_l2 · Σ ||w||² over the embedding rows this batch reads (only N long behaviors)."""
        if self.l2 == 0.0:
            return super().regularization(batch)
        items, categories = self.written(batch)
        read = {**batch, "long_item": items, "long_category": categories}
        return self.l2 * self.embeddings.batch_l2(read, (*self.required_inputs, *self.optional_inputs))
