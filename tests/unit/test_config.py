"""Config loading: defaults, overrides, and errors that name the field and the bad value."""

from pathlib import Path

import pytest

from seqrank.config import ConfigError, load_config, parse_overrides


def test_default_config_loads_and_round_trips(tmp_path: Path) -> None:
    cfg = load_config()
    assert cfg.model.name == "sim"
    assert cfg.state_dir == Path(".seqrank")
    dumped = tmp_path / "cfg.yaml"
    dumped.write_text(cfg.to_yaml())
    assert load_config(dumped) == cfg


def test_overrides_are_typed_and_nested() -> None:
    cfg = load_config(overrides=["train.epochs=5", "model.mlp_hidden=[64, 32]", "ingest.runner=FlinkRunner"])
    assert cfg.train.epochs == 5
    assert cfg.model.mlp_hidden == [64, 32]
    assert cfg.ingest.runner == "FlinkRunner"


@pytest.mark.parametrize(
    ("override", "field", "value"),
    [
        ("train.lr=-0.1", "train.lr", "-0.1"),
        ("train.batch_size=0", "train.batch_size", "0"),
        ("generator.users=many", "generator.users", "'many'"),
        ("serve.port=70000", "serve.port", "70000"),
        ("gate.metric=accuracy", "gate.metric", "'accuracy'"),
        ("features.project=my-project", "features.project", "'my-project'"),
        ("train.device=tpu", "train.device", "'tpu'"),
    ],
)
def test_bad_values_name_field_and_value(override: str, field: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override])
    assert f"{field} = {value}" in str(err.value)


def test_cross_field_rule_names_fields() -> None:
    with pytest.raises(ConfigError, match=r"valid_fraction \+ test_fraction = 0.9"):
        load_config(overrides=["ingest.valid_fraction=0.45", "ingest.test_fraction=0.45"])
    with pytest.raises(ConfigError, match=r"mlp_hidden = \[0\]"):
        load_config(overrides=["model.mlp_hidden=[0]"])


def test_unknown_field_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"train.epoch = 3: Extra inputs are not permitted"):
        load_config(overrides=["train.epoch=3"])


def test_every_error_reported_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(overrides=["train.lr=0", "train.epochs=0"])
    assert "train.lr" in str(err.value)
    assert "train.epochs" in str(err.value)


def test_bad_files_and_override_syntax(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(listed)
    with pytest.raises(ConfigError, match=r"expected section\.field=value"):
        parse_overrides(["train.epochs"])
