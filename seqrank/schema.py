"""Data contracts between pipeline steps (DESIGN §3), defined once as Arrow schemas.

Raw ids are strings as they arrive in logs; every step output after ingest uses dense int64
indices from `vocab/` (index 0 is reserved for unknown and padding).
"""

from __future__ import annotations

import pyarrow as pa

PAD = 0  # vocab index shared by padding and unknown ids

EVENT_TYPES = ("impression", "click", "cart", "fav", "buy")
POSITIVE_TYPES = ("click", "cart", "fav", "buy")
# Behavior `type` column codes: position in POSITIVE_TYPES + 1, so 0 stays padding.
BEHAVIOR_TYPE_CODE = {name: code for code, name in enumerate(POSITIVE_TYPES, start=1)}

SPLITS = ("train", "valid", "test")
VOCAB_ENTITIES = ("user", "item", "category", "brand")

# Raw events as read from JSONL/CSV/Parquet. `ts` may be epoch ms or an ISO-8601 string in text
# formats; generated Parquet logs use int64 epoch ms.
RAW_REQUIRED = ("ts", "user_id", "item_id", "event_type")
RAW_EVENT = pa.schema(
    [
        pa.field("ts", pa.int64(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("event_id", pa.string()),
        pa.field("request_id", pa.string()),
        pa.field("position", pa.int32()),
        pa.field("category_id", pa.string()),
    ]
)

# Side tables, raw ids.
RAW_USERS = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("age_bucket", pa.int32()),
        pa.field("gender", pa.string()),
    ]
)
RAW_ITEMS = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("category_id", pa.string(), nullable=False),
        pa.field("brand_id", pa.string()),
        pa.field("price", pa.float64()),
    ]
)

# behaviors/: one row per user, the user's positive behaviors in time order. The only copy of
# history: an example's history is behaviors[user][:hist_end].
BEHAVIORS = pa.schema(
    [
        pa.field("user", pa.int64(), nullable=False),
        pa.field("item", pa.list_(pa.int64()), nullable=False),
        pa.field("category", pa.list_(pa.int64()), nullable=False),
        pa.field("ts", pa.list_(pa.int64()), nullable=False),
        pa.field("type", pa.list_(pa.int8()), nullable=False),
        pa.field("session", pa.list_(pa.int32()), nullable=False),
    ]
)

# examples/: one row per labeled impression.
EXAMPLES = pa.schema(
    [
        pa.field("user", pa.int64(), nullable=False),
        pa.field("item", pa.int64(), nullable=False),
        pa.field("category", pa.int64(), nullable=False),
        pa.field("ts", pa.int64(), nullable=False),
        pa.field("label", pa.int8(), nullable=False),
        pa.field("position", pa.int32(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("hist_end", pa.int32(), nullable=False),
        pa.field("session", pa.int32(), nullable=False),
        pa.field("event_id", pa.string()),
        pa.field("request_id", pa.string()),
    ]
)

# vocab/<entity>.parquet: raw id -> dense index, append-only across runs.
VOCAB = pa.schema(
    [
        pa.field("raw", pa.string(), nullable=False),
        pa.field("index", pa.int64(), nullable=False),
    ]
)

# users/ and items/ side tables after ingest, in dense indices.
USERS = pa.schema(
    [
        pa.field("user", pa.int64(), nullable=False),
        pa.field("age_bucket", pa.int32()),
        pa.field("gender", pa.string()),
    ]
)
ITEMS = pa.schema(
    [
        pa.field("item", pa.int64(), nullable=False),
        pa.field("category", pa.int64(), nullable=False),
        pa.field("brand", pa.int64(), nullable=False),
        pa.field("price", pa.float64()),
    ]
)

# item_stats/: point-in-time daily snapshots of item statistics. A row for (item, day) holds the
# counts of that UTC day and the running totals up to its end; `ts` is the end of the day in epoch
# ms, the moment the numbers became known (Feast's event timestamp), so a training example only
# sees snapshots taken before it.
ITEM_STATS = pa.schema(
    [
        pa.field("item", pa.int64(), nullable=False),
        pa.field("ts", pa.int64(), nullable=False),
        pa.field("impressions_1d", pa.int64(), nullable=False),
        pa.field("clicks_1d", pa.int64(), nullable=False),
        pa.field("impressions_total", pa.int64(), nullable=False),
        pa.field("clicks_total", pa.int64(), nullable=False),
    ]
)

# The generator's oracle: the true click probability of every impression it wrote, the same
# probability restricted to what the user's last 50 behaviors reveal, and restricted to what the
# behaviors before the impression reveal of both latent terms (docs/generator.md).
ORACLE = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("ts", pa.int64(), nullable=False),
        pa.field("p_click", pa.float64(), nullable=False),
        pa.field("p_click_last50", pa.float64(), nullable=False),
        pa.field("p_click_revealed", pa.float64(), nullable=False),
        pa.field("clicked", pa.int8(), nullable=False),
        # The impression's latent state, one of LATENT_STATES (what the revealed oracle keeps of it).
        pa.field("latent_state", pa.string(), nullable=False),
    ]
)
# ORACLE.latent_state: whether the item's category is one of the user's long-term interests or the
# session's focus, and whether the logs have revealed it by then (long-term: the history holds a
# behavior in the category; focus: this session does). A long-term category that is also the focus
# counts as long-term.
LATENT_STATES = ("long_term_seen", "long_term_unseen", "focus_seen", "focus_unseen", "neither")

# Online sequence features (Feast `user_behavior` view), in the same dense indices as training.
SEQUENCE_FEATURES = {
    "seq_item": pa.list_(pa.int64()),
    "seq_category": pa.list_(pa.int64()),
    "seq_ts": pa.list_(pa.int64()),
}


def check_schema(table: pa.Table, expected: pa.Schema, what: str) -> None:
    """Raise ValueError when `table` lacks a column of `expected` or holds it with another type."""
    problems = []
    for field in expected:
        idx = table.schema.get_field_index(field.name)
        if idx < 0:
            problems.append(f"missing column {field.name!r}")
        elif not table.schema.field(idx).type.equals(field.type):
            problems.append(f"column {field.name!r} is {table.schema.field(idx).type}, expected {field.type}")
    if problems:
        raise ValueError(f"{what}: " + "; ".join(problems))
