"""Vocab lookups: the dense index of a raw id in a vocab directory (`<dir>/<entity>.parquet`, VOCAB)."""

from __future__ import annotations

from pathlib import Path


class VocabError(LookupError):
    """A raw id has no dense index: the entity's vocab file is missing, or the id is not in it."""

    def __init__(self, message: str, entity: str, path: Path) -> None:
        super().__init__(message)
        self.entity = entity
        self.path = path


class MissingVocabError(VocabError):
    """There is no vocab file for the entity (nothing was ingested into this vocab directory)."""


class UnknownIdError(VocabError):
    """The vocab exists but does not hold the raw id."""


def vocab_file(vocab_dir: Path, entity: str) -> Path:
    """Where the vocab of `entity` (user, item, category, brand) lives in `vocab_dir`."""
    return Path(vocab_dir) / f"{entity}.parquet"


def dense_index(vocab_dir: Path, entity: str, raw: str) -> int:
    """The dense index of the raw id `raw` of `entity` in `vocab_dir`.

    Reads only the matching rows of the `index` column (a filtered Parquet read), so one lookup
    stays cheap however large the vocab is.

    Raises:
        MissingVocabError: `vocab_dir` has no vocab file for `entity`.
        UnknownIdError: the vocab does not hold `raw`.
    """
    import pyarrow.parquet as pq

    path = vocab_file(vocab_dir, entity)
    if not path.exists():
        raise MissingVocabError(f"no {entity} vocab at {path}", entity, path)
    hits = pq.read_table(path, columns=["index"], filters=[("raw", "==", raw)]).column("index").to_pylist()
    if not hits:
        raise UnknownIdError(f"{entity} {raw!r} is not in the vocab at {path}", entity, path)
    return int(hits[0])
