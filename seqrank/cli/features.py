"""`seqrank features`: the Feast store alone — materialize an ingest output, push behaviors, look up."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from seqrank.cli.common import CONFIG_HELP, SET_HELP, cli_config
from seqrank.config import PipelineConfig
from seqrank.paths import StatePaths

if TYPE_CHECKING:
    from feature_repo import Behavior

FEAST_HELP = "Feast directory (default: <state_dir>/feast)."
INDEX_HELP = "Ids are dense vocab indices, not raw ids from the logs."


@click.group()
def features() -> None:
    """The Feast feature store: materialize, push new behaviors, look up what it holds."""


def _feast_dir(cfg: PipelineConfig, feast_dir: Path | None) -> Path:
    return feast_dir or StatePaths.of(cfg).feast


def _dense(cfg: PipelineConfig, entity: str, raw: str, as_index: bool, required: bool) -> int:
    """The dense index of a raw id through the state's vocab (0 when unknown and not required)."""
    if as_index:
        try:
            return int(raw)
        except ValueError:
            raise click.BadParameter(f"{entity} {raw!r} is not an integer index") from None
    from seqrank.vocab import MissingVocabError, UnknownIdError, dense_index

    try:
        return dense_index(StatePaths.of(cfg).vocab, entity, raw)
    except MissingVocabError as err:
        raise click.ClickException(f"{err}: run ingest first, or pass --index") from None
    except UnknownIdError as err:
        if required:
            raise click.ClickException(str(err)) from None
        return 0


@features.command(name="materialize")
@click.option("--data", type=click.Path(exists=True, path_type=Path), required=True, help="An ingest output.")
@click.option("--feast", "feast_dir", type=click.Path(path_type=Path), help=FEAST_HELP)
@click.option("--config", type=click.Path(exists=True), help=CONFIG_HELP)
@click.option("--set", "overrides", multiple=True, help=SET_HELP)
def features_materialize(data: Path, feast_dir, config, overrides) -> None:
    """Build the feature tables from an ingest output, apply the repo, fill the online store."""
    from components import features as features_step

    cfg = cli_config(config, overrides)
    summary = features_step.run(data, _feast_dir(cfg, feast_dir), cfg.features)
    click.echo(json.dumps(summary, indent=2, default=str))


def _behaviors(cfg: PipelineConfig, lines: Iterable[str], as_index: bool, now_ms: int) -> list[Behavior]:
    """Behaviors from JSON lines {"user", "item", "category", "ts"?}; a bad line names its number."""
    from feature_repo import Behavior

    events = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            raw = [str(record[k]) for k in ("user", "item", "category")]
            ts = int(record.get("ts", now_ms))
        except (ValueError, KeyError, TypeError) as err:
            raise click.ClickException(f"line {number}: {type(err).__name__}: {err}") from None
        ids = [
            _dense(cfg, k, v, as_index, required=True)
            for k, v in zip(("user", "item", "category"), raw, strict=True)
        ]
        user, item, category = ids
        events.append(Behavior(user, item, category, ts))
    return events


@features.command(name="push")
@click.option("--user", help="User id (raw, or an index with --index).")
@click.option("--item", help="Item id.")
@click.option("--category", help="Category id of the item.")
@click.option("--ts", type=int, help="Behavior time in epoch ms (default: now).")
@click.option(
    "--file",
    "source",
    type=click.File("r"),
    help='JSON lines of behaviors {"user", "item", "category", "ts"} to push together; - reads stdin.',
)
@click.option("--index", "as_index", is_flag=True, help=INDEX_HELP)
@click.option("--feast", "feast_dir", type=click.Path(path_type=Path), help=FEAST_HELP)
@click.option("--config", type=click.Path(exists=True), help=CONFIG_HELP)
@click.option("--set", "overrides", multiple=True, help=SET_HELP)
def features_push(
    user: str | None,
    item: str | None,
    category: str | None,
    ts,
    source,
    as_index: bool,
    feast_dir,
    config,
    overrides,
) -> None:
    """Push new behaviors into the online sequences and their category sub-sequences, no run needed.

    One behavior from --user/--item/--category, or many from --file (JSON lines; - for stdin).
    """
    from components import features as features_step

    cfg = cli_config(config, overrides)
    now_ms = int(time.time() * 1000)
    single = (user, item, category)
    if source is not None:
        if any(v is not None for v in single):
            raise click.UsageError("give either --file or --user/--item/--category, not both")
        events = _behaviors(cfg, source, as_index, now_ms)
    elif all(v is not None for v in single):
        events = _behaviors(
            cfg,
            [json.dumps({"user": user, "item": item, "category": category, "ts": ts or now_ms})],
            as_index,
            now_ms,
        )
    else:
        raise click.UsageError("push needs --user, --item and --category, or --file")
    started = time.perf_counter()
    try:
        pushed = features_step.push_behaviors(_feast_dir(cfg, feast_dir), events)
    except (FileNotFoundError, ValueError) as err:
        raise click.ClickException(str(err)) from None
    out: dict = {"behaviors": len(events), **pushed, "seconds": round(time.perf_counter() - started, 4)}
    if len(events) == 1:
        out["behavior"] = dict(zip(("user", "item", "category", "ts"), events[0], strict=True))
    click.echo(json.dumps(out))


@features.command(name="get")
@click.option("--user", required=True, help="User id (raw, or an index with --index).")
@click.option(
    "--category", "categories", multiple=True, help="Also the sub-sequence of this category (repeatable)."
)
@click.option("--index", "as_index", is_flag=True, help=INDEX_HELP)
@click.option("--feast", "feast_dir", type=click.Path(path_type=Path), help=FEAST_HELP)
@click.option("--config", type=click.Path(exists=True), help=CONFIG_HELP)
@click.option("--set", "overrides", multiple=True, help=SET_HELP)
def features_get(
    user: str, categories: tuple[str, ...], as_index: bool, feast_dir, config, overrides
) -> None:
    """Print the user's online sequence (and category sub-sequences) as JSON, in dense indices.

    Unknown users and categories print empty sequences.
    """
    from serving.features import OnlineFeatures

    cfg = cli_config(config, overrides)
    try:
        online = OnlineFeatures(_feast_dir(cfg, feast_dir))
    except FileNotFoundError as err:
        raise click.ClickException(str(err)) from None
    index = _dense(cfg, "user", user, as_index, required=False)
    wanted = {c: _dense(cfg, "category", c, as_index, required=False) for c in categories}
    held = online.category_sequences(index, [i for i in wanted.values() if i > 0])
    empty: dict[str, list[int]] = {"cat_seq_item": [], "cat_seq_ts": []}
    result = {
        "user": user,
        "user_index": index,
        "sequence": {name: values.tolist() for name, values in online.user_sequence(index).items()},
        "categories": {
            c: {"category_index": i, **({k: v.tolist() for k, v in held[i].items()} if i > 0 else empty)}
            for c, i in wanted.items()
        },
    }
    click.echo(json.dumps(result))
