"""The example cluster configs of docs/kubeflow.md: each loads, can run on a cluster, compiles, deploys."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from components.deploy.export import kserve_manifest
from pipelines.compile import cluster_config, compile_pipeline
from seqrank.config import load_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "docs" / "examples").glob("*.yaml"))
GUIDE = ROOT / "docs" / "kubeflow.md"


def test_the_guide_shows_every_example_and_the_commands() -> None:
    assert {p.name for p in EXAMPLES} >= {"cluster.yaml", "flink.yaml", "dataflow.yaml"}
    guide = GUIDE.read_text()
    for path in EXAMPLES:
        assert f"`{path.name}`" in guide, path.name
    assert "seqrank compile -o pipeline.yaml --config docs/examples/cluster.yaml" in guide
    schedules = [line for line in guide.splitlines() if line.startswith("seqrank schedule --host")]
    for flag in ("--cron", "--list", "--delete"):
        assert any(flag in line for line in schedules), flag


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs_on_a_cluster(path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from apache_beam.options.pipeline_options import PipelineOptions

    from training.models import check_options

    cfg = load_config(path)
    check_options(cfg.model.name, cfg.model.options)
    cfg = cluster_config(cfg)  # raises when shared state would stay on each pod's disk
    assert cfg.kubeflow.pvc and Path(cfg.infra.root).is_absolute()
    assert cfg.infra.mlflow_tracking_uri.startswith("http")
    assert cfg.infra.feast.online_store == "redis"
    # Every runner option is one Beam knows (Beam drops the others with a warning).
    with caplog.at_level(logging.WARNING):
        options = PipelineOptions(cfg.ingest.runner_options)
        unknown = (
            options.get_all_options(retain_unknown_options=True).keys() - options.get_all_options().keys()
        )
    assert not unknown, unknown

    spec, platform = yaml.safe_load_all(compile_pipeline(cfg, tmp_path / "pipeline.yaml").read_text())
    executors = spec["deploymentSpec"]["executors"]
    assert {e["container"]["image"] for e in executors.values()} == {cfg.kubeflow.image}
    mounts = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name in executors:
        (pvc,) = mounts[name]["pvcMount"]
        assert pvc["mountPath"] == cfg.infra.root, name
    train = executors["exec-train-step"]["container"]["resources"]
    assert train["accelerator"]["resourceCount"] == str(cfg.kubeflow.train_gpus)

    _, isvc = kserve_manifest(cfg, "seqrank-ranker/1")
    (container,) = isvc["spec"]["predictor"]["containers"]
    assert container["image"] == cfg.kubeflow.image
