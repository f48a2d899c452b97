"""DSIN and MIMN: the session split and bias encoding, the masked Bi-LSTM, the incremental memory,
PAD handling, the utilization loss, and a short real training of each."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from seqrank.config import ModelConfig, TrainConfig
from seqrank.schema import PAD
from tests.helpers.models import HPARAMS, VOCAB, L, M, fixed_batch
from tests.helpers.synthetic import write_training_ingest
from training.ingest_data import load_ingest
from training.layers.memory import MemoryState, UserInterestMemory
from training.layers.session import SessionBiasEncoding, split_sessions
from training.models import CtrModel, ModelSpec, build_model
from training.models.dsin import DSIN, SessionInterestInteracting
from training.models.mimn import MIMN
from training.trainer import fit

MINUTE = 60_000


def make(name: str, **change: object) -> CtrModel:
    torch.manual_seed(0)
    return build_model(ModelSpec(name, {**HPARAMS, **change}, dict(VOCAB)))


def make_dsin(**change: object) -> DSIN:
    model = make("dsin", **change)
    assert isinstance(model, DSIN)
    return model


def make_mimn(**change: object) -> MIMN:
    model = make("mimn", **change)
    assert isinstance(model, MIMN)
    return model


def reference_sessions(
    ts: list[int], real: list[bool], gap: int, sessions: int, length: int
) -> list[list[int | None]]:
    """Per-row loop version of the split: the latest `sessions` sessions, latest `length` each,
    right-aligned, as lists of history positions (None = empty slot)."""
    groups: list[list[int]] = []
    for position, (stamp, is_real) in enumerate(zip(ts, real, strict=True)):
        if not is_real:
            continue
        if not groups or stamp - ts[groups[-1][-1]] > gap:
            groups.append([])
        groups[-1].append(position)
    kept: list[list[int | None]] = [[None] * length for _ in range(sessions)]
    for slot, group in zip(range(sessions - 1, -1, -1), reversed(groups), strict=False):
        latest = group[-length:]
        kept[slot][length - len(latest) :] = latest
    return kept


def test_split_sessions_on_a_worked_example() -> None:
    ts = torch.tensor(
        [
            [0, 0, 0, 1, 2, 100, 101, 300],  # sessions {0, 1, 2} {100, 101} {300} (minutes)
            [0, 0, 0, 0, 0, 0, 0, 0],  # no history
            [0, 0, 0, 0, 0, 0, 0, 5],  # one behavior
            [0, 0, 0, 10, 40, 70, 101, 131],  # gaps of exactly 30 stay in the session; 31 splits
        ]
    )
    real = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1], [0] * 8, [0] * 7 + [1], [0, 0, 0, 1, 1, 1, 1, 1]]).bool()
    sessions = split_sessions(ts * MINUTE, real, 30 * MINUTE, max_sessions=2, session_len=2)
    minutes = sessions.gather(ts, fill=-1)
    assert minutes.tolist() == [
        [[100, 101], [-1, 300]],  # the oldest session dropped, the latest right-aligned
        [[-1, -1], [-1, -1]],
        [[-1, -1], [-1, 5]],
        [[40, 70], [101, 131]],  # of {10, 40, 70} only the latest two
    ]
    assert sessions.mask.tolist() == (minutes >= 0).tolist()
    assert sessions.session_mask.tolist() == [[True, True], [False, False], [False, True], [True, True]]


def test_split_sessions_matches_a_per_row_loop() -> None:
    g = torch.Generator().manual_seed(0)
    rows, length = 64, 20
    gaps = torch.where(torch.rand(rows, length, generator=g) < 0.3, 45, 5) * MINUTE
    ts = gaps.cumsum(dim=1)
    lengths = torch.randint(0, length + 1, (rows,), generator=g)
    real = torch.arange(length) >= (length - lengths)[:, None]
    ts = torch.where(real, ts, PAD)
    for sessions, per_session in ((3, 4), (5, 10), (1, 1)):
        split = split_sessions(ts, real, 30 * MINUTE, sessions, per_session)
        for row in range(rows):
            expected = reference_sessions(
                ts[row].tolist(), real[row].tolist(), 30 * MINUTE, sessions, per_session
            )
            got = [[p if p < length else None for p in s] for s in split.index[row].tolist()]
            assert got == expected, (row, sessions, per_session)


def test_bias_encoding_adds_session_position_and_unit_biases() -> None:
    encoding = SessionBiasEncoding(sessions=3, session_len=4, dim=5)
    with torch.no_grad():
        encoding.session.copy_(torch.tensor([1.0, 2.0, 3.0]))
        encoding.position.copy_(torch.tensor([10.0, 20.0, 30.0, 40.0]))
        encoding.unit.copy_(torch.arange(5.0) * 100)
    out = encoding(torch.zeros(2, 3, 4, 5))
    assert out.shape == (2, 3, 4, 5)
    assert out[1, 2, 1, 3].item() == 3.0 + 20.0 + 300.0
    with pytest.raises(ValueError, match="bias encoding expects"):
        encoding(torch.zeros(2, 3, 5, 5))


def test_bi_lstm_skips_empty_sessions() -> None:
    torch.manual_seed(0)
    layer = SessionInterestInteracting(dim=6, hidden=4)
    interests = torch.randn(3, 5, 6)
    session_mask = torch.tensor([[0, 0, 1, 1, 1], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]]).bool()
    evolved = layer(interests, session_mask)
    assert evolved.shape == (3, 5, 8)
    # Row 0 equals the LSTM run on its three real sessions alone; empty rows and slots are zero.
    alone, _ = layer.lstm(interests[0:1, 2:])
    torch.testing.assert_close(evolved[0, 2:], alone[0])
    assert bool((evolved[0, :2] == 0).all()) and bool((evolved[1] == 0).all())
    full, _ = layer.lstm(interests[2:3])
    torch.testing.assert_close(evolved[2], full[0])


@pytest.mark.parametrize("attention", ["softmax", "din"])
def test_dsin_ignores_pad_and_dropped_behaviors_and_handles_empty_history(attention: str) -> None:
    model = make_dsin(session_attention=attention, max_sessions=2, session_len=3)
    model.eval()
    batch, labels = fixed_batch()
    base = model(batch)
    assert torch.isfinite(base).all() and (batch["hist_item"][0] == PAD).all()

    # A PAD position is one whose item is PAD: what else it holds must not matter.
    changed = {k: v.clone() for k, v in batch.items()}
    pad = batch["hist_item"] == PAD
    changed["hist_category"][pad] = 3
    changed["hist_ts"][pad] = 123
    # Rows whose behaviors fill both kept sessions: the oldest behaviors fall outside them.
    sessions = model.sessions(batch)
    dropped = (batch["hist_item"] != PAD) & ~torch.zeros_like(pad).scatter(
        1, sessions.index.flatten(1).clamp(max=L - 1), sessions.mask.flatten(1)
    )
    assert dropped.any()
    changed["hist_item"][dropped] = 9
    with torch.no_grad():
        torch.testing.assert_close(model(changed), base, rtol=0, atol=1e-6)

    # No NaN from empty sessions, in the output or the gradients, even when no row has history.
    model.train()
    empty = {**batch, "hist_item": torch.zeros_like(batch["hist_item"])}
    empty["hist_category"] = torch.zeros_like(batch["hist_category"])
    for inputs in (batch, empty):
        model.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(inputs), labels)
        loss.backward()
        assert torch.isfinite(loss)
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_dsin_option_errors() -> None:
    with pytest.raises(ValueError, match=re.escape("hparams['heads'] = 3")):
        make("dsin", heads=3)
    with pytest.raises(ValueError, match=re.escape("model.options.session_gap_minutes = 0")):
        make("dsin", session_gap_minutes=0)
    with pytest.raises(ValueError, match=re.escape("model.options.max_sessions = -1")):
        make("dsin", max_sessions=-1)
    with pytest.raises(ValueError, match=re.escape("model.options.session_attention = 'max'")):
        make("dsin", session_attention="max")
    assert make_dsin(session_gap_minutes=90).gap_ms == 90 * MINUTE


def random_memory(seed: int = 0, slots: int = 4, top_k: int = 1) -> UserInterestMemory:
    torch.manual_seed(seed)
    return UserInterestMemory(dim=6, slots=slots, controller_hidden=5, top_k=top_k)


def assert_same_state(a: MemoryState, b: MemoryState) -> None:
    for name, x, y in zip(MemoryState._fields, a, b, strict=True):
        assert torch.equal(x, y), name


def test_memory_advances_incrementally() -> None:
    memory = random_memory(top_k=2)
    g = torch.Generator().manual_seed(1)
    behaviors = torch.randn(5, 12, 6, generator=g)
    lengths = torch.tensor([0, 1, 5, 9, 12])
    mask = torch.arange(12) >= (12 - lengths)[:, None]
    with torch.no_grad():
        once = memory.advance(memory.initial_state(5), behaviors, mask)
        for cut in (1, 6, 11):
            first = memory.advance(memory.initial_state(5), behaviors[:, :cut], mask[:, :cut])
            assert_same_state(memory.advance(first, behaviors[:, cut:], mask[:, cut:]), once)
    assert once.steps.tolist() == lengths.float().tolist()
    # The row without behaviors still holds the initial state.
    initial = memory.initial_state(5)
    assert torch.equal(once.memory[0], initial.memory[0]) and torch.equal(
        once.channels[0], initial.channels[0]
    )


def test_pad_steps_leave_the_memory_state_unchanged() -> None:
    memory = random_memory()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        state = memory.advance(
            memory.initial_state(4), torch.randn(4, 5, 6, generator=g), torch.ones(4, 5).bool()
        )
        real = torch.tensor([True, False, True, False])
        stepped = memory.step(state, torch.randn(4, 6, generator=g), real)
        for name, before, after in zip(MemoryState._fields, state, stepped, strict=True):
            assert torch.equal(before[~real], after[~real]), name
            assert not torch.equal(before[real], after[real]) or name == "steps", name
        # MIU: with top_k = 1 exactly one channel changes per real row.
        changed = (stepped.channels != state.channels).any(dim=2)  # (B, m)
        assert changed.sum(dim=1).tolist() == [1, 0, 1, 0]
        assert_same_state(memory.advance(state, torch.randn(4, 3, 6), torch.zeros(4, 3).bool()), state)


def test_utilization_loss_measures_unbalanced_writes() -> None:
    memory = random_memory(slots=4)
    state = memory.initial_state(3)
    totals = torch.tensor([[2.0, 2.0, 2.0, 2.0], [8.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    state = state._replace(write_total=totals, steps=torch.tensor([8.0, 8.0, 0.0]))
    # balanced: 0; all writes in one slot: (m − 1)/m = 0.75; no behaviors: 0
    assert memory.utilization_loss(state).item() == pytest.approx(0.75 / 3)


def test_mimn_utilization_loss_comes_with_the_labels() -> None:
    model = make_mimn(memory_reg=0.5)
    batch, labels = fixed_batch()
    model.train()
    logits, aux = model(batch, labels)
    assert torch.equal(logits, model(batch))
    assert aux.item() > 0 and aux.requires_grad
    aux.backward()
    assert model.memory.heads.weight.grad is not None and model.memory.heads.weight.grad.abs().sum() > 0
    off = make_mimn(memory_reg=0)
    off.train()
    assert off(batch, labels)[1].item() == 0.0


def test_mimn_ignores_pad_and_behaviors_before_its_window() -> None:
    model = make_mimn(memory_steps=20)
    model.eval()
    batch, _ = fixed_batch()
    with torch.no_grad():
        base = model(batch)
        changed = {k: v.clone() for k, v in batch.items()}
        pad = batch["long_item"] == PAD
        changed["long_category"][pad] = 3
        changed["long_item"][:, : M - 20] = 11  # older than the 20 behaviors written
        assert torch.equal(model(changed), base)
        recent = {**batch, "long_item": batch["long_item"].clone()}
        recent["long_item"][:, -1] = torch.where(pad[:, -1], PAD, 13)
        assert not torch.equal(model(recent), base)
    # The mini-batch L2 covers exactly the rows the model reads: not those before the window.
    used = torch.zeros(VOCAB["item"], dtype=torch.bool)
    used[batch["item"]] = True
    used[batch["long_item"][:, -20:]] = True
    used[PAD] = False
    assert not bool(used[batch["long_item"][:, : M - 20]].all())
    model.regularization(batch).backward()
    grad = model.embeddings.item_table.weight.grad
    assert grad is not None
    touched = grad.abs().sum(dim=1) > 0
    assert touched.tolist() == used.tolist()


def test_mimn_option_errors() -> None:
    with pytest.raises(ValueError, match=re.escape("miu_top_k = 9 must be <= memory_slots = 8")):
        make("mimn", miu_top_k=9)
    with pytest.raises(ValueError, match=re.escape("model.options.memory_reg = -1")):
        make("mimn", memory_reg=-1)
    with pytest.raises(ValueError, match=re.escape("model.options.memory_steps = 0")):
        make("mimn", memory_steps=0)
    with pytest.raises(ValueError, match="memory top_k = 0"):
        UserInterestMemory(4, 2, 3, top_k=0)


@pytest.fixture(scope="module")
def ingest_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_training_ingest(tmp_path_factory.mktemp("dsin_mimn") / "ingest", users=80, impressions=30)


@pytest.fixture
def one_thread() -> Iterator[None]:
    # The memory loop is many small ops; on a busy machine intra-op threads cost more than they save.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("name", "options", "batch_size"),
    [("dsin", {}, 64), ("mimn", {"memory_steps": 20}, 128)],
)
@pytest.mark.usefixtures("one_thread")
def test_one_epoch_of_real_training_beats_chance(
    name: str, options: dict, batch_size: int, ingest_dir: Path
) -> None:
    model_cfg = ModelConfig(
        name=name,
        embedding_dim=8,
        seq_len=20,
        long_seq_len=20,
        attention_hidden=[16, 8],
        mlp_hidden=[16],
        options=options,
    )
    train_cfg = TrainConfig(epochs=1, batch_size=batch_size, lr=5e-3, device="cpu", seed=0)
    result = fit(load_ingest(ingest_dir), model_cfg, train_cfg)
    assert math.isfinite(result.valid["auc"]) and result.valid["auc"] > 0.5, result.valid
    assert math.isfinite(result.history[0]["train_loss"])
