"""The prepare step: typed run parameters over the config, input fingerprints, date windows."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from components import prepare
from seqrank.config import ConfigError, load_config


def test_typed_parameters_win_over_the_config_and_unset_ones_keep_it() -> None:
    base = load_config(overrides=["model.name=din", "train.epochs=3", "gate.floor=0.6"]).to_yaml()
    cfg = prepare.resolve(base, model_name="sim", epochs=7, gate_min_delta=0.001)
    assert (cfg.model.name, cfg.train.epochs, cfg.gate.min_delta) == ("sim", 7, 0.001)
    assert (cfg.train.lr, cfg.gate.floor, cfg.train.batch_size) == (0.002, 0.6, 1024)
    unchanged = prepare.resolve(base)
    assert unchanged == load_config(overrides=["model.name=din", "train.epochs=3", "gate.floor=0.6"])


def test_bad_parameters_fail_with_the_field_named() -> None:
    base = load_config().to_yaml()
    with pytest.raises(ConfigError, match=r"gate\.metric"):
        prepare.resolve(base, gate_metric="accuracy")
    with pytest.raises(ValueError, match="unknown model 'nope'; valid names: "):
        prepare.resolve(base, model_name="nope")
    with pytest.raises(ValueError, match="end_date = '2026-13-01'"):
        prepare.check_window("2026-01-01", "2026-13-01")
    with pytest.raises(ValueError, match="must be before"):
        prepare.check_window("2026-02-01", "2026-01-01")
    prepare.check_window("", "2026-01-01")


def test_a_slice_holds_only_what_its_step_depends_on() -> None:
    cfg = load_config(overrides=["model.name=sim", "ingest.session_gap_minutes=20"])
    ingest = yaml.safe_load(prepare.config_slice(cfg, "ingest"))
    assert set(ingest) == {"state_dir", "infra", "ingest"}
    assert ingest["ingest"]["session_gap_minutes"] == 20
    other_model = load_config(overrides=["model.name=din", "ingest.session_gap_minutes=20"])
    assert prepare.config_slice(other_model, "ingest") == prepare.config_slice(cfg, "ingest")


def test_fingerprint_changes_with_content_and_names_missing_inputs(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.jsonl").write_text('{"x": 1}\n')
    (logs / "b.jsonl").write_text('{"x": 2}\n')
    pattern = str(logs / "*.jsonl")
    first = prepare.fingerprint([pattern])
    assert prepare.fingerprint([pattern]) == first
    assert prepare.fingerprint([str(logs)]) == first  # a directory means its files
    (logs / "b.jsonl").write_text('{"x": 2}\n{"x": 3}\n')
    assert prepare.fingerprint([pattern]) != first
    second = prepare.fingerprint([pattern])
    stat = (logs / "a.jsonl").stat()
    os.utime(logs / "a.jsonl", (stat.st_atime, stat.st_mtime + 10))  # same size, rewritten later
    assert prepare.fingerprint([pattern]) != second
    with pytest.raises(FileNotFoundError, match=r"missing\.jsonl matches no file"):
        prepare.fingerprint([str(tmp_path / "missing.jsonl")])
