"""The kfp steps: thin bodies over each step's plain `run` function (pipelines/ wires them).

These are plain functions; `pipelines.pipeline` turns each into a component with the configured
image (`kubeflow.image`). kfp ships a body's source to the executor, so imports live inside the
bodies, and this module must not use `from __future__ import annotations` (kfp reads the
annotations as types).

What one step hands the next is a kfp output: the ingest output (a Dataset), the validation
profile, a reference to the Feast store, the model (MLflow run and URI), the gate report. Shared
state (the vocab, the drift baseline, MLflow, the Feast store itself) is found through the config's
infra section. No step whose result depends only on its inputs takes anything that changes every
run, so kfp's cache can hit: ingest keys on the inputs' fingerprint, validation on ingest's output.
"""

from typing import NamedTuple

from kfp import dsl


def prepare_step(
    config_yaml: str,
    inputs: list,
    users: str,
    items: str,
    start_date: str,
    end_date: str,
    model_name: str,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    gate_metric: str,
    gate_min_delta: float,
    gate_floor: float,
) -> NamedTuple(  # type: ignore[valid-type]  # kfp reads this annotation as the outputs
    "Prepared",
    [("config", str), ("ingest_config", str), ("validate_config", str), ("inputs_fingerprint", str)],
):
    """Apply the run's typed parameters to the config, check it, fingerprint the inputs.

    Never cached: an input file can change under the same name; its fingerprint is what lets the
    ingest step's cache tell.
    """
    from components import prepare
    from components.kfp_support import setup_step

    setup_step()
    cfg = prepare.resolve(
        config_yaml,
        model_name=model_name,
        epochs=epochs,
        learning_rate=learning_rate,
        batch_size=batch_size,
        gate_metric=gate_metric,
        gate_min_delta=gate_min_delta,
        gate_floor=gate_floor,
    )
    prepare.check_window(start_date, end_date)
    fingerprint = prepare.fingerprint([*inputs, *(p for p in (users, items) if p)])
    # A plain tuple: only this body's source reaches the executor, so no class defined beside it.
    return (
        cfg.to_yaml(),
        prepare.config_slice(cfg, "ingest"),
        prepare.config_slice(cfg, "validate"),
        fingerprint,
    )


def ingest_step(
    config: str,
    inputs: list,
    users: str,
    items: str,
    start_date: str,
    end_date: str,
    inputs_fingerprint: str,
    data: dsl.Output[dsl.Dataset],
) -> str:
    """Beam ingest of raw logs into examples, behaviors, vocab (DESIGN §3); returns the manifest.

    `inputs_fingerprint` is not read: it is here so the cache key changes when an input does.
    """
    from pathlib import Path

    from components import ingest
    from components.kfp_support import step_config, summary

    cfg, paths = step_config(config)
    manifest = ingest.run(
        list(inputs),
        Path(data.path),
        cfg.ingest,
        users=Path(users) if users else None,
        items=Path(items) if items else None,
        vocab_dir=paths.vocab,
        **({"start": start_date, "end": end_date} if start_date or end_date else {}),
    )
    data.metadata["examples"] = int(manifest.get("examples", 0))
    return summary({**manifest, "output": data.path})


def validate_step(
    config: str, data: dsl.Input[dsl.Dataset], docs: dsl.Output[dsl.HTML], profile: dsl.Output[dsl.Artifact]
) -> str:
    """Great Expectations suites and drift; raising here stops the pipeline before training."""
    from pathlib import Path

    from components import validate
    from components.kfp_support import step_config, summary
    from components.validate import drift
    from seqrank.storage import write_json

    cfg, paths = step_config(config)
    report = validate.run(
        Path(data.path), cfg.validate_, docs_dir=Path(docs.path), against=paths.accepted_validation
    )
    validate.accept(Path(docs.path), paths.accepted_validation)
    write_json(Path(profile.path), drift.load_profile(Path(docs.path)) or {})
    return summary(report)


def features_step(config: str, data: dsl.Input[dsl.Dataset], store: dsl.Output[dsl.Artifact]) -> str:
    """Feast apply and materialization of profiles and behavior sequences into a staged store."""
    from pathlib import Path

    from components import features
    from components.deploy import releases
    from components.kfp_support import step_config, summary, write_store_ref

    cfg, _ = step_config(config)
    # A staged store version: the service keeps reading the live one until deploy switches both
    # model and features, so a run the validation or the gate rejects changes nothing it serves.
    feast_dir, project = releases.stage_store(cfg)
    features_cfg = cfg.features.model_copy(update={"project": project})
    result = features.run(Path(data.path), feast_dir, features_cfg, store_cfg=cfg.infra.feast)
    write_store_ref(store, result)
    return summary(result)


def validate_features_step(
    config: str,
    data: dsl.Input[dsl.Dataset],
    store: dsl.Input[dsl.Artifact],
    docs: dsl.Output[dsl.HTML],
) -> str:
    """Suites over the feature tables (caps, ids, freshness); raising stops the run before training."""
    from pathlib import Path

    from components import validate
    from components.kfp_support import read_store_ref, step_config, summary

    cfg, _ = step_config(config)
    feast_dir = Path(read_store_ref(store)["feast_dir"])
    report = validate.run_features(feast_dir, Path(data.path), cfg.validate_, cfg.features, Path(docs.path))
    return summary(report)


def train_step(
    config: str,
    data: dsl.Input[dsl.Dataset],
    pipeline_run: str,
    model: dsl.Output[dsl.Model],
    metrics: dsl.Output[dsl.Metrics],
) -> str:
    """Train the configured model as one MLflow run; the model output names that run."""
    from pathlib import Path

    from components import train
    from components.kfp_support import step_config, summary, write_model_ref

    cfg, paths = step_config(config)
    result = train.run(Path(data.path), cfg, tags={"pipeline_run": pipeline_run})
    for name, value in result["metrics"].items():
        metrics.log_metric(name, float(value))
    write_model_ref(model, paths, result)
    return summary({**result, "pipeline_run": pipeline_run})


def gate_step(
    config: str,
    data: dsl.Input[dsl.Dataset],
    model: dsl.Input[dsl.Model],
    report: dsl.Output[dsl.Artifact],
) -> bool:
    """Challenger vs champion on the same test data; True means promote, the reasons are in `report`.

    The decision is the one plain output on purpose: kfp's local runner resolves `dsl.If`
    conditions on a task's `Output`, not on the fields of a NamedTuple.
    """
    from pathlib import Path

    from components.evaluate import gate
    from components.kfp_support import read_model_ref, step_config
    from seqrank.storage import write_json

    cfg, _ = step_config(config)
    decision = gate.run(Path(data.path), read_model_ref(model)["mlflow_run_id"], cfg)
    write_json(Path(report.path), decision)
    report.metadata["promote"] = bool(decision["promote"])
    return bool(decision["promote"])


def deploy_step(
    config: str,
    data: dsl.Input[dsl.Dataset],
    model: dsl.Input[dsl.Model],
    store: dsl.Input[dsl.Artifact],
    gate_report: dsl.Input[dsl.Artifact],
) -> str:
    """Register the model, export the serving bundle, move the `champion` alias."""
    from pathlib import Path

    from components.deploy import export
    from components.kfp_support import read_model_ref, read_store_ref, step_config, summary
    from seqrank.storage import read_json

    cfg, _ = step_config(config)
    decision = read_json(Path(gate_report.path))
    if not decision.get("promote"):
        raise RuntimeError(f"deploy called for a model the gate rejected: {decision.get('reason')}")
    result = export.run(
        Path(data.path),
        read_model_ref(model)["mlflow_run_id"],
        cfg,
        decision,
        store=read_store_ref(store),
    )
    return summary(result)


STEPS = {
    "prepare": prepare_step,
    "ingest": ingest_step,
    "validate": validate_step,
    "features": features_step,
    "validate_features": validate_features_step,
    "train": train_step,
    "gate": gate_step,
    "deploy": deploy_step,
}
