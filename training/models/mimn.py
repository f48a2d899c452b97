"""MIMN: Multi-channel user Interest Memory Network (Pi et al., KDD 2019, arXiv:1905.09248)."""

from __future__ import annotations

from typing import overload

import torch
from pydantic import Field, NonNegativeFloat, PositiveInt, model_validator
from torch import nn

from seqrank.schema import PAD
from training.batch import Batch
from training.layers.attention import TargetAttention
from training.layers.hparams import layer_sizes, positive_int
from training.layers.memory import UserInterestMemory
from training.layers.mlp import MLP
from training.models.base import ModelSpec
from training.models.sequence import BehaviorSequenceModel, DenseOptions


class MIMNOptions(DenseOptions):
    memory_slots: PositiveInt = Field(8, description="m, the NTM memory's slots")
    memory_steps: PositiveInt = Field(100, description="bound on N, the latest behaviors written")
    controller_hidden: PositiveInt | None = Field(None, description="GRU controller size; None: 2D")
    miu_top_k: PositiveInt = Field(1, description="MIU channels updated per behavior")
    memory_reg: NonNegativeFloat = Field(0.1, description="weight of the utilization loss; 0 disables it")

    @model_validator(mode="after")
    def _top_k_within_slots(self) -> MIMNOptions:
        if self.miu_top_k > self.memory_slots:
            raise ValueError(f"miu_top_k = {self.miu_top_k} must be <= memory_slots = {self.memory_slots}")
        return self


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

    Given the click labels (training), forward also returns memory_reg · the memory utilization
    loss (the spread of the write shares over the slots, `UserInterestMemory.utilization_loss`).

    Hparams: embedding_dim, seq_len (unused here, required by the base), long_seq_len,
    attention_hidden (the channel attention), mlp_hidden, embedding_l2, and model options:
        memory_slots       m, default 8
        memory_steps       N's bound, default 100
        controller_hidden  the GRU controller's size, default E
        miu_top_k          MIU channels updated per behavior, default 1
        memory_reg         weight of the utilization loss, default 0.1 (0 disables it)
    """

    Options = MIMNOptions
    options: MIMNOptions
    has_auxiliary_loss = True
    required_inputs = ("user", "item", "category", "long_item", "long_category")

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        hp, dim, opts = spec.hparams, self.dim, self.options
        self.long_seq_len = positive_int(hp, "long_seq_len")
        self.memory_steps = opts.memory_steps
        self.memory_reg = opts.memory_reg
        controller = opts.controller_hidden or 2 * dim
        self.memory = UserInterestMemory(2 * dim, opts.memory_slots, controller, opts.miu_top_k)
        self.target_key = nn.Linear(2 * dim, 2 * dim + 1)  # read key and strength from the target
        self.channel_attention = TargetAttention(
            2 * dim, layer_sizes(hp, "attention_hidden"), activation="sigmoid"
        )
        self.mlp = MLP(
            7 * dim + self.enable_dense(), layer_sizes(hp, "mlp_hidden"), activation="dice", out_dim=1
        )

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

    @overload
    def forward(self, batch: Batch) -> torch.Tensor: ...
    @overload
    def forward(self, batch: Batch, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def forward(
        self, batch: Batch, labels: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits (B,) for a batch holding `required_inputs` (see training.models.base); with the
        click labels (training), (logits, memory_reg · the memory utilization loss)."""
        user = self.embeddings.user(batch)  # (B, D)
        target, behaviors, mask = self.target_and_behaviors(batch)  # (B, E), (B, N, E), (B, N)
        state = self.memory.advance(self.memory.initial_state(len(target)), behaviors, mask)

        query = self.target_key(target)  # (B, E + 1)
        strength = 1.0 + nn.functional.softplus(query[:, -1])  # (B,)
        memory_read = self.memory.read(state.memory, torch.tanh(query[:, :-1]), strength)  # (B, E)
        every_channel = torch.ones(state.channels.shape[:2], dtype=torch.bool, device=target.device)
        channel_read = self.channel_attention(target, state.channels, every_channel)  # (B, E)
        features = torch.cat([user, target, memory_read, channel_read], dim=1)  # (B, 7D)
        features = self.with_dense(batch, features)  # (B, 7D + dense width) when hparams dense is on
        logits = self.mlp(features).squeeze(1) + self.position_logit(batch)
        if labels is None:
            return logits
        if self.memory_reg == 0.0:
            return logits, self.zero_loss()
        return logits, self.memory_reg * self.memory.utilization_loss(state)

    def regularization(self, batch: Batch) -> torch.Tensor:
        """embedding_l2 · Σ ||w||² over the embedding rows this batch reads (only N long behaviors)."""
        if self.l2 == 0.0:
            return super().regularization(batch)
        items, categories = self.written(batch)
        read = {**batch, "long_item": items, "long_category": categories}
        return self.l2 * self.embeddings.batch_l2(read, (*self.required_inputs, *self.optional_inputs))
