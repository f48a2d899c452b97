"""The seqrank DAG: ingest → validate → features → train → gate → deploy. Wiring only."""

from kfp import dsl

from components.kfp_steps import (
    deploy_step,
    features_step,
    gate_step,
    ingest_step,
    train_step,
    validate_features_step,
    validate_step,
)


@dsl.pipeline(name="seqrank", description="Raw logs to a deployed sequence-aware CTR ranking model.")
def seqrank_pipeline(config_yaml: str, run_id: str, inputs: list, users: str = "", items: str = "") -> None:
    ingest = ingest_step(config_yaml=config_yaml, run_id=run_id, inputs=inputs, users=users, items=items)
    data = ingest.outputs["data"]
    validate = validate_step(config_yaml=config_yaml, run_id=run_id, data=data)
    # Nothing downstream sees data that failed validation; training also waits for the feature
    # tables to pass theirs, so a model is never trained beside a broken online store.
    features = features_step(config_yaml=config_yaml, run_id=run_id, data=data).after(validate)
    validate_features = validate_features_step(config_yaml=config_yaml, run_id=run_id, data=data).after(
        features
    )
    train = train_step(config_yaml=config_yaml, run_id=run_id, data=data).after(validate_features)
    gate = gate_step(
        config_yaml=config_yaml, run_id=run_id, data=data, challenger_run_id=train.outputs["Output"]
    )
    with dsl.If(gate.output == True):  # noqa: E712 - kfp builds a condition from ==
        deploy_step(
            config_yaml=config_yaml, run_id=run_id, data=data, challenger_run_id=train.outputs["Output"]
        ).after(features)
