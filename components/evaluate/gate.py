"""The gate: judge challenger and champion on the same test data and in the same process, rule by rule.

A challenger replaces the champion only when every rule of `GateConfig` passes: it beats the
champion's main metric by more than `min_delta`, regresses no other metric (the other ranking
metric, logloss, |calibration - 1|) and no test slice by more than its allowance, stays inside the
serving-latency budget, and reaches the floor. Each rule's verdict, both models' numbers and the
decision are tagged on the challenger's MLflow run, with the comparison table as an artifact.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from components import tracking
from seqrank.config import GateConfig, PipelineConfig
from seqrank.paths import StatePaths

if TYPE_CHECKING:
    from training.ingest_data import IngestData
    from training.models import CtrModel

log = logging.getLogger(__name__)

Verdict = Literal["pass", "fail", "skip"]
OTHER_METRIC = {"auc": "gauc", "gauc": "auc"}
WARMUP_REQUESTS = 5
COMPARISON_ARTIFACT = "gate/comparison.json"


@dataclass(frozen=True)
class ModelScores:
    """One model's test metrics (auc, gauc, logloss, calibration, n), per slice, and its latency."""

    metrics: dict[str, float]
    slices: dict[str, dict[str, float]] = field(default_factory=dict)
    latency_p99_ms: float = float("nan")
    latency_p50_ms: float = float("nan")
    latency_rounds: int = 1


@dataclass(frozen=True)
class Rule:
    """One row of the gate table: what was compared, both numbers, the allowance and the verdict."""

    rule: str
    challenger: float | None
    champion: float | None
    limit: str
    verdict: Verdict
    detail: str


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    metric: str
    challenger: float
    champion: float | None
    rules: list[Rule]
    cannot_compare: str | None = None


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _rule(
    rule: str, challenger: float | None, champion: float | None, limit: str, ok: bool, detail: str
) -> Rule:
    return Rule(rule, challenger, champion, limit, "pass" if ok else "fail", detail)


def _absolute_rules(cfg: GateConfig, challenger: ModelScores, champion: ModelScores | None) -> list[Rule]:
    """The rules a challenger meets alone: the floor and the latency budget."""
    main = challenger.metrics[cfg.metric]
    p99 = challenger.latency_p99_ms
    return [
        _rule(
            "floor",
            main,
            None,
            f">= {cfg.floor}",
            _finite(main) and main >= cfg.floor,
            f"{cfg.metric} {main:.4f} {'>=' if main >= cfg.floor else '<'} floor {cfg.floor}",
        ),
        _rule(
            "latency_p99_ms",
            p99,
            None if champion is None else champion.latency_p99_ms,  # shown beside it, not judged
            f"<= {cfg.latency_budget_ms}",
            _finite(p99) and p99 <= cfg.latency_budget_ms,
            f"p99 {p99:.2f} ms scoring {cfg.latency_candidates} candidates, {cfg.latency_history}-event "
            f"history (budget {cfg.latency_budget_ms} ms"
            + (f"; best of {challenger.latency_rounds} rounds)" if challenger.latency_rounds > 1 else ")"),
        ),
    ]


def _regression(rule: str, new: float, old: float, allowed: float, worse: str, unit: str = "") -> Rule:
    """A rule on a metric where `worse` ("higher" or "lower") is a regression of at most `allowed`."""
    change = new - old
    regression = change if worse == "higher" else -change
    ok = _finite(new) and _finite(old) and regression <= allowed + 1e-12
    return _rule(
        rule,
        new,
        old,
        f"{'rise' if worse == 'higher' else 'drop'} <= {allowed}",
        ok,
        f"{rule} {new:.4f}{unit} vs {old:.4f}{unit} ({change:+.4f}, {worse} is worse, allowed {allowed})",
    )


def _comparison_rules(cfg: GateConfig, challenger: ModelScores, champion: ModelScores) -> list[Rule]:
    ch, cp = challenger.metrics, champion.metrics
    gain = ch[cfg.metric] - cp[cfg.metric]
    rules = [
        _rule(
            f"{cfg.metric}_gain",
            ch[cfg.metric],
            cp[cfg.metric],
            f"gain > {cfg.min_delta}",
            _finite(gain) and gain > cfg.min_delta,
            f"{cfg.metric} {ch[cfg.metric]:.4f} vs {cp[cfg.metric]:.4f} (gain {gain:+.4f}, "
            f"needs > {cfg.min_delta})",
        ),
        _regression(
            OTHER_METRIC[cfg.metric],
            ch[OTHER_METRIC[cfg.metric]],
            cp[OTHER_METRIC[cfg.metric]],
            cfg.max_metric_drop,
            "lower",
        ),
        _regression("logloss", ch["logloss"], cp["logloss"], cfg.max_logloss_increase, "higher"),
        _regression(
            "calibration_error",
            abs(ch["calibration"] - 1),
            abs(cp["calibration"] - 1),
            cfg.max_calibration_increase,
            "higher",
        ),
    ]
    for name in sorted(set(challenger.slices) | set(champion.slices)):
        new, old = challenger.slices.get(name, {}), champion.slices.get(name, {})
        rule = f"slice_{name}_{cfg.metric}"
        n = min(new.get("n", 0), old.get("n", 0))
        a, b = new.get(cfg.metric, float("nan")), old.get(cfg.metric, float("nan"))
        if n < cfg.min_slice_examples or not (_finite(a) and _finite(b)):
            rules.append(
                Rule(
                    rule,
                    a,
                    b,
                    f"drop <= {cfg.max_slice_drop}",
                    "skip",
                    f"{name}: {int(n)} test impressions (< {cfg.min_slice_examples}) or no "
                    f"{cfg.metric}: shown, not judged",
                )
            )
            continue
        rules.append(_regression(rule, a, b, cfg.max_slice_drop, "lower"))
    return rules


def decide(
    cfg: GateConfig,
    challenger: ModelScores,
    champion: ModelScores | None,
    cannot_compare: str | None = None,
) -> GateDecision:
    """Apply every rule; promote only when none fails.

    No champion: the floor and the latency budget decide. A champion that could not be compared
    (`cannot_compare` says why) rejects, or with `on_incompatible: floor` is judged as no champion.
    """
    rules = _absolute_rules(cfg, challenger, champion if cannot_compare is None else None)
    if cannot_compare is not None:
        policy_rejects = cfg.on_incompatible == "reject"
        rules.insert(
            0,
            Rule(
                "champion",
                None,
                None,
                f"on_incompatible={cfg.on_incompatible}",
                "fail" if policy_rejects else "skip",
                f"cannot compare: {cannot_compare}"
                + ("" if policy_rejects else "; judged as a first model (floor and latency)"),
            ),
        )
    elif champion is not None:
        rules = _comparison_rules(cfg, challenger, champion) + rules
    failed = [r for r in rules if r.verdict == "fail"]
    promote = not failed
    judged = sum(r.verdict != "skip" for r in rules)
    main = challenger.metrics[cfg.metric]
    versus = "first model" if champion is None else f"vs champion {champion.metrics[cfg.metric]:.4f}"
    if promote:
        reason = f"promote: {cfg.metric} {main:.4f} {versus}; {judged} rules pass"
    else:
        reason = "reject: " + "; ".join(r.detail for r in failed)
    return GateDecision(
        promote,
        reason,
        cfg.metric,
        main,
        None if champion is None else champion.metrics[cfg.metric],
        rules,
        cannot_compare,
    )


# --- measuring ------------------------------------------------------------------------------------


def split_scores(model: CtrModel, data: IngestData) -> ModelScores:
    """Test metrics overall and per slice (training.evaluation.SLICES) of `model` on `data`."""
    from training.evaluation import predict, slice_metrics
    from training.metrics import ctr_metrics

    test = data.split("test")
    probs = predict(model, data, "test")
    return ModelScores(
        metrics=ctr_metrics(test.user, test.label, probs),
        slices=slice_metrics(test, data.split("train"), probs),
    )


def latency_request(model: CtrModel, candidates: int, history: int, seed: int = 0) -> Any:
    """A serving-shaped request (serving.scoring.RequestInputs) for `model`: `candidates` items and
    a `history`-event behavior history with ids drawn from the model's vocab, as the service builds
    it (history right-aligned to the model's lengths, one hard-search row per distinct category)."""
    import torch

    from serving.scoring import RequestInputs
    from training.batch import SERVED_INPUTS
    from training.dense import DENSE_FEATURES

    rng = np.random.default_rng(seed)
    sizes = model.spec.vocab_sizes
    inputs = set(model.required_inputs) | (set(model.optional_inputs) & SERVED_INPUTS)
    lengths = model.sequence_lengths()

    def ids(entity: str, n: int) -> np.ndarray:
        return rng.integers(1, max(2, sizes.get(entity, 2)), size=n, dtype=np.int64)

    now_ms = 1_800_000_000_000
    hist_ts = np.sort(rng.integers(now_ms - 86_400_000 * 60, now_ms, size=history, dtype=np.int64))
    hist = {"item": ids("item", history), "category": ids("category", history), "ts": hist_ts}
    sequences: dict[str, torch.Tensor] = {}
    for group in ("hist", "long"):
        if any(key.startswith(f"{group}_") for key in inputs):
            length = lengths[group]
            for name, values in hist.items():
                row = np.zeros(length, dtype=np.int64)
                tail = values[-length:]
                row[length - len(tail) :] = tail
                sequences[f"{group}_{name}"] = torch.from_numpy(row)
    item, category = ids("item", candidates), ids("category", candidates)
    cat_item = cat_ts = cat_index = None
    if "cat_item" in inputs or "cat_ts" in inputs:
        distinct, index = np.unique(category, return_inverse=True)
        k = lengths["cat"]
        cat_item = torch.from_numpy(ids("item", len(distinct) * k).reshape(len(distinct), k))
        cat_ts = torch.from_numpy(np.sort(rng.choice(hist_ts, size=(len(distinct), k)), axis=1))
        cat_index = torch.from_numpy(index.astype(np.int64))
    dense = None
    if "item_dense" in inputs:
        dense = torch.from_numpy(rng.random((candidates, len(DENSE_FEATURES)), dtype=np.float32))
    return RequestInputs(
        user=int(ids("user", 1)[0]),
        item=torch.from_numpy(item),
        category=torch.from_numpy(category),
        now_ms=now_ms,
        sequences=sequences,
        cat_item=cat_item,
        cat_ts=cat_ts,
        cat_index=cat_index,
        item_dense=dense,
    )


@dataclass(frozen=True)
class Timing:
    """One model's in-process scoring latency: its best round's p50 and p99, and the rounds timed."""

    p50_ms: float
    p99_ms: float
    rounds: int


def time_models(cfg: PipelineConfig, models: dict[str, CtrModel]) -> dict[str, Timing]:
    """Latency of the service's scoring path for each of `models` ("challenger", and "champion"
    when there is one), timed in this process.

    Requests alternate between the models, so load from anything else on the machine falls on
    both alike; each model runs on the service's runtime (serve.runtime: its ONNX Runtime
    sessions, one thread each, as a request under load) and torch with the service's thread count
    (serve.torch_threads). A challenger over
    the budget is timed again, up to `gate.latency_rounds` rounds, and each model keeps its best
    round: load from elsewhere only ever adds time, so one busy moment does not reject a model,
    while a model that is slow in every round still fails.
    """
    import torch

    from serving.scoring import prepare, sigmoid_scores

    gate = cfg.gate
    requests = {
        name: latency_request(model, gate.latency_candidates, gate.latency_history)
        for name, model in models.items()
    }
    for model in models.values():
        model.eval()
        prepare(model, cfg.serve.runtime)
    best: dict[str, tuple[float, float]] = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.serve.torch_threads)
    try:
        for rounds in range(1, gate.latency_rounds + 1):
            times: dict[str, list[float]] = {name: [] for name in models}
            for i in range(WARMUP_REQUESTS + gate.latency_requests):
                for name, model in models.items():
                    started = time.perf_counter()
                    sigmoid_scores(model, requests[name])
                    if i >= WARMUP_REQUESTS:
                        times[name].append((time.perf_counter() - started) * 1000)
            for name, t in times.items():
                p50, p99 = float(np.percentile(t, 50)), float(np.percentile(t, 99))
                if name not in best or p99 < best[name][1]:
                    best[name] = (p50, p99)
            if best["challenger"][1] <= gate.latency_budget_ms:
                break
            log.info(
                "gate: latency round %d over the %s ms budget, timing again", rounds, gate.latency_budget_ms
            )
    finally:
        torch.set_num_threads(threads)
        for model in models.values():
            prepare(model, "torch")  # the sessions were for the timing only
    return {name: Timing(p50, p99, rounds) for name, (p50, p99) in best.items()}


def _vocab_mismatch(champion_vocab: Path, data_vocab: Path) -> str | None:
    """Why the champion's vocab is no prefix of today's, or None when it is."""
    import pyarrow.parquet as pq

    from seqrank.schema import VOCAB_ENTITIES

    for entity in VOCAB_ENTITIES:
        old_path, new_path = champion_vocab / f"{entity}.parquet", data_vocab / f"{entity}.parquet"
        if not old_path.is_file():
            return f"the champion's bundle has no {entity} vocab ({old_path.name})"
        if not new_path.is_file():
            return f"today's data has no {entity} vocab"
        old = pq.read_table(old_path).sort_by("index")
        new = pq.read_table(new_path).sort_by("index")
        if old.num_rows > new.num_rows:
            return f"the champion knows {old.num_rows} {entity} ids, today's vocab {new.num_rows}"
        head = new.slice(0, old.num_rows)
        if old.column("raw").to_pylist() != head.column("raw").to_pylist() or (
            old.column("index").to_pylist() != head.column("index").to_pylist()
        ):
            return f"the champion's {entity} vocab is no prefix of today's (ids were renumbered)"
    return None


def _load_champion(paths: StatePaths, cfg: PipelineConfig, version: Any, data_dir: Path) -> CtrModel:
    """The champion's model, its vocab checked against today's; raises saying why it cannot compete."""
    from components.deploy import releases
    from training.models import load_model

    bundle = releases.release_of(paths, version)
    if bundle is None:
        raise ValueError(f"no release on disk for {cfg.train.registered_model} version {version.version}")
    mismatch = _vocab_mismatch(bundle / "vocab", Path(data_dir) / "vocab")
    if mismatch:
        raise ValueError(mismatch)
    return load_model(tracking.download(version.source))


def _record(client: Any, run_id: str, decision: GateDecision, scores: dict[str, ModelScores | None]) -> None:
    """Tags, metrics and the comparison table on the challenger's run (what the MLflow UI shows)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = []
    for role, s in scores.items():
        if s is None:
            continue
        values = {**s.metrics, "latency_p99_ms": s.latency_p99_ms, "latency_p50_ms": s.latency_p50_ms}
        values |= {f"{name}_{k}": v for name, m in s.slices.items() for k, v in m.items()}
        metrics += [Metric(f"gate_{role}_{k}", float(v), now, 0) for k, v in values.items() if _finite(v)]
    for start in range(0, len(metrics), 100):
        client.log_batch(run_id, metrics=metrics[start : start + 100])
    client.set_tag(run_id, "gate_decision", "promote" if decision.promote else "reject")
    client.set_tag(run_id, "gate_reason", decision.reason[:5000])
    if decision.cannot_compare:
        client.set_tag(run_id, "gate_cannot_compare", decision.cannot_compare[:5000])
    for rule in decision.rules:
        client.set_tag(run_id, f"gate_rule.{rule.rule}", f"{rule.verdict}: {rule.detail}"[:5000])
    # MLflow's table layout (what `log_table` writes, shown as a table in the UI's artifact view),
    # written whole: `log_table` would append to the table of an earlier gate of the same run.
    columns = [f.name for f in fields(Rule)]
    table = {"columns": columns, "data": [[getattr(r, c) for c in columns] for r in decision.rules]}
    with tempfile.TemporaryDirectory(prefix="seqrank-gate-") as tmp:
        path = Path(tmp) / Path(COMPARISON_ARTIFACT).name
        path.write_text(json.dumps(table, default=str))
        client.log_artifact(run_id, str(path), str(Path(COMPARISON_ARTIFACT).parent))


def run(data_dir: Path, challenger_run_id: str, cfg: PipelineConfig) -> dict[str, Any]:
    """Score and time both models on this run's test split; record and return the decision."""
    from training.ingest_data import load_ingest
    from training.models import load_model

    paths = StatePaths.of(cfg)
    client = tracking.client(paths)
    data = load_ingest(data_dir)

    challenger_model = load_model(tracking.download(tracking.run_model_uri(paths, challenger_run_id)))
    models = {"challenger": challenger_model}
    scores = {"challenger": split_scores(challenger_model, data)}
    version = tracking.champion_version(paths, cfg.train.registered_model)
    cannot_compare = None
    if version is not None:
        try:
            champion = _load_champion(paths, cfg, version, data_dir)
            # The champion may predate ids appended to the vocab since; it scores them as unknown.
            scores["champion"] = split_scores(champion, data.restricted_to(champion.spec.vocab_sizes))
            models["champion"] = champion
        except Exception as err:  # an unloadable or incomparable champion is a verdict, not a crash
            cannot_compare = f"champion version {version.version}: {type(err).__name__}: {err}"
            log.warning("gate: %s", cannot_compare)
    for name, timing in time_models(cfg, models).items():
        scores[name] = ModelScores(
            scores[name].metrics, scores[name].slices, timing.p99_ms, timing.p50_ms, timing.rounds
        )
    champion_scores = scores.get("champion")
    decision = decide(cfg.gate, scores["challenger"], champion_scores, cannot_compare)
    _record(
        client, challenger_run_id, decision, {"challenger": scores["challenger"], "champion": champion_scores}
    )
    log.info("gate: %s", decision.reason)
    return {
        **asdict(decision),
        "challenger_run_id": challenger_run_id,
        "challenger_model": challenger_model.spec.name,
        "champion_version": None if version is None else str(version.version),
        "champion_run_id": None if version is None else version.run_id,
        "champion_model": models["champion"].spec.name if "champion" in models else None,
        "challenger_metrics": scores["challenger"].metrics,
        "champion_metrics": None if champion_scores is None else champion_scores.metrics,
        "challenger_scores": asdict(scores["challenger"]),
        "champion_scores": None if champion_scores is None else asdict(champion_scores),
    }
