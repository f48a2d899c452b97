"""Releases: a model bundle and the Feast store version it was validated with, live only together.

Layout under the state root::

    feast_versions/<stage>/            a Feast store version the features step staged
    serving/releases/v<N>/             model version N's bundle, and `feast` -> its store version
    serving/champion -> releases/v<N>  the live release: one symlink, swapped in one rename
    feast -> serving/champion/feast    the live store, for every reader that is not the service

The features step writes a new store version nobody serves; validation and the gate run against
it; only deploy (or rollback) points `serving/champion` at a release, which switches the model and
the store for every reader at once. A rejected run leaves both links as they were.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

from feature_repo.store_config import ONLINE_DB_FILE
from seqrank.config import PipelineConfig
from seqrank.paths import StatePaths

log = logging.getLogger(__name__)

FEAST_LINK = "feast"
PREVIOUS_ALIAS = "previous"
# Model version tags: the release directory that serves it, and the version it replaced (so a
# rollback knows what becomes `previous` next).
RELEASE_TAG = "seqrank.release"
REPLACED_TAG = "seqrank.replaced"


def release_dir(paths: StatePaths, version: str | int) -> Path:
    return paths.releases / f"v{version}"


def feast_of(release: Path) -> Path | None:
    """The store version `release` links to (resolved), or None when it names none."""
    link = Path(release) / FEAST_LINK
    return link.resolve() if link.exists() else None


def live_release(paths: StatePaths) -> Path | None:
    """The release `serving/champion` points at now (resolved), or None before the first deploy."""
    champion = paths.champion_bundle
    return champion.resolve() if (champion / "bundle.json").is_file() else None


def live_feast(paths: StatePaths) -> Path | None:
    """The live store version: the champion release's; a plain `feast/` directory of a state dir
    that predates releases; None when nothing is live."""
    release = live_release(paths)
    store = feast_of(release) if release is not None else None
    if store is not None:
        return store
    if paths.feast.is_dir() and not paths.feast.is_symlink():
        return paths.feast
    return None


def release_of(paths: StatePaths, version: Any) -> Path | None:
    """The release directory of an MLflow ModelVersion, or None when it is gone; a champion bundle
    exported before releases existed counts when it names the same version."""
    tag = (getattr(version, "tags", None) or {}).get(RELEASE_TAG)
    if tag and (paths.releases / tag / "bundle.json").is_file():
        return paths.releases / tag
    legacy = paths.champion_bundle / "bundle.json"
    if legacy.is_file():
        import json

        meta = json.loads(legacy.read_text())
        if str(meta.get("model_version", "")).rsplit("/", 1)[-1] == str(version.version):
            return paths.champion_bundle.resolve()
    return None


def _copy_sqlite(src: Path, dst: Path) -> None:
    # The backup API copies a consistent snapshot even while the service or a push writes to the
    # WAL-mode database; a file copy could catch it between a write and its checkpoint.
    with sqlite3.connect(src) as source, sqlite3.connect(dst) as target:
        source.backup(target)


def _copy_store(src: Path, dst: Path) -> None:
    """Copy a Feast directory: SQLite files by snapshot, feature tables as hard links (the features
    step replaces them by rename, never writes them in place)."""
    for entry in src.iterdir():
        if entry.name.startswith(".") or entry.name.endswith(("-wal", "-shm")):
            continue
        if entry.is_dir():
            shutil.copytree(entry, dst / entry.name, copy_function=_link_or_copy)
        elif entry.name == ONLINE_DB_FILE:
            _copy_sqlite(entry, dst / entry.name)
        else:
            shutil.copy2(entry, dst / entry.name)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def stage_store(cfg: PipelineConfig) -> tuple[Path, str]:
    """A new store version for this run's features step, and the Feast project it uses.

    SQLite: a copy of the live store (registry, online rows, tables), so materialization that
    writes only what changed brings it up to date while the live one keeps serving. Redis: an
    empty directory and a project of its own (`<project>_<stage>`), whose keys the live project
    never sees. Unreferenced stages of earlier runs (rejected ones) are removed first.
    """
    paths = StatePaths.of(cfg)
    prune(paths, cfg.deploy.keep_releases, releases=False)
    stage = f"s{time.strftime('%Y%m%dt%H%M%S', time.gmtime())}_{uuid.uuid4().hex[:6]}"
    target = paths.feast_versions / stage
    tmp = paths.feast_versions / f".tmp-{stage}"
    tmp.mkdir(parents=True)
    live = live_feast(paths)
    sqlite = cfg.infra.feast.online_store == "sqlite"
    try:
        if sqlite and live is not None:
            _copy_store(live, tmp)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    project = cfg.features.project if sqlite else f"{cfg.features.project}_{stage}"
    log.info("staged feature store %s (project %s) from %s", target, project, live or "nothing live")
    return target, project


def _replace_link(link: Path, target: str) -> None:
    """Point `link` at `target` (relative) in one rename: a reader sees the old or the new, never none."""
    tmp = link.with_name(f".{link.name}.{uuid.uuid4().hex[:8]}")
    os.symlink(target, tmp)
    os.replace(tmp, link)


def write_release(release: Path, feast_dir: Path) -> None:
    """Link a freshly exported release to its store version (relative, so the root can be mounted
    elsewhere, as on a cluster volume)."""
    os.symlink(os.path.relpath(Path(feast_dir).resolve(), release.resolve()), release / FEAST_LINK)


def switch(paths: StatePaths, release: Path) -> None:
    """Make `release` live: model and features together, in one rename of `serving/champion`."""
    champion = paths.champion_bundle
    if champion.is_dir() and not champion.is_symlink():
        # A bundle exported before releases existed: moved aside once so the link can take its place.
        legacy = paths.releases / f"legacy-{uuid.uuid4().hex[:6]}"
        legacy.parent.mkdir(parents=True, exist_ok=True)
        os.replace(champion, legacy)
        log.warning("moved the pre-release champion bundle to %s", legacy)
    _replace_link(champion, os.path.relpath(Path(release).resolve(), paths.serving.resolve()))
    live = paths.feast
    through = os.path.relpath(champion / FEAST_LINK, paths.root)
    if live.is_symlink() or not live.exists():
        if not live.is_symlink() or os.readlink(live) != through:
            _replace_link(live, through)
    else:
        log.warning(
            "%s is a directory of its own (written outside the pipeline); it stays, and the service "
            "reads the release's store %s",
            live,
            feast_of(release),
        )
    log.info("live release: %s (store %s)", release.name, feast_of(release))


def prune(
    paths: StatePaths, keep: int, also_keep: tuple[Path, ...] = (), releases: bool = True
) -> list[Path]:
    """Remove releases beyond the newest `keep` (with `releases`; the live one and `also_keep`
    always stay) and the store versions no remaining release links; return what was removed."""
    removed: list[Path] = []
    live = live_release(paths)
    pinned = {p.resolve() for p in also_keep} | ({live} if live else set())
    if releases:
        newest_first = sorted(
            (p for p in paths.releases.glob("*") if p.is_dir() and not p.name.startswith(".")),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        room = max(0, keep - len(pinned))
        for release in [p for p in newest_first if p.resolve() not in pinned][room:]:
            shutil.rmtree(release)
            removed.append(release)
    linked = {feast_of(p) for p in paths.releases.glob("*") if p.is_dir()}
    for store in paths.feast_versions.glob("*"):
        if store.resolve() not in linked:
            shutil.rmtree(store, ignore_errors=True)
            removed.append(store)
    if removed:
        log.info("pruned %s", ", ".join(p.name for p in removed))
    return removed


def reload_urls(cfg: PipelineConfig) -> tuple[list[str], bool]:
    """The services to tell, and whether they were configured (else: the local default, which may
    simply not be running)."""
    if cfg.deploy.reload_urls:
        return list(cfg.deploy.reload_urls), True
    return [f"http://127.0.0.1:{cfg.serve.port}"], False


def notify(cfg: PipelineConfig) -> list[dict[str, Any]]:
    """POST /admin/reload to each running service with the admin token; one result per service.

    A configured service that cannot be told is an error in the result (the release is live on
    disk either way: a restarted service loads it); the unconfigured local default that is not
    running is noted and skipped.
    """
    import httpx

    from serving.app import ADMIN_TOKEN_ENV

    token = os.environ.get(ADMIN_TOKEN_ENV, "")
    urls, configured = reload_urls(cfg)
    results: list[dict[str, Any]] = []
    for url in urls:
        try:
            reply = httpx.post(
                f"{url.rstrip('/')}/admin/reload",
                headers={"x-admin-token": token},
                timeout=cfg.deploy.reload_timeout_s,
            )
        except httpx.ConnectError:
            state = "error" if configured else "not running"
            results.append({"url": url, "status": state, "detail": "connection refused"})
            continue
        except httpx.HTTPError as err:
            results.append({"url": url, "status": "error", "detail": f"{type(err).__name__}: {err}"})
            continue
        ok = reply.status_code == 200
        detail = reply.json() if reply.headers.get("content-type", "").startswith("application/json") else {}
        results.append(
            {
                "url": url,
                "status": "reloaded" if ok else "error",
                "detail": detail if ok else f"HTTP {reply.status_code}: {reply.text[:300]}",
            }
        )
    for result in results:
        level = logging.WARNING if result["status"] == "error" else logging.INFO
        log.log(level, "reload %s: %s (%s)", result["url"], result["status"], result["detail"])
    return results
