"""Thin kfp wrappers over each step's plain `run` function (the pipeline DAG wires these).

Each body only parses the config, calls `components.<step>`, and records outputs; kfp ships the
function source to the executor, so imports live inside the bodies. The image (`SEQRANK_IMAGE`,
default `seqrank:latest`, built from the Dockerfile) has the project installed; locally the
subprocess runner uses the current environment instead.
"""

import os

from kfp import dsl

IMAGE = os.environ.get("SEQRANK_IMAGE", "seqrank:latest")


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def ingest_step(
    config_yaml: str, run_id: str, inputs: list, users: str, items: str, data: dsl.Output[dsl.Dataset]
) -> str:
    """Beam ingest of raw logs into examples, behaviors, vocab (DESIGN §3)."""
    from pathlib import Path

    from components import ingest
    from components.kfp_support import finish, step_config

    cfg, paths = step_config(config_yaml)
    manifest = ingest.run(
        list(inputs),
        Path(data.path),
        cfg.ingest,
        users=Path(users) if users else None,
        items=Path(items) if items else None,
        vocab_dir=paths.vocab,
    )
    return finish(paths, run_id, "ingest", {**manifest, "output": data.path})


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def validate_step(
    config_yaml: str, run_id: str, data: dsl.Input[dsl.Dataset], docs: dsl.Output[dsl.HTML]
) -> str:
    """Great Expectations suites; raising here stops the pipeline before training."""
    from pathlib import Path

    from components import validate
    from components.kfp_support import finish, step_config

    cfg, paths = step_config(config_yaml)
    report = validate.run(
        Path(data.path), cfg.validate_, docs_dir=Path(docs.path), against=paths.accepted_validation
    )
    validate.accept(Path(docs.path), paths.accepted_validation)
    return finish(paths, run_id, "validate", report)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def features_step(config_yaml: str, run_id: str, data: dsl.Input[dsl.Dataset]) -> str:
    """Feast apply and materialization of profiles and behavior sequences to the online store."""
    from pathlib import Path

    from components import features
    from components.kfp_support import finish, step_config

    cfg, paths = step_config(config_yaml)
    summary = features.run(Path(data.path), paths.feast, cfg.features)
    return finish(paths, run_id, "features", summary)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def validate_features_step(
    config_yaml: str,
    run_id: str,
    data: dsl.Input[dsl.Dataset],
    docs: dsl.Output[dsl.HTML],
) -> str:
    """Suites over the feature tables (caps, ids, freshness); raising stops the run before training."""
    from pathlib import Path

    from components import validate
    from components.kfp_support import finish, step_config

    cfg, paths = step_config(config_yaml)
    report = validate.run_features(paths.feast, Path(data.path), cfg.validate_, cfg.features, Path(docs.path))
    return finish(paths, run_id, "validate_features", report)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train_step(
    config_yaml: str, run_id: str, data: dsl.Input[dsl.Dataset], metrics: dsl.Output[dsl.Metrics]
) -> str:
    """Train the configured model; one MLflow run. Returns the MLflow run id."""
    from pathlib import Path

    from components import train
    from components.kfp_support import finish, step_config

    cfg, paths = step_config(config_yaml)
    result = train.run(Path(data.path), cfg, tags={"pipeline_run_id": run_id})
    for name, value in result["metrics"].items():
        metrics.log_metric(name, float(value))
    finish(paths, run_id, "train", result)
    return result["run_id"]


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def gate_step(config_yaml: str, run_id: str, data: dsl.Input[dsl.Dataset], challenger_run_id: str) -> bool:
    """Challenger vs champion on the same test data; True means promote.

    One plain output on purpose: kfp's local runner resolves `dsl.If` conditions only on a task's
    single `Output`, not on named outputs. The reason is in the step summary and the MLflow run.
    """
    from pathlib import Path

    from components.evaluate import gate
    from components.kfp_support import finish, step_config

    cfg, paths = step_config(config_yaml)
    report = gate.run(Path(data.path), challenger_run_id, cfg)
    finish(paths, run_id, "gate", report)
    return bool(report["promote"])


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def deploy_step(config_yaml: str, run_id: str, data: dsl.Input[dsl.Dataset], challenger_run_id: str) -> str:
    """Register the model, export the serving bundle, move the `champion` alias."""
    from pathlib import Path

    from components.deploy import export
    from components.kfp_support import finish, load_summary, step_config

    cfg, paths = step_config(config_yaml)
    result = export.run(Path(data.path), challenger_run_id, cfg, load_summary(paths, run_id, "gate"))
    return finish(paths, run_id, "deploy", result)
