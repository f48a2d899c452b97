"""The KServe manifest deploy writes: every field from the config, the KServe v1beta1 shape, a
ConfigMap whose config and Feast store the service really runs on."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.deploy.export import (
    CONFIG_MOUNT,
    MODEL_MOUNT,
    kserve_feature_store,
    kserve_manifest,
    kserve_name,
    kserve_yaml,
    write_kserve_manifest,
)
from seqrank.config import SERVE_HOST_ENV, ConfigError, PipelineConfig, from_dict, load_config

CLUSTER = [
    "input=['/mnt/seqrank/logs/*.jsonl']",
    "infra.root=/mnt/seqrank",
    "infra.mlflow_tracking_uri=http://mlflow.mlflow.svc:5000",
    "infra.feast.online_store=redis",
    "infra.feast.redis_connection=redis-master.feast.svc:6379",
    "kubeflow.image=registry.example.com/ml/seqrank:1.2.3",
    "kubeflow.pvc=seqrank-state",
    "kubeflow.node_selector={'pool': 'cpu'}",
    "serve.port=8900",
    "serve.cpu=3",
    "serve.memory=6Gi",
    "serve.min_replicas=2",
    "serve.max_replicas=5",
]
VERSION = "seqrank-ranker/7"
# Fields of KServe v1beta1's PredictorSpec beyond the inlined PodSpec (ComponentExtensionSpec and
# the model-server shorthands), the ones a custom-container predictor may use.
PREDICTOR_EXTENSION = {
    "minReplicas",
    "maxReplicas",
    "scaleTarget",
    "scaleMetric",
    "containerConcurrency",
    "timeout",
    "canaryTrafficPercent",
    "logger",
    "batcher",
    "labels",
    "annotations",
    "deploymentStrategy",
}


def _cluster(*extra: str) -> PipelineConfig:
    return load_config(overrides=[*CLUSTER, *extra])


def _container(documents: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = documents[1]["spec"]["predictor"]["containers"]
    return container


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"]}


def _round_trip(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    """`obj` through the Kubernetes API model `kind` and back: unknown or mistyped fields change it."""
    from kubernetes.client import ApiClient

    class _Response:  # what ApiClient.deserialize reads
        data = json.dumps(obj)

    client = ApiClient()
    return client.sanitize_for_serialization(client.deserialize(_Response(), kind))


def test_every_field_comes_from_the_cluster_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SERVE_HOST_ENV, raising=False)
    cfg = _cluster()
    config_map, isvc = kserve_manifest(cfg, VERSION)
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["kind"] == "InferenceService"
    assert isvc["metadata"]["name"] == "seqrank-ranker"
    assert isvc["metadata"]["annotations"] == {
        "serving.kserve.io/deploymentMode": "RawDeployment",
        "seqrank/model-version": VERSION,
    }
    predictor = isvc["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (2, 5)
    assert predictor["nodeSelector"] == {"pool": "cpu"}

    container = _container([config_map, isvc])
    assert container["name"] == "kserve-container"  # the container KServe's storage initializer serves
    assert container["image"] == cfg.kubeflow.image
    assert container["command"] == ["seqrank"]
    assert container["args"] == [
        "serve",
        "--config",
        "/etc/seqrank/config.yaml",
        "--bundle",
        MODEL_MOUNT,
        "--feast",
        "/etc/seqrank/feast",
    ]
    env = _env(container)
    assert env["STORAGE_URI"] == "pvc://seqrank-state/serving/champion"
    assert env[SERVE_HOST_ENV] == "0.0.0.0"
    assert env["SEQRANK_MODEL_VERSION"] == VERSION
    assert container["ports"] == [{"name": "http1", "containerPort": 8900, "protocol": "TCP"}]
    for probe in ("readinessProbe", "livenessProbe"):
        path = "/readyz" if probe == "readinessProbe" else "/healthz"
        assert container[probe]["httpGet"] == {"path": path, "port": 8900}, probe
    assert (
        container["livenessProbe"]["initialDelaySeconds"] > container["readinessProbe"]["initialDelaySeconds"]
    )
    assert container["resources"] == {
        "requests": {"cpu": "3", "memory": "6Gi"},
        "limits": {"cpu": "3", "memory": "6Gi"},
    }
    volumes = {v["name"]: v for v in predictor["volumes"]}
    assert volumes["seqrank-state"]["persistentVolumeClaim"] == {"claimName": "seqrank-state"}
    assert volumes["seqrank-serve"]["configMap"]["name"] == config_map["metadata"]["name"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["seqrank-state"]["mountPath"] == "/mnt/seqrank"
    assert mounts["seqrank-serve"] == {
        "name": "seqrank-serve",
        "mountPath": str(CONFIG_MOUNT),
        "readOnly": True,
    }
    # The files the args name are the ConfigMap's keys at those paths.
    items = {i["path"]: i["key"] for i in volumes["seqrank-serve"]["configMap"]["items"]}
    assert items == {"config.yaml": "config.yaml", "feast/feature_store.yaml": "feature_store.yaml"}
    assert set(config_map["data"]) == set(items.values())


def test_the_manifest_has_the_kserve_v1beta1_shape() -> None:
    documents = kserve_manifest(_cluster(), VERSION)
    text = yaml.safe_dump_all(documents, sort_keys=False)
    assert list(yaml.safe_load_all(text)) == documents
    config_map, isvc = documents
    assert set(isvc) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(isvc["spec"]) == {"predictor"}
    predictor = dict(isvc["spec"]["predictor"])
    pod = {key: predictor.pop(key) for key in list(predictor) if key not in PREDICTOR_EXTENSION}
    assert set(pod) == {"containers", "volumes", "nodeSelector"}
    assert all(isinstance(predictor[key], int) for key in ("minReplicas", "maxReplicas"))
    # The inlined PodSpec and the ConfigMap survive the Kubernetes API models unchanged: no unknown
    # field, no wrong type (a number where a quantity string belongs, a misspelled probe key).
    assert _round_trip(pod, "V1PodSpec") == pod
    assert _round_trip(config_map, "V1ConfigMap") == config_map
    assert _round_trip(isvc["metadata"], "V1ObjectMeta") == isvc["metadata"]
    (container,) = pod["containers"]
    ports = {p["containerPort"] for p in container["ports"]}
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] in ports
    names = [v["name"] for v in pod["volumes"]]
    assert len(names) == len(set(names))
    assert {m["name"] for m in container["volumeMounts"]} == set(names)
    # The names KServe derives (`<name>-predictor`) and the ConfigMap's stay DNS labels.
    for name in (isvc["metadata"]["name"] + "-predictor", config_map["metadata"]["name"]):
        assert len(name) <= 63 and name.replace("-", "").isalnum() and name == name.lower()


def test_the_configmap_config_is_the_run_config_and_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SERVE_HOST_ENV, raising=False)
    cfg = _cluster()
    config_map, _ = kserve_manifest(cfg, VERSION)
    served = yaml.safe_load(config_map["data"]["config.yaml"])
    assert "state_dir" not in served  # a path of the machine that wrote the manifest
    expected = cfg.to_dict()
    expected.pop("state_dir")
    assert from_dict(served).to_dict() == {**expected, "state_dir": ".seqrank"}
    store = yaml.safe_load(config_map["data"]["feature_store.yaml"])
    assert store["project"] == cfg.features.project
    assert store["online_store"] == {
        "type": "redis",
        "redis_type": "redis",
        "connection_string": "redis-master.feast.svc:6379",
    }
    assert store["registry"]["path"] == "/mnt/seqrank/feast/registry.db"  # on the claim, absolute


def test_the_configmap_feature_store_serves_the_features_steps_store(
    serving_env: dict[str, Path], tmp_path: Path
) -> None:
    """The service, given the ConfigMap's feature_store.yaml in a read-only directory of its own (as
    the pod mounts it), reads the store the features step wrote on the volume."""
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from tests.helpers.serving import SERVE_CFG, raw_ids

    feast_dir = serving_env["feast"]
    cfg = from_dict(
        {
            "features": {"project": "seqrank_test"},
            "infra": {"root": str(feast_dir.parent)},
            "kubeflow": {"pvc": "seqrank-state"},
        }
    )
    assert kserve_feature_store(cfg, feast_dir)["online_store"]["path"] == str(feast_dir / "online.db")
    config_map, _ = kserve_manifest(cfg, VERSION, feast_dir=feast_dir)
    text = config_map["data"]["feature_store.yaml"]
    store = yaml.safe_load(text)
    own = yaml.safe_load((feast_dir / "feature_store.yaml").read_text())
    for key in ("registry", "online_store"):
        own[key].pop("path")
        assert {k: v for k, v in store[key].items() if k != "path"} == own[key], key
    mounted = tmp_path / "etc-seqrank" / "feast"
    mounted.mkdir(parents=True)
    (mounted / "feature_store.yaml").write_text(text)
    mounted.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with TestClient(create_app(serving_env["bundle"], mounted, SERVE_CFG)) as client:
            assert client.get("/healthz").status_code == 200
            users, items = raw_ids(serving_env["ingest"], "user"), raw_ids(serving_env["ingest"], "item")
            response = client.post("/rank", json={"user_id": users[3], "candidates": [items[1], items[2]]})
            assert response.status_code == 200, response.text
            assert len(response.json()["items"]) == 2
        assert sorted(p.name for p in mounted.iterdir()) == ["feature_store.yaml"]  # wrote nothing there
    finally:
        mounted.chmod(stat.S_IRWXU)


def test_storage_uri_from_the_volume_or_the_serve_section() -> None:
    assert _env(_container(kserve_manifest(_cluster(), VERSION)))["STORAGE_URI"] == (
        "pvc://seqrank-state/serving/champion"
    )
    custom = _cluster("serve.storage_uri=gs://bucket/seqrank/serving/champion")
    assert _env(_container(kserve_manifest(custom, VERSION)))["STORAGE_URI"] == (
        "gs://bucket/seqrank/serving/champion"
    )
    with pytest.raises(ValueError, match=r"kubeflow\.pvc .* or serve\.storage_uri"):
        kserve_manifest(_cluster("kubeflow.pvc=''"), VERSION)
    with pytest.raises(ValueError, match=r"needs infra\.root"):
        kserve_manifest(_cluster("infra.root=''"), VERSION)


def test_without_a_volume_every_feast_file_must_be_remote(monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = ["kubeflow.pvc=''", "serve.storage_uri=gs://bucket/serving/champion"]
    with pytest.raises(ValueError, match=r"infra\.feast\.registry"):
        kserve_manifest(_cluster(*bucket), VERSION)
    remote = _cluster(*bucket, "infra.feast.registry=gs://bucket/feast/registry.db")
    config_map, isvc = kserve_manifest(remote, VERSION)
    assert yaml.safe_load(config_map["data"]["feature_store.yaml"])["registry"]["path"] == (
        "gs://bucket/feast/registry.db"
    )
    assert [v["name"] for v in isvc["spec"]["predictor"]["volumes"]] == ["seqrank-serve"]
    # Nowhere shared to write the request log: it is off in the pods.
    assert yaml.safe_load(config_map["data"]["config.yaml"])["serve"]["request_log_sample"] == 0.0
    with pytest.raises(ValueError, match=r"infra\.feast\.online_store"):
        kserve_manifest(
            _cluster(*bucket, "infra.feast.registry=gs://b/r.db", "infra.feast.online_store=sqlite"), VERSION
        )
    # With a volume, a Feast directory off it cannot be reached either.
    with pytest.raises(ValueError, match="do not mount"):
        kserve_manifest(_cluster(), VERSION, feast_dir=Path("/elsewhere/feast"))


def test_a_new_model_version_changes_the_pod_template() -> None:
    cfg = _cluster()
    first, second = kserve_manifest(cfg, "m/1")[1], kserve_manifest(cfg, "m/2")[1]
    assert first["spec"]["predictor"]["containers"] != second["spec"]["predictor"]["containers"]
    assert kserve_manifest(cfg, "m/1") == kserve_manifest(cfg, "m/1")


def test_kserve_yaml_on_a_cluster_and_not_on_a_laptop(tmp_path: Path) -> None:
    target = tmp_path / "kserve.yaml"
    text = kserve_yaml(_cluster(), VERSION)
    assert text is not None
    write_kserve_manifest(target, text)
    assert list(yaml.safe_load_all(target.read_text())) == kserve_manifest(_cluster(), VERSION)
    assert "config.yaml: |" in text  # the ConfigMap's files read as files
    assert [p.name for p in tmp_path.iterdir()] == ["kserve.yaml"]  # written in one rename
    # A laptop config names no way for pods to reach the bundle: no manifest, and no stale one left.
    assert kserve_yaml(load_config(), VERSION) is None
    write_kserve_manifest(target, None)
    assert not target.exists()
    # A cluster config the pods could not use fails the deploy before it writes anything.
    with pytest.raises(ValueError):
        kserve_yaml(_cluster("kubeflow.pvc=''", "serve.storage_uri=gs://b/c"), VERSION)


@pytest.mark.parametrize(
    ("registered", "name"),
    [
        ("seqrank-ranker", "seqrank-ranker"),
        ("SeqRank_Ranker.v2", "seqrank-ranker-v2"),
        ("2026 model", "seqrank-2026-model"),
        ("x" * 80, "x" * 53),
    ],
)
def test_kserve_name_is_a_dns_label(registered: str, name: str) -> None:
    assert kserve_name(load_config(overrides=[f"train.registered_model={registered!r}"])) == name


def test_serve_replicas_and_quantities_are_validated() -> None:
    with pytest.raises(ConfigError, match="min_replicas = 3 exceeds max_replicas = 2"):
        load_config(overrides=["serve.min_replicas=3", "serve.max_replicas=2"])
    with pytest.raises(ConfigError, match=r"serve\.memory"):
        load_config(overrides=["serve.memory=lots"])
    assert load_config(overrides=["serve.cpu=1.5"]).serve.cpu == "1.5"


def test_deploy_writes_the_manifest_and_refuses_one_pods_cannot_use(
    serving_env: dict[str, Path], tmp_path: Path
) -> None:
    """The deploy step end to end on a local MLflow: the manifest beside the bundle on a cluster
    config; none on a laptop config; a config whose pods could not reach the Feast store fails
    before the bundle or the champion alias change."""
    import shutil

    from components import tracking
    from components.deploy import export
    from seqrank.paths import StatePaths

    def config(root: Path, *extra: str) -> PipelineConfig:
        return load_config(overrides=[f"infra.root={root}", "features.project=seqrank_test", *extra])

    def logged_run(paths: StatePaths) -> str:
        client = tracking.client(paths)
        run = client.create_run(tracking.experiment_id(paths, "seqrank"))
        client.log_artifacts(run.info.run_id, str(serving_env["bundle"] / "model"), artifact_path="model")
        client.set_terminated(run.info.run_id)
        return run.info.run_id

    report = {"reason": "test", "challenger_metrics": {}}
    root = tmp_path / "state"
    cluster = config(root, "kubeflow.pvc=seqrank-state")
    paths = StatePaths.of(cluster)
    shutil.copytree(serving_env["feast"], paths.feast)  # the features step's store, on the volume
    store = {"feast_dir": str(paths.feast), "project": "seqrank_test", "online_store": "sqlite"}
    first = export.run(serving_env["ingest"], logged_run(paths), cluster, report, store=store)
    _, isvc = yaml.safe_load_all((paths.serving / "kserve.yaml").read_text())
    assert isvc["metadata"]["annotations"]["seqrank/model-version"] == first["model_version"]
    assert _env(isvc["spec"]["predictor"]["containers"][0])["STORAGE_URI"] == (
        "pvc://seqrank-state/serving/champion"
    )

    # The Feast store off the volume: the second model is registered but neither exported nor promoted.
    elsewhere = {**store, "feast_dir": str(serving_env["feast"])}
    with pytest.raises(ValueError, match="do not mount"):
        export.run(serving_env["ingest"], logged_run(paths), cluster, report, store=elsewhere)
    assert (
        json.loads((paths.champion_bundle / "bundle.json").read_text())["model_version"]
        == (first["model_version"])
    )
    champion = tracking.champion_version(paths, cluster.train.registered_model)
    assert f"{cluster.train.registered_model}/{champion.version}" == first["model_version"]

    laptop = config(tmp_path / "laptop")
    laptop_paths = StatePaths.of(laptop)
    export.run(serving_env["ingest"], logged_run(laptop_paths), laptop, report, store=store)
    assert (laptop_paths.champion_bundle / "bundle.json").is_file()
    assert not (laptop_paths.serving / "kserve.yaml").exists()
