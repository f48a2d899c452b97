"""Adapters that turn public data sets (MovieLens, Taobao UserBehavior, Amazon reviews) into raw events.

None of these data sets logs impressions, so every adapter follows the common protocol for them:
each positive behavior that makes an example becomes one ranking request holding the positive item
and `negatives` items the user never interacted with (sampled uniformly from the data set's items,
seeded, so the same input gives the same requests), in a random slot order so that position says
nothing about the label. The request's click labels the positive; the history of an example is the
user's behaviors strictly before it, as for logged impressions.

The result is a table of raw events in the contract's columns (`RAW_EVENT`) plus an items side
table, which the same Beam pipeline then ingests. Rows that cannot be read become dead letters
here, with the same reasons as raw logs, and each adapter's own reconciliation
(`rows_read == rows_used + rejected + duplicates + filtered`) goes into the manifest.
"""

from __future__ import annotations

from components.ingest.adapters.amazon import amazon
from components.ingest.adapters.common import Prepared
from components.ingest.adapters.movielens import movielens
from components.ingest.adapters.taobao import taobao

# Public data sets without impressions, each turned into raw events by its adapter's protocol.
ADAPTERS = {"movielens": movielens, "taobao": taobao, "amazon": amazon}

__all__ = ["ADAPTERS", "Prepared", "amazon", "movielens", "taobao"]
