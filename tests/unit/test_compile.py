"""The compiled pipeline: deterministic, loadable, and asking the cluster for what the config says."""

from __future__ import annotations

from pathlib import Path

import yaml

from pipelines.compile import compile_pipeline
from seqrank.config import load_config

CLUSTER = [
    "infra.root=/mnt/seqrank",
    "kubeflow.pvc=seqrank-state",
    "kubeflow.train_gpus=4",
    "kubeflow.resources.train.memory=64Gi",
    "kubeflow.resources.ingest.retries=3",
    'kubeflow.train_node_selector={"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}',
    'kubeflow.tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]',
]


def _documents(path: Path) -> tuple[dict, dict]:
    spec, platform = yaml.safe_load_all(path.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _container(spec: dict, step: str) -> dict:
    return spec["deploymentSpec"]["executors"][f"exec-{step.replace('_', '-')}-step"]["container"]


def _task(spec: dict, step: str) -> dict:
    return spec["root"]["dag"]["tasks"][f"{step.replace('_', '-')}-step"]


def test_compile_is_deterministic_and_loads_back(tmp_path: Path) -> None:
    from kfp.components import load_component_from_file

    cfg = load_config(overrides=CLUSTER)
    first = compile_pipeline(cfg, tmp_path / "a.yaml")
    second = compile_pipeline(cfg, tmp_path / "b.yaml")
    assert first.read_bytes() == second.read_bytes()
    pipeline = load_component_from_file(str(first))
    assert pipeline.name == "seqrank"
    # The named parameters a KFP UI user sees, with the config's values as defaults.
    inputs = pipeline.component_spec.inputs
    for name in (
        "inputs",
        "start_date",
        "end_date",
        "model_name",
        "epochs",
        "learning_rate",
        "gate_min_delta",
    ):
        assert name in inputs, name
    assert inputs["model_name"].default == cfg.model.name
    assert inputs["epochs"].default == cfg.train.epochs
    assert str(tmp_path) not in first.read_text()
    assert str(Path.cwd()) not in first.read_text()


def test_resources_retries_caching_and_kubernetes_settings(tmp_path: Path) -> None:
    cfg = load_config(overrides=CLUSTER)
    spec, k8s = _documents(compile_pipeline(cfg, tmp_path / "p.yaml"))
    train = _container(spec, "train")["resources"]
    assert train["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert train["accelerator"]["resourceCount"] == "4"
    assert train["resourceMemoryLimit"] == "64Gi" and train["resourceCpuRequest"] == "8"
    for step in ("prepare", "ingest", "validate", "features", "validate_features", "gate", "deploy"):
        assert "accelerator" not in _container(spec, step)["resources"], step
        resources = cfg.kubeflow.resources.of(step)
        assert _container(spec, step)["resources"]["resourceCpuLimit"] == resources.cpu
    assert _task(spec, "ingest")["retryPolicy"]["maxRetryCount"] == 3
    assert _task(spec, "ingest")["retryPolicy"]["backoffDuration"] == "30s"
    # Data steps cache on their inputs; prepare (it fingerprints the inputs), features (it writes
    # the live store) and the model steps never do unless asked.
    cached = {
        step: _task(spec, step).get("cachingOptions", {}).get("enableCache", False)
        for step in ("prepare", "ingest", "validate", "features", "train", "gate")
    }
    assert cached == {
        "prepare": False,
        "ingest": True,
        "validate": True,
        "features": False,
        "train": False,
        "gate": False,
    }
    assert set(k8s) == set(spec["deploymentSpec"]["executors"])
    for name, executor in k8s.items():
        mount = executor["pvcMount"][0]
        assert (mount["constant"], mount["mountPath"]) == ("seqrank-state", "/mnt/seqrank"), name
    train_k8s = k8s["exec-train-step"]
    assert train_k8s["nodeSelector"]["labels"] == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    assert train_k8s["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert "nodeSelector" not in k8s["exec-ingest-step"]


def test_cpu_compile_requests_no_gpu(tmp_path: Path) -> None:
    spec, _ = _documents(compile_pipeline(load_config(overrides=CLUSTER), tmp_path / "cpu.yaml", gpus=0))
    assert "accelerator" not in _container(spec, "train")["resources"]
