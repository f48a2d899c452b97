"""seqrank: sequence-aware CTR ranking, from raw logs to a deployed model."""

__version__ = "0.1.0"
