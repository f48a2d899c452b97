"""The deploy step: register the promoted model, export its serving bundle, move the champion alias."""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
import uuid
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from components import tracking
from components.deploy import releases
from feature_repo.store_config import ONLINE_DB_FILE, REGISTRY_FILE, store_config
from seqrank.config import SERVE_HOST_ENV, PipelineConfig
from seqrank.paths import StatePaths
from seqrank.storage import atomic_dir, write_json

log = logging.getLogger(__name__)


# KServe's storage initializer fills this directory from STORAGE_URI, in the container it finds by
# this name.
MODEL_MOUNT = "/mnt/models"
KSERVE_CONTAINER = "kserve-container"
# The ConfigMap the service reads: its config and the Feast store's feature_store.yaml.
CONFIG_MOUNT = PurePosixPath("/etc/seqrank")
# /readyz answers 200 only while the model and the online store are loaded and answering; /healthz
# only says the process is alive, so a store outage takes the pod out of rotation without a restart.
READINESS_PATH = "/readyz"
LIVENESS_PATH = "/healthz"
# KServe names the predictor `<name>-predictor`, which must stay a DNS label (63 characters).
_MAX_NAME = 53
DEPLOY_RECORD = "deploy.json"
_LABELS = {"app.kubernetes.io/name": "seqrank", "app.kubernetes.io/component": "ranking-service"}


class _ManifestDumper(yaml.SafeDumper):
    """Writes multi-line strings (the files a ConfigMap holds) as literal blocks, readable as files."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_ManifestDumper.add_representer(str, _represent_str)


def kserve_name(cfg: PipelineConfig) -> str:
    """The InferenceService name: the registered model's name as a DNS label."""
    name = re.sub(r"[^a-z0-9-]+", "-", cfg.train.registered_model.lower()).strip("-")
    if not name[:1].isalpha():
        name = f"seqrank-{name}".rstrip("-")
    return name[:_MAX_NAME].rstrip("-")


def kserve_storage_uri(cfg: PipelineConfig) -> str:
    """Where the storage initializer fetches the champion bundle: `serve.storage_uri`, or the bundle
    deploy writes under infra.root on the shared volume (`pvc://<claim>/serving/champion`)."""
    if cfg.serve.storage_uri:
        return cfg.serve.storage_uri
    if cfg.kubeflow.pvc and cfg.infra.root:
        paths = StatePaths.of(cfg)
        return f"pvc://{cfg.kubeflow.pvc}/{paths.champion_bundle.relative_to(paths.root).as_posix()}"
    raise ValueError(
        "no storage URI for the champion bundle: set kubeflow.pvc (the volume mounted at infra.root) "
        "or serve.storage_uri"
    )


def kserve_feature_store(cfg: PipelineConfig, feast_dir: Path) -> dict[str, Any]:
    """The feature_store.yaml of the service pods: the features step's, with no relative path.

    The pods read it from a ConfigMap, so a file registry and a SQLite online store are named where
    the shared volume (mounted at infra.root) holds them; Redis and s3:// or gs:// registries are
    reached as the steps reach them. Raises ValueError when a file lies outside that volume.
    """
    store = cfg.infra.feast
    conf = store_config(cfg.features.project, store)
    feast = PurePosixPath(feast_dir)
    files: list[tuple[str, str, PurePosixPath]] = []
    if "://" not in store.registry:
        registry = feast / (store.registry or REGISTRY_FILE)  # an absolute registry path stays as it is
        conf["registry"]["path"] = str(registry)
        files.append(("infra.feast.registry", store.registry, registry))
    if store.online_store == "sqlite":
        online = feast / ONLINE_DB_FILE
        conf["online_store"]["path"] = str(online)
        files.append(("infra.feast.online_store", store.online_store, online))
    root = PurePosixPath(cfg.infra.root) if cfg.infra.root else None
    for field, value, path in files:
        if not (cfg.kubeflow.pvc and root is not None and path.is_relative_to(root)):
            raise ValueError(
                f"{field} = {value!r} keeps {path} on a disk the service pods do not mount: set "
                "kubeflow.pvc (mounted at infra.root, holding the Feast directory), or use a Redis online "
                "store and an s3:// or gs:// registry"
            )
    return conf


def kserve_manifest(
    cfg: PipelineConfig, model_version: str, feast_dir: Path | None = None
) -> list[dict[str, Any]]:
    """A ConfigMap and a KServe InferenceService serving `model_version`: `kubectl apply -f` both.

    The predictor runs `seqrank serve` in `kubeflow.image` (the image of every step) over the bundle
    the storage initializer puts in /mnt/models, with the Feast store of `feast_dir` (default: the
    one under infra.root) through a ConfigMap that also holds the config; the shared volume is
    mounted at infra.root for the registry and the request log. A new model version changes the
    pod template, so applying the manifest again rolls the pods onto the new bundle.

    Raises ValueError when the pods could not reach the bundle or the Feast store.
    """
    serve, kf = cfg.serve, cfg.kubeflow
    if kf.pvc and not cfg.infra.root:
        raise ValueError(f"kubeflow.pvc = {kf.pvc!r} needs infra.root, the path the volume is mounted at")
    name = kserve_name(cfg)
    storage_uri = kserve_storage_uri(cfg)
    feature_store = kserve_feature_store(cfg, Path(feast_dir) if feast_dir else StatePaths.of(cfg).feast)
    pod_config = cfg.to_dict()
    pod_config.pop("state_dir")  # a path of the machine that wrote the manifest
    if not kf.pvc:
        # The request log would go to the pod's own disk and vanish with it.
        pod_config["serve"]["request_log_sample"] = 0.0
    config_map_name = f"{name}-serve"
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": config_map_name, "labels": dict(_LABELS)},
        "data": {
            "config.yaml": yaml.safe_dump(pod_config, sort_keys=False),
            "feature_store.yaml": yaml.safe_dump(feature_store, sort_keys=False),
        },
    }
    volumes: list[dict[str, Any]] = [
        {
            "name": "seqrank-serve",
            "configMap": {
                "name": config_map_name,
                "items": [
                    {"key": "config.yaml", "path": "config.yaml"},
                    {"key": "feature_store.yaml", "path": "feast/feature_store.yaml"},
                ],
            },
        }
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "seqrank-serve", "mountPath": str(CONFIG_MOUNT), "readOnly": True}
    ]
    if kf.pvc:
        volumes.append({"name": "seqrank-state", "persistentVolumeClaim": {"claimName": kf.pvc}})
        mounts.append({"name": "seqrank-state", "mountPath": cfg.infra.root})
    resources = {"cpu": serve.cpu, "memory": serve.memory}
    container = {
        "name": KSERVE_CONTAINER,
        "image": kf.image,
        "command": ["seqrank"],
        "args": [
            "serve",
            "--config",
            str(CONFIG_MOUNT / "config.yaml"),
            "--bundle",
            MODEL_MOUNT,
            "--feast",
            str(CONFIG_MOUNT / "feast"),
        ],
        "env": [
            {"name": "STORAGE_URI", "value": storage_uri},
            # The image sets it too; here it holds for any image built from another Dockerfile.
            {"name": SERVE_HOST_ENV, "value": "0.0.0.0"},
            {"name": "SEQRANK_MODEL_VERSION", "value": model_version},
        ],
        "ports": [{"name": "http1", "containerPort": serve.port, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": READINESS_PATH, "port": serve.port},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        # Importing torch and Feast and loading the bundle take tens of seconds before the port opens.
        "livenessProbe": {
            "httpGet": {"path": LIVENESS_PATH, "port": serve.port},
            "initialDelaySeconds": 120,
            "periodSeconds": 20,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "resources": {"requests": dict(resources), "limits": dict(resources)},
        "volumeMounts": mounts,
    }
    predictor: dict[str, Any] = {
        "minReplicas": serve.min_replicas,
        "maxReplicas": serve.max_replicas,
        "containers": [container],
        "volumes": volumes,
    }
    if kf.node_selector:
        predictor["nodeSelector"] = dict(sorted(kf.node_selector.items()))
    inference_service = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "labels": dict(_LABELS),
            "annotations": {
                "serving.kserve.io/deploymentMode": serve.deployment_mode,
                "seqrank/model-version": model_version,
            },
        },
        "spec": {"predictor": predictor},
    }
    return [config_map, inference_service]


def kserve_yaml(cfg: PipelineConfig, model_version: str, feast_dir: Path | None = None) -> str | None:
    """`kserve_manifest` as the YAML to apply; None for a config that names no way for KServe pods
    to reach the bundle (a laptop's: neither kubeflow.pvc nor serve.storage_uri)."""
    if not (cfg.kubeflow.pvc or cfg.serve.storage_uri):
        return None
    documents = kserve_manifest(cfg, model_version, feast_dir)
    return yaml.dump_all(documents, Dumper=_ManifestDumper, sort_keys=False)


def write_kserve_manifest(target: Path, text: str | None) -> None:
    """Write `text` to `target` in one rename; None removes the file, since a manifest left from an
    earlier config would name another model."""
    if text is None:
        target.unlink(missing_ok=True)
        return
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(text)
    os.replace(tmp, target)


def export_bundle(data_dir: Path, model_dir: Path, target: Path, meta: dict[str, Any]) -> None:
    """Write the serving bundle (model, vocab, item table, metadata) to `target` in one rename."""
    with atomic_dir(target) as tmp:
        shutil.copytree(model_dir, tmp / "model")
        shutil.copytree(Path(data_dir) / "vocab", tmp / "vocab")
        items_src = Path(data_dir) / "items"
        items_files = sorted(items_src.glob("*.parquet")) if items_src.is_dir() else [items_src]
        pq.write_table(pa.concat_tables([pq.read_table(f) for f in items_files]), tmp / "items.parquet")
        write_json(tmp / "bundle.json", meta)


def feature_service(model_name: str) -> str:
    """The Feast FeatureService a model family reads: the newest version of its own, else din's
    (every sequence model reads the behavior, profile and statistics views that one serves)."""
    from feature_repo import SERVICES

    family = model_name if any(name.startswith(f"{model_name}_v") for name in SERVICES) else "din"
    return max(
        (name for name in SERVICES if name.startswith(f"{family}_v")), key=lambda n: int(n.rsplit("_v", 1)[1])
    )


def _make_live(
    cfg: PipelineConfig, release: Path, model_version: str, feast_dir: Path
) -> tuple[str | None, list[dict[str, Any]]]:
    """Switch `release` live, rewrite the KServe manifest for it, tell running services to reload."""
    paths = StatePaths.of(cfg)
    manifest = kserve_yaml(cfg, model_version, feast_dir=feast_dir)
    releases.switch(paths, release)
    write_kserve_manifest(paths.serving / "kserve.yaml", manifest)
    if manifest is not None:
        log.info("KServe manifest for %s: %s", model_version, paths.serving / "kserve.yaml")
    return manifest, releases.notify(cfg)


def run(
    data_dir: Path,
    run_id: str,
    cfg: PipelineConfig,
    gate_report: dict[str, Any],
    store: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Register `run_id`'s model and make it live with the store version it was gated with.

    The release (bundle + a link to `store`'s Feast directory, the features step's staged version)
    is written first, then `serving/champion` is switched to it in one rename, running services are
    told to reload, and last the aliases move: `champion` to the new version, `previous` to the one
    it replaced. A failure before the switch leaves the live model, store and aliases as they were.
    """
    paths = StatePaths.of(cfg)
    client = tracking.client(paths)
    from mlflow.exceptions import MlflowException

    name = cfg.train.registered_model
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="seqrank ranking model; alias champion is served")
    prior = tracking.champion_version(paths, name)
    source = tracking.run_model_uri(paths, run_id)
    version = client.create_model_version(
        name, source=source, run_id=run_id, tags={"gate_reason": gate_report.get("reason", "")[:5000]}
    )
    model_version = f"{name}/{version.version}"
    store = store or {"feast_dir": str(paths.feast), "project": cfg.features.project}
    feast_dir = Path(store["feast_dir"]).resolve()
    model_name = gate_report.get("challenger_model") or cfg.model.name
    meta = {
        "model_version": model_version,
        "run_id": run_id,
        "model": model_name,
        "metrics": gate_report.get("challenger_metrics", {}),
        "feature_store": {
            **store,
            "feast_dir": str(feast_dir),
            "feature_service": feature_service(model_name),
        },
        "replaces": None if prior is None else f"{name}/{prior.version}",
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    # Built before anything is written: a cluster config whose pods could not reach the bundle or
    # the Feast store fails here, with the champion and its bundle as they were.
    kserve_yaml(cfg, model_version, feast_dir=feast_dir)
    release = releases.release_dir(paths, version.version)
    export_bundle(data_dir, tracking.download(source), release, meta)
    releases.write_release(release, feast_dir)
    client.set_model_version_tag(name, version.version, releases.RELEASE_TAG, release.name)
    if prior is not None:
        client.set_model_version_tag(name, version.version, releases.REPLACED_TAG, str(prior.version))
    _, reloads = _make_live(cfg, release, model_version, feast_dir)
    if prior is not None:
        client.set_registered_model_alias(name, releases.PREVIOUS_ALIAS, prior.version)
    client.set_registered_model_alias(name, tracking.CHAMPION_ALIAS, version.version)
    previous_release = releases.release_of(paths, prior) if prior is not None else None
    releases.prune(paths, cfg.deploy.keep_releases, also_keep=(previous_release,) if previous_release else ())
    log.info("deployed %s from run %s: %s with store %s", model_version, run_id, release, feast_dir)
    result = {
        "model_version": model_version,
        "bundle": str(paths.champion_bundle),
        "release": str(release),
        "feast_dir": str(feast_dir),
        "feature_service": meta["feature_store"]["feature_service"],
        "previous": meta["replaces"],
        "run_id": run_id,
        "reload": reloads,
    }
    # Beside the bundle, for the run report: what this deploy did, reloads included.
    write_json(release / DEPLOY_RECORD, result)
    return result


def rollback(cfg: PipelineConfig) -> dict[str, Any]:
    """Make the `previous` model live again with its bundle and its store, the way deploy does.

    `champion` moves to it; `previous` to the version it had replaced when that release is still
    on disk (else the alias is removed); the demoted version is tagged. Raises ValueError when
    there is nothing to roll back to.
    """
    from mlflow.exceptions import MlflowException

    paths = StatePaths.of(cfg)
    client = tracking.client(paths)
    name = cfg.train.registered_model
    try:
        target = client.get_model_version_by_alias(name, releases.PREVIOUS_ALIAS)
    except MlflowException:
        raise ValueError(
            f"{name} has no {releases.PREVIOUS_ALIAS!r} alias: nothing to roll back to"
        ) from None
    release = releases.release_of(paths, target)
    if release is None or releases.feast_of(release) is None:
        raise ValueError(
            f"the release of {name} version {target.version} (alias previous) is no longer on disk "
            f"under {paths.releases}"
        )
    demoted = tracking.champion_version(paths, name)
    feast_dir = releases.feast_of(release)
    assert feast_dir is not None
    model_version = f"{name}/{target.version}"
    _, reloads = _make_live(cfg, release, model_version, feast_dir)
    client.set_registered_model_alias(name, tracking.CHAMPION_ALIAS, target.version)
    before = (target.tags or {}).get(releases.REPLACED_TAG)
    if before and releases.release_of(paths, client.get_model_version(name, before)) is not None:
        client.set_registered_model_alias(name, releases.PREVIOUS_ALIAS, before)
    else:
        client.delete_registered_model_alias(name, releases.PREVIOUS_ALIAS)
    if demoted is not None:
        client.set_model_version_tag(
            name, demoted.version, "seqrank.rolled_back", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        )
    log.info("rolled back to %s (%s, store %s)", model_version, release, feast_dir)
    return {
        "model_version": model_version,
        "demoted": None if demoted is None else f"{name}/{demoted.version}",
        "release": str(release),
        "feast_dir": str(feast_dir),
        "previous": f"{name}/{before}" if before else None,
        "reload": reloads,
    }
