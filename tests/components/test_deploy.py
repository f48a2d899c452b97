"""Deploy and rollback on real state: MLflow on SQLite, Feast SQLite stores staged the way the
features step stages them, and `seqrank serve` in a subprocess told to reload under load."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from seqrank.config import PipelineConfig, load_config
from seqrank.paths import StatePaths
from tests.helpers.feature_store import CFG, LONG_USER, N_ITEMS, N_USERS, make_ingest_dir
from tests.helpers.serving import TOKEN, raw_ids, service_process, write_bundle

MODEL = "seqrank-ranker"
REPORT = {"reason": "test", "challenger_metrics": {}, "challenger_model": "din"}


def _config(root: Path, *extra: str) -> PipelineConfig:
    return load_config(overrides=[f"state_dir={root}", f"features.project={CFG.project}", *extra])


def _logged_model(paths: StatePaths, work: Path, seed: int) -> str:
    """An MLflow run holding a tiny DIN (different weights per seed), as the train step logs one."""
    from components import tracking

    bundle = write_bundle(
        work / f"bundle-{seed}", make_ingest_dir(work / "ids"), work, "din", "x/0", seed=seed
    )
    client = tracking.client(paths)
    run = client.create_run(tracking.experiment_id(paths, "seqrank"), tags={"seqrank.step": "train"})
    client.log_artifacts(run.info.run_id, str(bundle / "model"), artifact_path="model")
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def _staged(cfg: PipelineConfig, ingest_dir: Path) -> dict[str, Any]:
    """What the features step does: a staged store version, materialized from `ingest_dir`."""
    from components import features
    from components.deploy import releases

    feast_dir, project = releases.stage_store(cfg)
    result = features.run(ingest_dir, feast_dir, CFG.model_copy(update={"project": project}))
    return {key: result[key] for key in ("feast_dir", "project", "online_store")}


def _sequence(feast_dir: Path) -> list[int]:
    from serving.features import OnlineFeatures

    return OnlineFeatures(feast_dir).user_sequence(LONG_USER)["seq_item"].tolist()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_rejected_run_changes_nothing_live_then_deploy_and_rollback_switch_both(tmp_path: Path) -> None:
    from components import tracking
    from components.deploy import export, releases

    root = tmp_path / "state"
    cfg = _config(root)
    paths = StatePaths.of(cfg)
    day0, day1 = make_ingest_dir(tmp_path / "day0", seed=0), make_ingest_dir(tmp_path / "day1", seed=1)

    first = export.run(day0, _logged_model(paths, tmp_path, 0), cfg, REPORT, store=_staged(cfg, day0))
    live_release, live_store = paths.champion_bundle.resolve(), paths.feast.resolve()
    assert paths.champion_bundle.is_symlink() and live_release == releases.release_dir(paths, 1).resolve()
    assert live_store == Path(first["feast_dir"]) == (live_release / "feast").resolve()
    before = {"sequence": _sequence(paths.feast), "online": _digest(live_store / "online.db")}

    # A run whose validation or gate rejects it: the features step staged its store, nothing more.
    rejected = _staged(cfg, day1)
    assert Path(rejected["feast_dir"]) != live_store
    new_day = _sequence(Path(rejected["feast_dir"]))
    assert new_day != before["sequence"]  # the stage holds the new day
    assert paths.champion_bundle.resolve() == live_release
    assert paths.feast.resolve() == live_store
    assert _sequence(paths.feast) == before["sequence"]
    assert _digest(live_store / "online.db") == before["online"]
    assert str(tracking.champion_version(paths, MODEL).version) == "1"

    second = export.run(day1, _logged_model(paths, tmp_path, 1), cfg, REPORT, store=_staged(cfg, day1))
    assert second["previous"] == f"{MODEL}/1"
    release = paths.champion_bundle.resolve()
    assert release == releases.release_dir(paths, 2).resolve()
    # The served bundle and the live store are the same release's: one link decides both.
    assert paths.feast.resolve() == (release / "feast").resolve() == Path(second["feast_dir"])
    assert _sequence(paths.feast) == new_day
    client = tracking.client(paths)
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "2"
    assert str(client.get_model_version_by_alias(MODEL, "previous").version) == "1"
    assert not Path(rejected["feast_dir"]).exists()  # the next run's staging pruned it
    from serving.bundle import load_bundle

    bundle = load_bundle(paths.champion_bundle)
    assert bundle.feast_dir == paths.feast.resolve() and bundle.feature_service == "din_v2"

    back = export.rollback(cfg)
    assert back["model_version"] == f"{MODEL}/1" and back["demoted"] == f"{MODEL}/2"
    assert paths.champion_bundle.resolve() == live_release
    assert paths.feast.resolve() == live_store
    assert _sequence(paths.feast) == before["sequence"]
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "1"
    assert "seqrank.rolled_back" in client.get_model_version(MODEL, "2").tags
    with pytest.raises(ValueError, match="no 'previous' alias"):
        export.rollback(cfg)


@pytest.mark.slow
def test_reload_under_load_loses_no_request_and_rollback_is_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bounded loopback load loop runs against `seqrank serve` while deploy switches the release
    and tells the service to reload, and while rollback switches it back: every request answers."""
    from components.deploy import export

    monkeypatch.setenv("SEQRANK_ADMIN_TOKEN", TOKEN)
    root = tmp_path / "state"
    day0, day1 = make_ingest_dir(tmp_path / "day0", seed=0), make_ingest_dir(tmp_path / "day1", seed=1)
    cfg = _config(root)
    paths = StatePaths.of(cfg)
    export.run(day0, _logged_model(paths, tmp_path, 0), cfg, REPORT, store=_staged(cfg, day0))
    users, items = raw_ids(day0, "user"), raw_ids(day0, "item")
    rng = np.random.default_rng(0)
    payloads = [
        {
            "user_id": users[int(rng.integers(1, N_USERS + 1))],
            "candidates": [items[int(i)] for i in rng.choice(np.arange(1, N_ITEMS + 1), 30, replace=False)],
        }
        for _ in range(20)
    ]
    with service_process(paths.champion_bundle, paths.feast, root) as base:
        cfg = _config(root, f"deploy.reload_urls=[{base}]")
        stop = threading.Event()
        seen: list[tuple[int, str | None, bool]] = []

        def client() -> None:
            with httpx.Client(base_url=base, timeout=60) as http:
                for i in range(2_000):  # bounded, whatever happens to `stop`
                    if stop.is_set():
                        return
                    reply = http.post("/v1/rank", json=payloads[i % len(payloads)])
                    body = reply.json() if reply.status_code == 200 else {}
                    seen.append((reply.status_code, body.get("model_version"), bool(body.get("degraded"))))

        threads = [threading.Thread(target=client) for _ in range(2)]
        for thread in threads:
            thread.start()
        try:
            while len(seen) < 20:
                time.sleep(0.05)
            deployed = export.run(
                day1, _logged_model(paths, tmp_path, 1), cfg, REPORT, store=_staged(cfg, day1)
            )
            assert [r["status"] for r in deployed["reload"]] == ["reloaded"], deployed["reload"]
            assert httpx.get(f"{base}/healthz").json()["model_version"] == f"{MODEL}/2"
            mark = len(seen)
            while len(seen) < mark + 20:
                time.sleep(0.05)
            back = export.rollback(cfg)
            assert [r["status"] for r in back["reload"]] == ["reloaded"], back["reload"]
            mark = len(seen)
            while len(seen) < mark + 20:
                time.sleep(0.05)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=120)
        final = httpx.post(f"{base}/v1/rank", json=payloads[0]).json()

    assert [s for s in seen if s[0] != 200 or s[2]] == []
    versions = [s[1] for s in seen]
    assert {f"{MODEL}/1", f"{MODEL}/2"} <= set(versions)
    assert versions[-1] == f"{MODEL}/1" and final["model_version"] == f"{MODEL}/1"
