"""`seqrank schedule` through the official kfp client against a loopback HTTP server.

The server answers the Kubeflow Pipelines v2beta1 endpoints the client calls (healthz,
experiments, recurring runs) and keeps every request, so the test can read the payload a real
server would have received: the compiled pipeline and the run's parameters.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from click.testing import CliRunner

from seqrank.cli import main

API = "/apis/v2beta1"


class _KfpApi(BaseHTTPRequestHandler):
    requests: list[dict[str, Any]]
    recurring: dict[str, dict[str, Any]]
    experiments: dict[str, dict[str, Any]]

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self) -> dict[str, Any]:
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        url = urlparse(self.path)
        entry = {"method": self.command, "path": url.path, "query": parse_qs(url.query), "body": body}
        self.requests.append(entry)
        return entry

    def do_GET(self) -> None:
        entry = self._record()
        if entry["path"] == f"{API}/healthz":
            self._reply(200, {"multi_user": False})
        elif entry["path"] == f"{API}/experiments":
            wanted = json.dumps(entry["query"].get("filter", [""])[0])
            found = [e for e in self.experiments.values() if e["display_name"] in wanted]
            self._reply(200, {"experiments": found, "total_size": len(found)})
        elif entry["path"] == f"{API}/recurringruns":
            runs = list(self.recurring.values())
            self._reply(200, {"recurringRuns": runs, "total_size": len(runs)})
        else:
            self._reply(404, {"error": f"no route {entry['path']}"})

    def do_POST(self) -> None:
        entry = self._record()
        body = entry["body"] or {}
        if entry["path"] == f"{API}/experiments":
            experiment = {"experiment_id": f"exp-{len(self.experiments) + 1}", **body}
            self.experiments[experiment["experiment_id"]] = experiment
            self._reply(200, experiment)
        elif entry["path"] == f"{API}/recurringruns":
            run = {"recurring_run_id": f"rr-{len(self.recurring) + 1}", "status": "ENABLED", **body}
            run.pop("pipeline_spec", None)
            self.recurring[run["recurring_run_id"]] = run
            self._reply(200, run)
        else:
            self._reply(404, {"error": f"no route {entry['path']}"})

    def do_DELETE(self) -> None:
        entry = self._record()
        run_id = entry["path"].rsplit("/", 1)[-1]
        if entry["path"].startswith(f"{API}/recurringruns/") and self.recurring.pop(run_id, None):
            self._reply(200, {})
        else:
            self._reply(404, {"error": f"no recurring run {run_id}"})


@pytest.fixture
def kfp_api() -> Iterator[tuple[str, type[_KfpApi]]]:
    handler = type("Handler", (_KfpApi,), {"requests": [], "recurring": {}, "experiments": {}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


CLUSTER = [
    "infra.root=/mnt/seqrank",
    "infra.mlflow_tracking_uri=http://mlflow.seqrank.svc:5000",
    "infra.feast.online_store=redis",
    "infra.feast.redis_connection=redis-master.seqrank.svc:6379",
    "kubeflow.pvc=seqrank-state",
    "kubeflow.train_gpus=2",
    "kubeflow.image=registry.example.com/seqrank:1.2.3",
    'input=["gs://logs/events/*.jsonl"]',
]


def _invoke(*args: str, home: Path) -> Any:
    # The kfp client reads its context from $HOME; keep it inside the test's own directory.
    result = CliRunner().invoke(main, list(args), env={"HOME": str(home)}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_schedule_sends_the_compiled_pipeline_with_no_local_path(kfp_api, tmp_path, monkeypatch) -> None:
    host, api = kfp_api
    monkeypatch.chdir(tmp_path)
    sets = [f"--set={s}" for s in CLUSTER]
    out = _invoke(
        "schedule", "--host", host, "--cron", "0 0 2 * * *", "--experiment", "nightly", *sets, home=tmp_path
    )
    assert "recurring run rr-1" in out.output

    created = [r for r in api.requests if r["method"] == "POST" and r["path"] == f"{API}/recurringruns"]
    assert len(created) == 1
    body = created[0]["body"]
    assert body["trigger"]["cron_schedule"]["cron"] == "0 0 2 * * *"
    assert body["experiment_id"] == "exp-1"
    assert api.experiments["exp-1"]["display_name"] == "nightly"

    payload = json.dumps(body)
    for local in (str(tmp_path), str(Path.cwd()), str(Path(__file__).parents[2])):
        assert local not in payload, f"local path {local} sent to the server"
    params = body["runtime_config"]["parameters"]
    assert params["inputs"] == ["gs://logs/events/*.jsonl"]
    assert "/mnt/seqrank" in params["config_yaml"]
    assert params["model_name"] == "sim"  # the default config's model

    # The client sends the compiled file's two documents: the pipeline and its Kubernetes settings.
    spec = body["pipeline_spec"]["pipeline_spec"]
    executors = spec["deploymentSpec"]["executors"]
    train = next(e for name, e in executors.items() if "train" in name)["container"]
    assert train["image"] == "registry.example.com/seqrank:1.2.3"
    assert train["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert train["resources"]["accelerator"]["resourceCount"] == "2"
    assert train["resources"]["resourceMemoryLimit"] == "32G"
    # Every step mounts the shared volume at the infra root.
    k8s = body["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(k8s) == set(executors)
    for config in k8s.values():
        assert config["pvcMount"][0]["mountPath"] == "/mnt/seqrank"


def test_schedule_list_and_delete(kfp_api, tmp_path, monkeypatch) -> None:
    host, api = kfp_api
    monkeypatch.chdir(tmp_path)
    _invoke("schedule", "--host", host, *[f"--set={s}" for s in CLUSTER], home=tmp_path)
    listed = _invoke("schedule", "--host", host, "--list", home=tmp_path)
    assert "rr-1" in listed.output and "seqrank-scheduled" in listed.output
    _invoke("schedule", "--host", host, "--delete", "rr-1", home=tmp_path)
    assert api.recurring == {}
    assert [r["path"] for r in api.requests if r["method"] == "DELETE"] == [f"{API}/recurringruns/rr-1"]


def test_schedule_refuses_a_config_that_would_use_local_state(kfp_api, tmp_path) -> None:
    host, api = kfp_api
    result = CliRunner().invoke(main, ["schedule", "--host", host, "--input", "gs://logs/a.jsonl"])
    assert result.exit_code != 0
    assert "infra.root is empty" in result.output
    assert "infra.mlflow_tracking_uri is empty" in result.output
    assert not [r for r in api.requests if r["method"] == "POST"]
