"""POST /v1/events: behaviors pushed to the service reach the history the next /v1/rank reads."""

from __future__ import annotations

import pytest

from tests.helpers.feature_store import CFG, LONG_USER
from tests.helpers.serving import SERVE_CFG, TOKEN, build_serving_env, raw_ids

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
LATER = 1_800_000_000_000


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict:
    # A store of its own: these tests write to it.
    return build_serving_env(tmp_path_factory.mktemp("events"))


@pytest.fixture()
def client(env, monkeypatch):
    from fastapi.testclient import TestClient

    from serving.app import create_app

    monkeypatch.setenv("SEQRANK_ADMIN_TOKEN", TOKEN)
    with TestClient(create_app(env["bundle"], env["feast"], SERVE_CFG)) as test_client:
        yield test_client


def _reads(client) -> list:
    """Records every user sequence the service reads (the real read, passed through)."""
    features = client.app.state.service.features
    seen: list = []
    read = features.user_sequence

    def recording(user: int):
        seen.append(read(user))
        return seen[-1]

    features.user_sequence = recording
    return seen


def test_pushed_behavior_is_in_the_next_rank_history(env, client):
    users, items = raw_ids(env["ingest"], "user"), raw_ids(env["ingest"], "item")
    body = {"events": [{"user_id": users[4], "item_id": items[17], "ts": LATER}]}
    pushed = client.post("/v1/events", json=body, headers={"X-Admin-Token": TOKEN})
    assert pushed.status_code == 200, pushed.text
    assert pushed.json()["accepted"] == 1 and pushed.json()["unknown"] == 0
    assert pushed.json()["user_behavior"] == 1 and pushed.json()["user_category_behavior"] == 1

    seen = _reads(client)
    ranked = client.post("/v1/rank", json={"user_id": users[4], "candidates": [items[1], items[2]]})
    assert ranked.status_code == 200, ranked.text
    assert seen[-1]["seq_item"][-1] == 17 and seen[-1]["seq_ts"][-1] == LATER


def test_capped_lengths_stay_capped(env, client):
    users, items = raw_ids(env["ingest"], "user"), raw_ids(env["ingest"], "item")
    events = [{"user_id": users[LONG_USER], "item_id": items[5], "ts": LATER + i} for i in range(10)]
    assert (
        client.post("/v1/events", json={"events": events}, headers={"X-Admin-Token": TOKEN}).status_code
        == 200
    )
    features = client.app.state.service.features
    sequence = features.user_sequence(LONG_USER)
    assert len(sequence["seq_item"]) == CFG.max_sequence_length
    assert sequence["seq_ts"][-10:].tolist() == [LATER + i for i in range(10)]
    category = int(client.app.state.service.bundle.item_category[5])
    assert len(features.category_sequences(LONG_USER, [category])[category]["cat_seq_item"]) == CFG.category_k


def test_events_need_the_admin_token_and_known_ids(env, client, monkeypatch):
    users, items = raw_ids(env["ingest"], "user"), raw_ids(env["ingest"], "item")
    body = {"events": [{"user_id": users[3], "item_id": items[3]}]}
    assert client.post("/v1/events", json=body).status_code == 403
    assert client.post("/v1/events", json=body, headers={"X-Admin-Token": "wrong"}).status_code == 403
    unknown = {"events": [{"user_id": "nobody", "item_id": items[3]}, {"user_id": users[3], "item_id": "x"}]}
    got = client.post("/v1/events", json=unknown, headers={"X-Admin-Token": TOKEN})
    assert got.status_code == 200 and got.json()["accepted"] == 0 and got.json()["unknown"] == 2
    bad = client.post(
        "/v1/events",
        json={"events": [{"user_id": users[3], "item_id": items[3], "event_type": "impression"}]},
        headers={"X-Admin-Token": TOKEN},
    )
    assert bad.status_code == 422
    monkeypatch.delenv("SEQRANK_ADMIN_TOKEN")
    assert client.post("/v1/events", json=body, headers={"X-Admin-Token": TOKEN}).status_code == 403
