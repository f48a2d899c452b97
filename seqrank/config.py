"""Typed pipeline configuration: one `PipelineConfig`, loaded from YAML plus CLI overrides."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_CONFIG = Path(__file__).with_name("configs") / "default.yaml"


class ConfigError(ValueError):
    """A config file or override is invalid; the message names each bad field and value."""


class _Section(BaseModel):
    # Frozen so a step cannot quietly change settings another step relies on; extra keys are typos.
    model_config = ConfigDict(frozen=True, extra="forbid")


class GeneratorConfig(_Section):
    users: int = Field(2_000, gt=0, description="number of simulated users")
    items: int = Field(3_000, gt=0, description="number of items in the catalogue")
    categories: int = Field(40, ge=4, description="item categories; long-term interests are drawn from these")
    brands: int = Field(200, gt=0, description="item brands")
    days: int = Field(30, gt=0, description="days of logs to simulate")
    seed: int = Field(7, description="one seed fixes every random draw")
    start: str = Field("2026-01-01", description="UTC date the simulated logs start on")
    # 0.3 keeps the default run near 700k events (a session holds ~3.5 requests of slate_size items).
    sessions_per_day: float = Field(0.3, gt=0, description="mean sessions per user per day (heavy-tailed)")
    slate_size: int = Field(10, gt=0, le=100, description="impressions per ranking request")
    long_term_interests: int = Field(3, ge=1, description="stable long-term categories per user")


class IngestConfig(_Section):
    runner: str = Field(
        "FnApiRunner",
        description="Beam runner; the in-process FnApiRunner never downloads anything",
    )
    runner_options: list[str] = Field(
        default_factory=list, description="extra Beam pipeline options, e.g. --flink_master=host:8081"
    )
    # Workers that share no disk with the driver (or with each other) can only hand rows on through
    # storage they all reach; the local default keeps the fast memory-mapped path.
    temp_location: str = Field(
        "",
        description="where Beam workers write the exchange files and outputs, through Beam FileSystems "
        "(gs://bucket/tmp, s3://bucket/tmp, hdfs://tmp, or a shared mount); empty: the step's "
        "local temp dir beside the output",
    )
    session_gap_minutes: float = Field(30.0, gt=0, description="inactivity gap that closes a session")
    attribution_window_minutes: float = Field(
        30.0, gt=0, description="a click without request_id credits an impression this recent"
    )
    valid_fraction: float = Field(0.1, gt=0, lt=0.5, description="last share of the time range before test")
    test_fraction: float = Field(0.1, gt=0, lt=0.5, description="last share of the time range")
    max_rejected_share: float = Field(
        0.05, ge=0, le=1, description="fail the run when more than this share of records is rejected"
    )
    adapter_negatives: int = Field(
        4, ge=1, le=1000, description="negatives sampled per positive for data sets without impressions"
    )
    adapter_seed: int = Field(0, description="seed of that sampling: same seed, same examples")

    @model_validator(mode="after")
    def _splits_leave_training_data(self) -> IngestConfig:
        if self.valid_fraction + self.test_fraction >= 0.9:
            raise ValueError(
                f"valid_fraction + test_fraction = {self.valid_fraction + self.test_fraction} "
                "leaves under 10% of the time range for training"
            )
        return self


class ValidateConfig(_Section):
    min_label_rate: float = Field(0.005, ge=0, le=1, description="a lower click rate means broken labels")
    max_label_rate: float = Field(0.6, ge=0, le=1, description="a higher click rate means broken labels")
    max_null_rate: float = Field(0.0, ge=0, le=1, description="tolerated nulls in required columns")
    min_examples: int = Field(100, ge=1, description="fewer examples cannot train anything")
    raw_max_bad_rate: float = Field(
        0.05, ge=0, le=1, description="share of sampled raw events allowed to miss fields or break ranges"
    )
    raw_max_duplicate_rate: float = Field(0.05, ge=0, le=1, description="share of repeated raw event_ids")
    max_feature_staleness_hours: float = Field(
        48.0, ge=0, description="newest online behavior may lag the newest ingested event by this much"
    )
    # Drift against the last accepted run (bounds on distances; see components/validate/drift.py).
    drift_action: Literal["warn", "fail", "off"] = Field("warn", description="what drift beyond a bound does")
    drift_max_category_js: float = Field(
        0.1, ge=0, le=1, description="Jensen-Shannon distance of the category mix"
    )
    drift_max_ctr_change: float = Field(
        0.25, ge=0, description="relative change of CTR, overall and per position"
    )
    drift_max_history_change: float = Field(
        0.5, ge=0, description="relative change of history-length quantiles"
    )
    drift_max_new_user_share_change: float = Field(
        0.1, ge=0, le=1, description="absolute change of new-user share"
    )
    # Dataset-level checks (docs/validation.md): whole tables and how they relate.
    volume_min_ratio: float = Field(
        0.5, ge=0, description="each output's row count at least this share of the last accepted run's"
    )
    volume_max_ratio: float = Field(
        2.0, gt=0, description="each output's row count at most this multiple of the last accepted run's"
    )
    min_train_examples: int = Field(100, ge=0, description="fewer training examples cannot train anything")
    min_valid_examples: int = Field(10, ge=0, description="fewer cannot pick an epoch (early stopping)")
    min_test_examples: int = Field(10, ge=0, description="fewer cannot measure the model the gate compares")
    max_position: int = Field(
        1_000, ge=0, description="slate positions past this cannot have been served (-1 means unknown)"
    )
    max_category_mismatch_share: float = Field(
        0.0, ge=0, le=1, description="behaviors and examples whose category is not their item's in items/"
    )
    max_unmatched_click_share: float = Field(
        0.05, ge=0, le=1, description="clicks that labeled no impression: a broken label join"
    )
    max_ctr_rise_by_position: float = Field(
        0.25, ge=0, description="relative CTR rise from one slate position to the next; CTR should fall"
    )
    min_position_clicks: int = Field(
        500, ge=1, description="positions with fewer clicks are too noisy to compare"
    )
    # Train/serve skew (`seqrank audit skew`), as TFDV measures it.
    skew_max_linf: float = Field(
        0.1, ge=0, le=1, description="L-infinity distance of a categorical feature, training vs served"
    )
    skew_max_js: float = Field(
        0.1, ge=0, le=1, description="Jensen-Shannon divergence of a numeric feature, training vs served"
    )
    skew_min_requests: int = Field(
        100, ge=1, description="fewer sampled requests are reported but not judged"
    )

    @model_validator(mode="after")
    def _volume_bounds_ordered(self) -> ValidateConfig:
        if self.volume_min_ratio > self.volume_max_ratio:
            raise ValueError(
                f"volume_min_ratio = {self.volume_min_ratio} is above volume_max_ratio = "
                f"{self.volume_max_ratio}: no row count could pass"
            )
        return self


class FeatureConfig(_Section):
    project: str = Field("seqrank", pattern=r"^[a-zA-Z0-9_]+$", description="Feast project (no hyphens)")
    max_sequence_length: int = Field(1_000, gt=0, description="latest behaviors kept online per user")
    category_k: int = Field(200, gt=0, description="latest behaviors kept per (user, category)")
    materialize_chunk_users: int = Field(
        1_000,
        gt=0,
        description="users per read batch of ingest outputs and rows per feature-table batch (online "
        "writes are also capped at ~16 MiB); 1,000-event histories: ~30 MiB per 1,000 users",
    )
    idle_ttl_days: float = Field(
        0,
        ge=0,
        description="users without a behavior in this many days before the input's newest are evicted "
        "from the online sequence views (reads give empty; profiles stay); 0 keeps every user",
    )


class ModelConfig(_Section):
    name: str = Field("sim", description="model registry name (sim: the zoo's best on long histories)")
    embedding_dim: int = Field(16, gt=0, le=512)
    seq_len: int = Field(50, gt=0, description="short-term history window the model attends over")
    attention_hidden: list[int] = Field(default_factory=lambda: [80, 40])
    mlp_hidden: list[int] = Field(default_factory=lambda: [200, 80])
    long_seq_len: int = Field(
        1_000, gt=0, description="long history window for the models that read one (sim soft search, mimn)"
    )
    search_k: int = Field(
        50, gt=0, description="sim: behaviors retrieved per candidate (hard search reads the category index)"
    )
    heads: int = Field(2, gt=0, description="attention heads (bst, dsin, sim exact search)")
    embedding: Literal["full", "double_hash"] = Field(
        "full", description="id embeddings: a row per id, or frequency-based double hashing for the tail"
    )
    full_rows: int = Field(
        50_000, gt=0, description="double_hash: the most frequent ids per entity keep their own row"
    )
    hash_rows: int = Field(
        10_000, gt=1, description="double_hash: rows shared by the other ids, each the sum of two hashed rows"
    )
    dense: Literal["off", "normalized", "autodis"] = Field(
        "off", description="continuous candidate features (price, item CTR): off, normalized or AutoDis"
    )
    autodis_buckets: int = Field(16, gt=1, description="AutoDis meta-embeddings per continuous feature")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="model-specific hyperparameters; each model's docstring lists its own",
    )

    @model_validator(mode="after")
    def _positive_layers(self) -> ModelConfig:
        for field in ("attention_hidden", "mlp_hidden"):
            sizes = getattr(self, field)
            if not sizes or any(s <= 0 for s in sizes):
                raise ValueError(f"{field} = {sizes}: needs at least one layer, every size > 0")
        return self


class TrainConfig(_Section):
    epochs: int = Field(3, gt=0)
    batch_size: int = Field(1024, gt=0)
    lr: float = Field(2e-3, gt=0, lt=1)
    embedding_l2: float = Field(1e-6, ge=0, description="mini-batch aware L2 on the embedding rows used")
    patience: int = Field(1, ge=0, description="epochs without validation GAUC gain before stopping")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="auto: bf16 autocast on CUDA, fp32 on CPU; bf16 on CPU pays off only with AVX512-BF16/AMX",
    )
    compile: bool = Field(False, description="wrap the model in torch.compile")
    seed: int = 0
    checkpoint_dir: Path | None = Field(
        None, description="write the last and best epoch here after every epoch; `train --resume` continues"
    )
    warm_start: Literal["off", "champion"] = Field(
        "off",
        description="champion: start from the champion's weights when it is the same model (ids the "
        "vocab appended since start fresh); off: from scratch",
    )
    experiment: str = Field("seqrank", min_length=1, description="MLflow experiment name")
    registered_model: str = Field("seqrank-ranker", min_length=1, description="MLflow registered model")


class GateConfig(_Section):
    """The rules a challenger must pass to replace the champion (components/evaluate/gate.py).

    Both models are scored on this run's test split and timed in the same process, so every rule
    compares like with like; each rule's verdict is recorded on the challenger's MLflow run.
    """

    metric: Literal["auc", "gauc"] = Field("auc", description="the main metric the challenger must improve")
    min_delta: float = Field(
        0.0, ge=0, description="gain on the main metric the challenger must exceed (equal is not better)"
    )
    floor: float = Field(0.6, ge=0, le=1, description="main metric every promoted model reaches; 0: none")
    max_metric_drop: float = Field(
        0.002, ge=0, description="largest drop allowed on the other ranking metric (GAUC when main is AUC)"
    )
    max_logloss_increase: float = Field(0.002, ge=0, description="largest test logloss increase allowed")
    max_calibration_increase: float = Field(
        0.05, ge=0, description="largest increase allowed of |calibration - 1| (predicted / observed CTR)"
    )
    max_slice_drop: float = Field(
        0.01,
        ge=0,
        description="largest main-metric drop allowed on each slice (new/heavy users, short/long history)",
    )
    min_slice_examples: int = Field(
        200, ge=1, description="a slice with fewer test impressions (either model) is shown, not judged"
    )
    latency_budget_ms: float = Field(
        25.0,
        gt=0,
        description="p99 in-process scoring of latency_candidates with a latency_history-event history; "
        "the HTTP budget (docs: 10 ms) also pays for feature fetch and transport",
    )
    latency_candidates: int = Field(500, gt=0, description="candidates per timed request")
    latency_history: int = Field(1_000, gt=0, description="behaviors in the timed request's history")
    latency_requests: int = Field(60, ge=20, description="timed requests per model (after 5 warm-up ones)")
    latency_rounds: int = Field(
        3,
        ge=1,
        description="timing rounds at most: a challenger over the budget is timed again and each model "
        "keeps its best round, so a busy moment on the machine does not reject it",
    )
    on_incompatible: Literal["reject", "floor"] = Field(
        "reject",
        description="a champion that cannot be loaded or compared: reject, or judge the challenger as a "
        "first model (floor and latency only)",
    )


class DeployConfig(_Section):
    """How a promoted (or rolled-back) release goes live (components/deploy)."""

    reload_urls: list[str] = Field(
        default_factory=list,
        description="running services told to reload after a switch (POST /admin/reload with "
        "$SEQRANK_ADMIN_TOKEN); empty: the local one on 127.0.0.1:serve.port when it answers",
    )
    reload_timeout_s: float = Field(60.0, gt=0, description="how long one reload request may take")
    keep_releases: int = Field(
        3, ge=2, description="releases (bundle + feature store) kept on disk: the champion, previous, ..."
    )


# Inside a container loopback is unreachable from outside it, so the image sets this variable to
# 0.0.0.0 (Dockerfile); on a laptop it is unset and the service keeps to 127.0.0.1.
SERVE_HOST_ENV = "SEQRANK_SERVE_HOST"


class ServeConfig(_Section):
    # `cpu: 2` in YAML is a number; Kubernetes quantities are strings.
    model_config = ConfigDict(frozen=True, extra="forbid", coerce_numbers_to_str=True)

    host: str = Field(
        "127.0.0.1",
        min_length=1,
        description=f"bind address; loopback unless told otherwise (${SERVE_HOST_ENV}, when set, wins)",
    )
    port: int = Field(8700, gt=0, lt=65536)
    max_candidates: int = Field(1_000, gt=0, description="requests with more candidates get 413")
    max_body_bytes: int = Field(1_000_000, gt=0)
    request_log_sample: float = Field(
        0.01, ge=0, le=1, description="share of requests logged with their features for skew audits"
    )
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="service processes on one port (`seqrank serve --workers`); scale-out unit",
    )
    torch_threads: int = Field(
        1,
        ge=1,
        le=64,
        description="intra-op threads per process; 1 measured fastest on 2 cores, where a second "
        "thread competes with the event loop and other requests (docs/serving.md)",
    )
    unit_cores: int | None = Field(
        None,
        ge=1,
        le=64,
        description="cores the ONNX Runtime graphs of a request (activation units, MLP tower) may use "
        "while it is the only request in flight in its process; None: the cores the process may use "
        "(affinity and container CPU limit) divided among the workers. Under load each request keeps "
        "to one (docs/serving.md)",
    )
    runtime: Literal["onnxruntime", "torch"] = Field(
        "onnxruntime",
        description="runtime of the activation units' heavy part: ONNX Runtime measured faster "
        "(benchmarks/bench_runtimes.py); torch is the checked fallback (docs/serving.md)",
    )
    feature_timeout_ms: float = Field(
        50.0,
        gt=0,
        description="online-store read deadline; past it the answer is degraded (popularity order)",
    )
    item_refresh_s: float = Field(
        5.0, gt=0, description="how often the in-process item table checks the store for changes"
    )
    store_retry_s: float = Field(
        2.0, gt=0, description="while the online store is unreachable, retry opening it this often"
    )
    fault_store_delay_ms: float = Field(
        0.0, ge=0, description="fault drills and tests only: delay added before every online-store read"
    )
    # The KServe InferenceService the deploy step writes (docs/kubeflow.md).
    storage_uri: str = Field(
        "",
        description="where KServe's storage initializer fetches the champion bundle; empty: "
        "pvc://<kubeflow.pvc>/serving/champion, the bundle deploy writes on the shared volume; "
        "gs:// or s3:// when infra.root is that bucket mounted in the pods",
    )
    cpu: str = Field(
        "2", pattern=r"^[0-9]+(\.[0-9]+)?m?$", description="CPU request and limit of each service replica"
    )
    memory: str = Field(
        "4Gi",
        pattern=r"^[0-9]+(\.[0-9]+)?([EPTGMK]i?)?$",
        description="memory request and limit of each replica (model, item table, Feast client)",
    )
    min_replicas: int = Field(1, ge=0, description="0 lets a Serverless service scale to zero")
    max_replicas: int = Field(1, ge=1, description="above min_replicas KServe autoscales between the two")
    deployment_mode: Literal["RawDeployment", "Serverless"] = Field(
        "RawDeployment",
        description="RawDeployment: a Deployment, no Knative; Serverless: Knative, which must allow "
        "PVC volumes (and node selectors) in pod specs",
    )

    @model_validator(mode="before")
    @classmethod
    def _host_from_environment(cls, data: Any) -> Any:
        # The variable describes where the process runs, the file what the job is: the same config
        # file serves on a laptop (loopback) and in the image (every interface).
        host = os.environ.get(SERVE_HOST_ENV, "")
        if host and isinstance(data, dict):
            return {**data, "host": host}
        return data

    @model_validator(mode="after")
    def _replicas_in_order(self) -> ServeConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas = {self.min_replicas} exceeds max_replicas = {self.max_replicas}")
        return self


class FeastStoreConfig(_Section):
    online_store: Literal["sqlite", "redis"] = Field(
        "sqlite", description="sqlite: a file under the root (one machine); redis: a server every pod reaches"
    )
    redis_connection: str = Field(
        "localhost:6379",
        description="redis: host:port[,password=...,ssl=true]; Feast expands ${VAR} from the environment",
    )
    registry: str = Field(
        "",
        description="registry file; empty: feast/registry.db under the root; s3:// or gs:// for one "
        "registry shared by every pod",
    )
    registry_cache_ttl_seconds: int = Field(
        60, ge=0, description="how long a reader trusts its cached registry before re-reading it"
    )


class InfraConfig(_Section):
    """Where the state steps share lives. Inside a scheduled run every path comes from here."""

    root: str = Field(
        "",
        description="shared state (vocab, drift baseline, Feast repo, serving bundles); empty: state_dir; "
        "on a cluster the mount path of a volume every step mounts",
    )
    mlflow_tracking_uri: str = Field(
        "",
        description="empty: sqlite:///<root>/mlflow.db; on a cluster the tracking server, http://mlflow:5000",
    )
    mlflow_artifact_root: str = Field(
        "",
        description="where new experiments keep artifacts; empty: <root>/mlartifacts (or the tracking "
        "server's own artifact root when the tracking URI is a server); s3://bucket/mlflow on a cluster",
    )
    feast: FeastStoreConfig = FeastStoreConfig()

    @model_validator(mode="after")
    def _root_is_a_path(self) -> InfraConfig:
        if "://" in self.root:
            raise ValueError(
                f"root = {self.root!r}: the shared root must be a file system path (mount an object "
                "store or a volume there); MLflow artifacts and the Feast registry take URIs of their own"
            )
        return self


class StepResources(_Section):
    # `cpu: 2` in YAML is a number; Kubernetes quantities are strings.
    model_config = ConfigDict(frozen=True, extra="forbid", coerce_numbers_to_str=True)

    cpu: str = Field(
        "1", pattern=r"^[0-9]+(\.[0-9]+)?m?$", description="CPU request and limit, e.g. 2 or 500m"
    )
    memory: str = Field(
        "4G",
        pattern=r"^[0-9]+(\.[0-9]+)?([EPTGMK]i?)?$",
        description="memory request and limit, e.g. 8G or 512Mi",
    )
    retries: int = Field(0, ge=0, le=10, description="retries with backoff for transient failures")


# What each step asks for unless the config says otherwise; a partial override keeps the rest.
_DEFAULT_RESOURCES: dict[str, dict[str, Any]] = {
    "prepare": {"cpu": "500m", "memory": "1G", "retries": 2},
    "ingest": {"cpu": "4", "memory": "16G", "retries": 2},
    "validate": {"cpu": "2", "memory": "8G", "retries": 1},
    "features": {"cpu": "2", "memory": "8G", "retries": 2},
    "validate_features": {"cpu": "1", "memory": "4G", "retries": 1},
    "train": {"cpu": "8", "memory": "32G", "retries": 1},
    "gate": {"cpu": "4", "memory": "16G", "retries": 1},
    "deploy": {"cpu": "1", "memory": "4G", "retries": 2},
}


class StepsResources(_Section):
    prepare: StepResources
    ingest: StepResources
    validate_: StepResources = Field(alias="validate")
    features: StepResources
    validate_features: StepResources
    train: StepResources
    gate: StepResources
    deploy: StepResources

    @model_validator(mode="before")
    @classmethod
    def _fill_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        filled = {
            step: {**defaults, **(data.get(step) or {})} for step, defaults in _DEFAULT_RESOURCES.items()
        }
        return {**data, **filled}

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    def of(self, step: str) -> StepResources:
        resources: StepResources = getattr(self, "validate_" if step == "validate" else step)
        return resources


class Toleration(_Section):
    key: str
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str = ""
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] = ""


class KubeflowConfig(_Section):
    """How the compiled pipeline asks a Kubeflow cluster for resources; read when compiling."""

    image: str = Field(
        "seqrank:latest", min_length=1, description="the one image of every step and the service"
    )
    train_gpus: int = Field(1, ge=0, description="GPUs the train step requests (0, or `compile --cpu`: none)")
    accelerator: str = Field("nvidia.com/gpu", min_length=1, description="the GPU resource name")
    resources: StepsResources = Field(
        default_factory=lambda: StepsResources.model_validate({}),
        description="per step: CPU, memory and retries",
    )
    retry_backoff_seconds: int = Field(30, ge=0, description="first retry waits this long, then doubles")
    cache_data_steps: bool = Field(
        True, description="ingest and validation reuse outputs for the same inputs"
    )
    cache_model_steps: bool = Field(
        False, description="also cache train, gate and deploy (off: every run trains)"
    )
    pvc: str = Field("", description="a PersistentVolumeClaim every step mounts at infra.root (empty: none)")
    node_selector: dict[str, str] = Field(default_factory=dict, description="node labels for every step")
    train_node_selector: dict[str, str] = Field(
        default_factory=dict, description="node labels for the train step, e.g. a GPU node pool"
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="taints the train step tolerates (GPU nodes are often tainted)"
    )


class PipelineConfig(_Section):
    state_dir: Path = Field(Path(".seqrank"), description="all local state lives here, never in $HOME")
    input: list[str] = Field(
        default_factory=list,
        description="raw log files or globs; empty means generate logs with `generator` first",
    )
    generator: GeneratorConfig = GeneratorConfig()
    ingest: IngestConfig = IngestConfig()
    validate_: ValidateConfig = Field(default_factory=ValidateConfig, alias="validate")
    features: FeatureConfig = FeatureConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    gate: GateConfig = GateConfig()
    deploy: DeployConfig = DeployConfig()
    serve: ServeConfig = Field(default_factory=ServeConfig)  # built per load: it reads the environment
    infra: InfraConfig = InfraConfig()
    kubeflow: KubeflowConfig = KubeflowConfig()

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict, keyed as in the YAML file."""
        return json.loads(self.model_dump_json(by_alias=True))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{dotted}: {key} is not a section")
        node = child
    node[keys[-1]] = value


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn `section.field=value` strings into a nested dict; values are parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r}: expected section.field=value")
        _set_path(tree, key.strip(), yaml.safe_load(raw))
    return tree


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid config ({source}):"]
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "<root>"
        value = e.get("input")
        shown = "" if isinstance(value, dict) else f" = {value!r}"
        lines.append(f"  {field}{shown}: {e['msg']}")
    return "\n".join(lines)


def from_dict(data: dict[str, Any], source: str = "<dict>") -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def load_config(path: Path | str | None = None, overrides: list[str] | None = None) -> PipelineConfig:
    """Load `path` (the packaged default when None), apply overrides, validate everything at once."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping, got {type(data).__name__}")
    data = _merge(data, parse_overrides(overrides or []))
    return from_dict(data, str(path))
