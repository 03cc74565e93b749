"""What track()/send() do before anything touches Kafka: validation, ids, keys, metrics."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from typing import Any

import pytest
from prometheus_client import REGISTRY

from rhythm.producers import Client, ClientSettings, KafkaSettings, prepare_event
from rhythm.producers.prepare import prepare_payload
from rhythm.schemas import ContractError, Entity, Event, decode_event, encode_event

from .test_validated_encoder import random_event

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


def test_entities_may_be_entity_models() -> None:
    """`EntityLike` allows an `Entity`: the client takes it as it takes a dict or a pair."""
    given = {**BASE, "actor": Entity(type="user", id="u-1"), "target": Entity(type="a", id="1")}
    record, _ = prepare_event(given)
    assert (record["actor_type"], record["actor_id"]) == ("user", "u-1")
    assert (record["target_type"], record["target_id"]) == ("a", "1")
    payload, _, _ = prepare_payload(given, 1)
    got = decode_event(payload)
    assert (got["actor_type"], got["actor_id"], got["target_id"]) == ("user", "u-1", "1")


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


def test_send_publishes_the_bytes_of_the_prepared_record() -> None:
    """send()'s payload (no record built) is encode_event() of prepare_event()'s record."""
    rng = random.Random(42)
    events: list[Any] = [random_event(rng) for _ in range(300)]
    events += [
        {**BASE, "actor": ("user", "u-1"), "object": ("doc", "d-1")},
        Event.model_validate({**BASE, "event_id": "0191e2b4-0000-7000-8000-000000000001"}),
        Event.model_validate(BASE),
    ]
    for event in events:
        payload, key, event_id = prepare_payload(event, 1_790_856_001_000)
        given = event.event_id if isinstance(event, Event) else event.get("event_id")
        same = event
        if given is None:  # prepare_payload assigned a UUIDv7: prepare_event gets the same
            assert uuid.UUID(event_id).version == 7
            if isinstance(event, Event):
                same = event.model_copy(update={"event_id": event_id})
            else:
                same = {**event, "event_id": event_id}
        else:
            assert event_id == given
        record, want_key = prepare_event(same)
        record["sent_at"] = 1_790_856_001_000
        assert payload == encode_event(record)
        assert key == want_key


def test_send_refuses_what_prepare_event_refuses_with_the_same_message() -> None:
    bad: list[dict[str, Any]] = [
        {**BASE, "tenant": "Acme Corp", "verb": "Replied!"},
        {**BASE, "actor": ("user",)},
        {**BASE, "object": ("doc", "d", "x"), "tenant": 5},
        {**BASE, "properties": {"a": [1]}, "occurred_at": "2026-10-01"},
        {k: v for k, v in BASE.items() if k != "actor"},
    ]
    for event in bad:
        with pytest.raises(ContractError) as want:
            prepare_event(event)
        with pytest.raises(ContractError) as got:
            prepare_payload(event, 0)
        assert str(got.value) == str(want.value)
        # shown with pydantic's error when validation found it, alone for a bad pair
        assert type(_shown_with(got.value)) is type(_shown_with(want.value))


def _shown_with(exc: BaseException) -> BaseException | None:
    """The exception a traceback prints before this one."""
    if exc.__cause__ is not None or exc.__suppress_context__:
        return exc.__cause__
    return exc.__context__


def test_a_dropped_event_is_reported_with_its_wire_record() -> None:
    reported: list[dict[str, Any]] = []
    client = Client(
        ClientSettings(
            kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"),
            queue_max_messages=1,
            full_queue_policy="drop",
        ),
        on_error=lambda record, _reason: reported.append(record),
    )
    event = {**BASE, "object": ("doc", "d-1"), "tags": ["a"], "properties": {"n": 2**40}}
    client.send(event)
    dropped_id = client.send(event)
    client.close(0)
    dropped = next(r for r in reported if r["event_id"] == dropped_id)
    record, _ = prepare_event({**event, "event_id": dropped_id})
    assert isinstance(dropped["sent_at"], int)
    assert dropped == record | {"sent_at": dropped["sent_at"]}
