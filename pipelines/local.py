"""Run the pipeline on this machine with Kubeflow's local subprocess runner."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from seqrank.config import PipelineConfig
from seqrank.paths import StatePaths

log = logging.getLogger(__name__)


def run_local(
    cfg: PipelineConfig, run_id: str, inputs: list[str], users: Path | None = None, items: Path | None = None
) -> None:
    """Execute every step in a subprocess of the current environment; raise if any step fails."""
    from kfp import local

    from pipelines.pipeline import seqrank_pipeline

    paths = StatePaths(cfg.state_dir)
    paths.kfp_root.mkdir(parents=True, exist_ok=True)
    # use_venv=False: the default builds a venv per task and pip-installs from the network.
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(paths.kfp_root),
        raise_on_error=True,
    )
    with warnings.catch_warnings():
        # The runner warns that the cluster image is not a python:* image; locally the
        # current environment (which has seqrank installed) runs the steps instead.
        warnings.filterwarnings("ignore", message=".*custom or non-Python base image.*")
        seqrank_pipeline(
            config_yaml=cfg.to_yaml(),
            run_id=run_id,
            inputs=list(inputs),
            users=str(users) if users else "",
            items=str(items) if items else "",
        )
    log.info("pipeline run %s finished", run_id)
