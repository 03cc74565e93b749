"""What track()/send() do before anything touches Kafka: validation, ids, keys, metrics."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
from prometheus_client import REGISTRY

from rhythm.producers import Client, ClientSettings, KafkaSettings, prepare_event
from rhythm.schemas import ContractError, Event, decode_event, encode_event

BASE = {
    "tenant": "acme",
    "occurred_at": "2026-10-01T12:00:00.123Z",
    "actor": {"type": "user", "id": "u-42"},
    "verb": "replied",
}


def test_an_event_without_id_gets_a_uuid7_and_one_with_keeps_its_own() -> None:
    record, key = prepare_event(BASE)
    assert uuid.UUID(record["event_id"]).version == 7
    assert key == "acme:user:u-42"
    given = "0191e2b4-0000-7000-8000-000000000001"
    assert prepare_event({**BASE, "event_id": given})[0]["event_id"] == given


def test_entities_may_be_pairs() -> None:
    record, _ = prepare_event({**BASE, "actor": ("user", "u-1"), "object": ("doc", "d-1")})
    assert (record["actor_type"], record["actor_id"]) == ("user", "u-1")
    assert (record["object_type"], record["object_id"]) == ("doc", "d-1")
    with pytest.raises(ContractError, match="actor"):
        prepare_event({**BASE, "actor": ("user",)})


def test_model_events_are_accepted_and_encode_to_the_same_record() -> None:
    model = Event.model_validate({**BASE, "event_id": "0191e2b4-0000-7000-8000-000000000001"})
    from_model, _ = prepare_event(model)
    from_dict, _ = prepare_event({**BASE, "event_id": "0191e2b4-0000-7000-8000-000000000001"})
    assert from_model == from_dict
    assert decode_event(encode_event(from_model))["occurred_at"] == from_model["occurred_at"]


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"tenant": "Acme Corp"}, "tenant"),
        ({"verb": "Replied!"}, "verb"),
        ({"weight": float("inf")}, "weight"),
        ({"occurred_at": "2026-10-01T12:00:00"}, "occurred_at"),
        ({"tags": ["ok", "Not OK"]}, "tags"),
    ],
)
def test_track_raises_a_clear_error_in_the_callers_thread(
    patch: dict[str, object], field: str
) -> None:
    client = Client(ClientSettings(kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1")))
    with pytest.raises(ContractError, match=field):
        client.send({**BASE, **patch})
    assert client.stats.tracked == 0
    assert client.queue_depth() == 0  # nothing was queued, no producer was even opened
    client.close(0)


def test_metrics_count_what_the_client_did() -> None:
    before = REGISTRY.get_sample_value("rhythm_client_events_tracked_total") or 0.0
    client = Client(
        ClientSettings(
            kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"),
            queue_max_messages=2,
            full_queue_policy="drop",
        )
    )
    for _ in range(5):
        client.track("acme", ("user", "u-1"), "clicked")
    assert REGISTRY.get_sample_value("rhythm_client_events_tracked_total") == before + 5
    assert REGISTRY.get_sample_value("rhythm_client_queue_depth") is not None
    assert client.stats.dropped == Counter({"queue_full": 3})
    client.close(0)
    assert client.stats.failed == Counter({"purged": 2})
