"""The seqrank DAG: prepare → ingest → validate → features → validate features → train → gate → deploy.

`build_pipeline(cfg)` wires the steps of `components.kfp_steps` with what the compiled YAML asks
a cluster for: the image, CPU and memory per step, a GPU for training, retries with backoff,
caching per step, a volume, node selectors and tolerations (`kfp-kubernetes`). The typed run
parameters a KFP UI user sees default to `cfg`'s values; `config_yaml` holds the rest.
"""

# No `from __future__ import annotations`: kfp reads the pipeline's annotations as types.
import json
from collections.abc import Callable
from typing import Any, NamedTuple

from kfp import dsl

from components.kfp_steps import STEPS
from seqrank.config import PipelineConfig

NAME = "seqrank"
DESCRIPTION = "Raw impression/click logs to a deployed sequence-aware CTR ranking model."
# Steps whose outputs depend only on their inputs; the rest write live state or train.
DATA_STEPS = ("ingest", "validate")
MODEL_STEPS = ("train", "gate", "deploy")


class RunOutputs(NamedTuple):
    ingest: str
    validate: str
    features: str
    validate_features: str
    train: str
    gate: dsl.Artifact


def _components(image: str) -> dict[str, Any]:
    return {
        name: dsl.component(func=fn, base_image=image, install_kfp_package=False)
        for name, fn in STEPS.items()
    }


def _caching(cfg: PipelineConfig, step: str) -> bool:
    if step in DATA_STEPS:
        return cfg.kubeflow.cache_data_steps
    if step in MODEL_STEPS:
        return cfg.kubeflow.cache_model_steps
    return False


def _configure(task: dsl.PipelineTask, step: str, cfg: PipelineConfig, gpus: int) -> dsl.PipelineTask:
    from kfp import kubernetes

    kf = cfg.kubeflow
    resources = kf.resources.of(step)
    task.set_display_name(step.replace("_", " "))
    task.set_caching_options(_caching(cfg, step))
    task.set_cpu_request(resources.cpu).set_cpu_limit(resources.cpu)
    task.set_memory_request(resources.memory).set_memory_limit(resources.memory)
    if resources.retries:
        task.set_retry(
            num_retries=resources.retries, backoff_duration=f"{kf.retry_backoff_seconds}s", backoff_factor=2.0
        )
    if step == "train" and gpus > 0:
        task.set_accelerator_type(kf.accelerator).set_accelerator_limit(gpus)
    if kf.pvc:
        kubernetes.mount_pvc(task, pvc_name=kf.pvc, mount_path=cfg.infra.root)
    selector = {**kf.node_selector, **(kf.train_node_selector if step == "train" else {})}
    for key, value in sorted(selector.items()):
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    if step == "train":
        for t in kf.tolerations:
            kubernetes.add_toleration(
                task, key=t.key, operator=t.operator, value=t.value or None, effect=t.effect or None
            )
    return task


def build_pipeline(cfg: PipelineConfig, gpus: int | None = None) -> Callable[..., Any]:
    """The pipeline function for `cfg`; `gpus` overrides `kubeflow.train_gpus` (0: CPU only)."""
    steps = _components(cfg.kubeflow.image)
    gpus = cfg.kubeflow.train_gpus if gpus is None else gpus

    def task(step: str, **kwargs: Any) -> dsl.PipelineTask:
        return _configure(steps[step](**kwargs), step, cfg, gpus)

    # One line of JSON (which is YAML): kfp writes defaults into comment lines of the compiled file,
    # where a multi-line default would break the YAML.
    config_default = json.dumps(cfg.to_dict(), sort_keys=True)

    @dsl.pipeline(name=NAME, description=DESCRIPTION)
    def seqrank(
        config_yaml: str = config_default,
        inputs: list = list(cfg.input),  # noqa: B006 - kfp reads the default; nothing mutates it
        users: str = "",
        items: str = "",
        start_date: str = "",
        end_date: str = "",
        model_name: str = cfg.model.name,
        epochs: int = cfg.train.epochs,
        learning_rate: float = cfg.train.lr,
        batch_size: int = cfg.train.batch_size,
        gate_metric: str = cfg.gate.metric,
        gate_min_delta: float = cfg.gate.min_delta,
        gate_floor: float = cfg.gate.floor,
    ) -> RunOutputs:
        prepare = task(
            "prepare",
            config_yaml=config_yaml,
            inputs=inputs,
            users=users,
            items=items,
            start_date=start_date,
            end_date=end_date,
            model_name=model_name,
            epochs=epochs,
            learning_rate=learning_rate,
            batch_size=batch_size,
            gate_metric=gate_metric,
            gate_min_delta=gate_min_delta,
            gate_floor=gate_floor,
        )
        config = prepare.outputs["config"]
        ingest = task(
            "ingest",
            config=prepare.outputs["ingest_config"],
            inputs=inputs,
            users=users,
            items=items,
            start_date=start_date,
            end_date=end_date,
            inputs_fingerprint=prepare.outputs["inputs_fingerprint"],
        )
        data = ingest.outputs["data"]
        validate = task("validate", config=prepare.outputs["validate_config"], data=data)
        # Nothing downstream sees data that failed validation; training also waits for the feature
        # tables to pass theirs, so a model is never trained beside a broken online store.
        features = task("features", config=config, data=data).after(validate)
        store = features.outputs["store"]
        validate_features = task("validate_features", config=config, data=data, store=store)
        train = task("train", config=config, data=data, pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER).after(
            validate_features
        )
        model = train.outputs["model"]
        gate = task("gate", config=config, data=data, model=model)
        with dsl.If(gate.outputs["Output"] == True):  # noqa: E712 - kfp builds a condition from ==
            task(
                "deploy",
                config=config,
                data=data,
                model=model,
                store=store,
                gate_report=gate.outputs["report"],
            )
        return RunOutputs(
            ingest=ingest.outputs["Output"],
            validate=validate.outputs["Output"],
            features=features.outputs["Output"],
            validate_features=validate_features.outputs["Output"],
            train=train.outputs["Output"],
            gate=gate.outputs["report"],
        )

    return seqrank
