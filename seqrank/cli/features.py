"""`seqrank features`: the Feast store alone — materialize an ingest output, push behaviors, look up."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from seqrank.cli.common import CONFIG_HELP, SET_HELP, cli_config
from seqrank.config import PipelineConfig
from seqrank.paths import StatePaths

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


@features.command(name="push")
@click.option("--user", required=True, help="User id (raw, or an index with --index).")
@click.option("--item", required=True, help="Item id.")
@click.option("--category", required=True, help="Category id of the item.")
@click.option("--ts", type=int, help="Behavior time in epoch ms (default: now).")
@click.option("--index", "as_index", is_flag=True, help=INDEX_HELP)
@click.option("--feast", "feast_dir", type=click.Path(path_type=Path), help=FEAST_HELP)
@click.option("--config", type=click.Path(exists=True), help=CONFIG_HELP)
@click.option("--set", "overrides", multiple=True, help=SET_HELP)
def features_push(
    user: str, item: str, category: str, ts, as_index: bool, feast_dir, config, overrides
) -> None:
    """Push one new behavior into the online sequence and its category sub-sequence."""
    from components import features as features_step

    cfg = cli_config(config, overrides)
    event = (
        _dense(cfg, "user", user, as_index, required=True),
        _dense(cfg, "item", item, as_index, required=True),
        _dense(cfg, "category", category, as_index, required=True),
        ts if ts is not None else int(time.time() * 1000),
    )
    try:
        pushed = features_step.push_behaviors(_feast_dir(cfg, feast_dir), [event])
    except (FileNotFoundError, ValueError) as err:
        raise click.ClickException(str(err)) from None
    click.echo(
        json.dumps({"behavior": dict(zip(("user", "item", "category", "ts"), event, strict=True)), **pushed})
    )


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
