"""Why a raw record was rejected: the dead-letter reasons, in the order they are checked."""

from __future__ import annotations

# A record gets the first reason in this order that applies to it.
REASONS = (
    "invalid_utf8",
    "nul_byte",
    "malformed",
    "missing_field",
    "wrong_type",
    "empty_id",
    "oversized_id",
    "bad_timestamp",
    "ts_before_2000",
    "ts_in_future",
    "unknown_event_type",
    "negative_position",
)
# Codes start at 1 so that 0 means accepted.
CODE = {reason: code for code, reason in enumerate(REASONS, start=1)}
