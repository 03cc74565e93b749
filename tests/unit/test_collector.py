"""The collector's pure parts: write keys and the Authorization header, token buckets, body
limits (gzip bombs included), and the Segment and canonical mappings (ids, clock skew)."""

from __future__ import annotations

import base64
import gzip
import json
import logging
import os
import stat
import time
import uuid
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rhythm.collector import keys
from rhythm.collector.body import BodyError, decode_body
from rhythm.collector.canonical import BatchShapeError, canonical_items
from rhythm.collector.handlers import STAGES, Stages
from rhythm.collector.items import RHYTHM_ID_NAMESPACE, corrected_time, message_event_id
from rhythm.collector.keys import AuthError, KeyStore, credential_from_headers
from rhythm.collector.publisher import _log_stats
from rhythm.collector.ratelimit import RateLimiter, TokenBucket
from rhythm.collector.segment import normalise_verb, segment_items
from rhythm.producers import prepare_event

NOW = datetime(2026, 12, 6, 15, 0, 0, tzinfo=UTC)


# -- keys ------------------------------------------------------------------------------------


def test_keys_are_stored_hashed_private_and_revocable(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "home" / "collector-keys.json")
    key, record = store.create("acme", "checkout")
    other, _ = store.create("globex")
    text = store.path.read_text()
    assert key not in text and other not in text and record.hash in text
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert store.tenant_of(key) == ("acme", record.id)
    assert store.tenant_of(other)[0] == "globex"
    assert "hash" not in record.public()
    with pytest.raises(AuthError) as unknown:
        store.tenant_of(key + "x")
    assert unknown.value.reason == "unknown_key"
    # a second store (the collector) notices the revocation (it looks every RECHECK_S)
    reader = KeyStore(store.path)
    assert reader.tenant_of(key)[0] == "acme"
    store.revoke(record.id)
    reader._checked_at -= keys.RECHECK_S
    with pytest.raises(AuthError) as revoked:
        reader.tenant_of(key)
    assert revoked.value.reason == "revoked_key"
    assert reader.tenant_of(other)[0] == "globex"
    reader._checked_at -= keys.MISS_RECHECK_S  # a new key: known at once (a miss looks again)
    third, _ = store.create("initech")
    assert reader.tenant_of(third)[0] == "initech"
    with pytest.raises(KeyError):
        store.revoke("key_nope")
    with pytest.raises(ValueError, match="tenant"):
        store.create("Not A Tenant")


def test_credentials_from_basic_and_bearer() -> None:
    basic = base64.b64encode(b"rk_secret:").decode()
    assert credential_from_headers(f"Basic {basic}") == "rk_secret"
    with_password = base64.b64encode(b"rk_secret:ignored").decode()
    assert credential_from_headers(f"basic {with_password}") == "rk_secret"
    assert credential_from_headers("Bearer rk_secret") == "rk_secret"
    for bad, reason in [
        (None, "missing"),
        ("", "missing"),
        ("Basic !!!", "malformed"),
        ("Basic " + base64.b64encode(b":pw").decode(), "malformed"),
        ("Digest abc", "malformed"),
        ("Bearer", "malformed"),
    ]:
        with pytest.raises(AuthError) as exc:
            credential_from_headers(bad)
        assert exc.value.reason == reason


# -- rate limits -----------------------------------------------------------------------------


def test_token_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    bucket = TokenBucket(rate=10, burst=20, now=0.0)
    assert bucket.wait_for(20, 0.0) == 0
    bucket.take(20)
    assert bucket.wait_for(1, 0.0) == pytest.approx(0.1)
    assert bucket.wait_for(5, 0.5) == 0  # 5 tokens back after half a second
    assert bucket.wait_for(100, 100.0) == 0  # a batch over the burst passes a full bucket
    bucket.take(100)
    assert bucket.wait_for(1, 100.0) > 0


def test_rate_limiter_per_key_and_per_tenant() -> None:
    clock = [0.0]
    limiter = RateLimiter(10, 10, 15, 15, clock=lambda: clock[0])
    assert limiter.admit("k1", "acme", 10) is None
    assert limiter.admit("k1", "acme", 1) == ("key", 1)  # the key is spent
    assert limiter.admit("k2", "acme", 5) is None  # another key of acme: the tenant has 5
    refused = limiter.admit("k3", "acme", 5)
    assert refused is not None and refused[0] == "tenant"
    assert limiter.admit("k9", "globex", 10) is None  # another tenant is not affected
    clock[0] = 1.0  # 10 (key) and 15 (tenant) tokens a second
    assert limiter.admit("k3", "acme", 5) is None
    # a refusal costs nothing: the refused request's tokens are still there
    clock[0] = 10.0
    assert limiter.admit("k1", "acme", 10) is None


# -- bodies ----------------------------------------------------------------------------------


def test_bodies_json_text_plain_gzip_and_their_limits() -> None:
    assert decode_body(b'{"a": 1}', "application/json", "", 100) == {"a": 1}
    assert decode_body(b"[1]", "text/plain;charset=UTF-8", "", 100) == [1]  # sendBeacon
    assert decode_body(gzip.compress(b'{"a": 2}'), "application/json", "gzip", 100) == {"a": 2}
    cases = [
        (b"{nope", "application/json", "", 400, "malformed_json"),
        (b"  ", "application/json", "", 400, "empty_body"),
        (b"{}", "application/x-www-form-urlencoded", "", 415, "bad_content_type"),
        (b"{}", "application/json", "br", 415, "bad_encoding"),
        (b"not gzip at all", "application/json", "gzip", 400, "bad_gzip"),
        (gzip.compress(b'{"a": 1}')[:-12], "application/json", "gzip", 400, "bad_gzip"),
    ]
    for raw, ctype, encoding, status, reason in cases:
        with pytest.raises(BodyError) as exc:
            decode_body(raw, ctype, encoding, 1000)
        assert (exc.value.status, exc.value.reason) == (status, reason), raw


def test_a_gzip_bomb_stops_at_the_cap() -> None:
    bomb = gzip.compress(b"[" + b" " * 50_000_000 + b"]", 9)  # ~50 MB in ~50 KB
    assert len(bomb) < 100_000
    with pytest.raises(BodyError) as exc:
        decode_body(bomb, "application/json", "gzip", 500 * 1024)
    assert (exc.value.status, exc.value.reason) == (413, "too_large")
    deflated = zlib.compress(b'{"ok": true}')
    assert decode_body(deflated, "application/json", "deflate", 100) == {"ok": True}


# -- Segment ---------------------------------------------------------------------------------


def test_segment_track_maps_field_by_field() -> None:
    message = {
        "userId": "u-42",
        "event": "Order Completed",
        "messageId": "msg-1",
        "timestamp": "2026-12-06T14:59:50Z",
        "sentAt": "2026-12-06T15:00:00Z",
        "channel": "browser",
        "properties": {"total": 12.5, "items": [1, 2], "product": {"id": "p1"}, "gone": None},
        "context": {
            "page": {"path": "/checkout"},
            "library": {"name": "analytics-node", "version": "3.1.0"},
            "ip": "10.0.0.1",
            "groupId": "acct-7",
            "rhythm": {"object": {"type": "order", "id": "o-1"}, "tags": ["checkout"]},
        },
    }
    (item,) = segment_items(message, "track", "acme", NOW, 32 * 1024)
    assert item.error is None and item.event is not None
    event = item.event
    assert event["tenant"] == "acme"
    assert event["actor"] == {"type": "user", "id": "u-42"}
    assert event["verb"] == "order_completed"
    assert event["event_id"] == message_event_id("acme", "msg-1")
    assert event["occurred_at"] == NOW - timedelta(seconds=10)  # no skew: sentAt == now
    assert event["channel"] == "web"
    assert event["target"] == {"type": "group", "id": "acct-7"}
    assert event["object"] == {"type": "order", "id": "o-1"}
    assert event["tags"] == ["checkout"]
    assert event["properties"] == {
        "total": 12.5,
        "items": "[1,2]",
        "product.id": "p1",
        "context.page.path": "/checkout",
        "context.library.name": "analytics-node",
        "context.library.version": "3.1.0",
    }
    record, _key = prepare_event(event)  # the contract takes it
    assert record["verb"] == "order_completed"
    # the same message again (a retry) is the same event; another tenant's is not
    (again,) = segment_items(message, "track", "acme", NOW + timedelta(seconds=30), 32 * 1024)
    assert again.event is not None and again.event["event_id"] == event["event_id"]
    (other,) = segment_items(message, "track", "globex", NOW, 32 * 1024)
    assert other.event is not None and other.event["event_id"] != event["event_id"]


def test_clock_skew_from_sent_at_is_taken_off() -> None:
    # the device's clock is an hour fast: it stamped 16:00:00 and sent at 16:00:10
    device = {"timestamp": "2026-12-06T16:00:00Z", "sentAt": "2026-12-06T16:00:10Z"}
    message = {"anonymousId": "anon-1", "event": "clicked", **device}
    (item,) = segment_items(message, "track", "acme", NOW, 32 * 1024)
    assert item.event is not None
    assert item.event["occurred_at"] == NOW - timedelta(seconds=10)
    assert item.event["actor"] == {"type": "anonymous", "id": "anon-1"}
    ts = datetime(2026, 1, 1, tzinfo=UTC)
    assert corrected_time(ts, None, NOW) == ts
    assert corrected_time(None, None, NOW) == NOW
    # a batch's sentAt applies to its messages
    body = {"batch": [{"userId": "u", "event": "x", "timestamp": device["timestamp"]}]}
    (batched,) = segment_items({**body, "sentAt": device["sentAt"]}, "batch", "acme", NOW, 32768)
    assert batched.event is not None
    assert batched.event["occurred_at"] == NOW - timedelta(seconds=10)


def test_segment_batch_errors_are_per_message() -> None:
    batch = {
        "batch": [
            {"type": "track", "userId": "u-1", "event": "Signed Up", "messageId": "a"},
            {"type": "track", "event": "no user"},
            {"type": "track", "userId": "u-1", "event": "123 go"},
            {"type": "alias", "userId": "u-1", "previousId": "x"},
            {"type": "identify", "userId": "u-1", "traits": {"firstName": "Ann", "lastName": "E",
                                                            "plan": "pro", "email": "a@e.com"}},
            {"type": "page", "userId": "u-1", "name": "Pricing"},
            {"type": "track", "userId": "u-1", "event": "big", "properties": {"x": "y" * 40_000}},
            "not an object",
            {"type": "track", "userId": "u-1", "event": "e", "timestamp": "yesterday"},
            {"type": "track", "userId": "u-1", "event": "e", "context": {"rhythm": {"nope": 1}}},
        ]
    }  # fmt: skip
    items = segment_items(batch, "batch", "acme", NOW, 32 * 1024)
    reasons = [item.reason for item in items]
    assert reasons == [
        "", "invalid_event", "invalid_event", "unsupported_type", "", "", "event_too_large",
        "bad_shape", "invalid_event", "invalid_event",
    ]  # fmt: skip
    assert "userId or anonymousId" in (items[1].error or "")
    assert "start with a letter" in (items[2].error or "")
    assert items[4].person == (
        "acme",
        ("user", "u-1"),
        {"name": "Ann E", "email": "a@e.com"},
    )
    page = items[5].event
    assert page is not None and page["verb"] == "page_viewed"
    assert page["object"] == {"type": "page", "id": "Pricing"}
    assert items[0].ref["messageId"] == "a"
    with pytest.raises(BatchShapeError):
        segment_items({"batch": {"not": "a list"}}, "batch", "acme", NOW, 32768)
    with pytest.raises(BatchShapeError):
        segment_items([1, 2], "track", "acme", NOW, 32768)


def test_derived_ids_are_uuid5() -> None:
    assert message_event_id("acme", "m-1") == str(uuid.uuid5(RHYTHM_ID_NAMESPACE, "acme\nm-1"))
    assert uuid.UUID(message_event_id("acme", "é")).version == 5


def test_verbs_from_event_names() -> None:
    assert normalise_verb("Order Completed") == "order_completed"
    assert normalise_verb("  page.viewed  ") == "page.viewed"
    assert normalise_verb("Added to Cart!!") == "added_to_cart"
    assert normalise_verb("Ünïcode stuff") == "n_code_stuff"


# -- canonical -------------------------------------------------------------------------------


def _event(**changes: object) -> dict[str, object]:
    return {
        "actor": {"type": "user", "id": "u-1"},
        "verb": "viewed",
        "occurred_at": "2026-12-06T14:00:00Z",
    } | changes


def test_canonical_tenant_from_key_and_ids_from_content() -> None:
    body = {"events": [_event(), _event(tenant="acme"), _event(tenant="globex"), 7]}
    items = canonical_items(body, "acme", NOW, 32 * 1024)
    assert [i.reason for i in items] == ["", "", "tenant_mismatch", "bad_shape"]
    first, second = items[0].event, items[1].event
    assert first is not None and second is not None
    assert first["tenant"] == "acme" and first["event_id"] == second["event_id"]
    # a re-send is the same event, even with sent_at moving (skew corrected after the id)
    resent = canonical_items(
        _event(sent_at="2026-12-06T14:00:05Z"), "acme", NOW + timedelta(minutes=1), 32768
    )[0].event
    assert resent is not None
    again = canonical_items(_event(sent_at="2026-12-06T14:00:05Z"), "acme", NOW, 32768)[0].event
    assert again is not None and again["event_id"] == resent["event_id"]
    assert again["occurred_at"] == "2026-12-06T14:59:55.000Z"
    assert "sent_at" not in again
    assert canonical_items([_event(event_id="x" * 10)], "acme", NOW, 32768)[0].event is not None
    with pytest.raises(BatchShapeError):
        canonical_items("text", "acme", NOW, 32768)


def test_a_look_before_reading_takes_nothing() -> None:
    limiter = RateLimiter(10, 10, 100, 100, clock=lambda: 0.0)
    assert limiter.admit("k", "t", 1, take=False) is None
    assert limiter.admit("k", "t", 10) is None
    assert limiter.admit("k", "t", 1, take=False) == ("key", 1)


def test_a_look_expects_the_keys_last_batch_size() -> None:
    """A key over its rate is refused before its body is read until a batch of its last
    size fits, not as soon as one token is back (which let a flood's bodies all be read)."""
    clock = [0.0]
    limiter = RateLimiter(1000, 1000, 10**6, 10**6, clock=lambda: clock[0])
    assert limiter.look("flood", "t") is None  # nothing known yet: one event
    assert limiter.admit("flood", "t", 100) is None
    for _ in range(9):
        assert limiter.admit("flood", "t", 100) is None
    clock[0] = 0.001  # one token back: enough for a 1-event look, not for a batch of 100
    assert limiter.admit("flood", "t", 1, take=False) is None
    assert limiter.look("flood", "t") == ("key", 1)
    clock[0] = 0.1  # 100 tokens back
    assert limiter.look("flood", "t") is None
    assert limiter.look("calm", "t") is None  # another key: its own size, its own bucket
    assert limiter.admit("calm", "t", 5) is None
    assert limiter.look("calm", "t") is None


def test_rhythm_up_starts_the_collector_unless_its_port_is_zero(tmp_path: Path) -> None:
    from rhythm.stack.supervisor.collector_part import collector_part

    env = {"RHYTHM_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"}
    (part,) = collector_part(tmp_path, 18088, env, ["python", "-m", "rhythm.stack.cli"])
    assert part.name == "collector" and part.argv[-1] == "collector"
    assert part.ready_port == 18088
    assert part.health_url == "http://127.0.0.1:18088/healthz"
    assert part.env["RHYTHM_COLLECTOR_HOST"] == "127.0.0.1"
    assert part.env["RHYTHM_COLLECTOR_PORT"] == "18088"
    assert part.env["RHYTHM_KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:9"
    if "RHYTHM_COLLECTOR_KEYS_FILE" not in os.environ:
        assert part.env["RHYTHM_COLLECTOR_KEYS_FILE"] == str(tmp_path / "collector-keys.json")
    assert collector_part(tmp_path, 0, env, ["rhythm"]) == []


def test_stages_account_for_the_handler_time_and_clamp_the_report_time() -> None:
    started = time.perf_counter()
    stages = Stages(started)
    stages.mark("read")
    stages.mark("map")
    stages.mark("publish")
    # A report time before the last mark (a clock read on another thread) counts as zero
    # time waiting, never as negative; the acknowledgement cannot come after the report.
    stages.acknowledged(started - 1.0, started + 5.0)
    assert [name for name, _ in stages.spent] == list(STAGES)
    assert all(seconds >= 0 for _, seconds in stages.spent)
    assert dict(stages.spent)["kafka"] == dict(stages.spent)["report"] == 0.0
    begun = time.perf_counter()
    again = Stages(begun)
    again.acknowledged(begun - 0.001, begun - 0.002)  # both before the wait: nothing waited
    assert dict(again.spent) == {"kafka": 0.0, "report": 0.0, "wake": dict(again.spent)["wake"]}
    begun = time.perf_counter() - 0.3
    again = Stages(begun)
    again.acknowledged(begun + 0.2, begun + 0.1)  # acked after 0.1 s, served 0.1 s later
    spent = dict(again.spent)
    assert spent["kafka"] == pytest.approx(0.1) and spent["report"] == pytest.approx(0.1)
    assert spent["wake"] >= 0.1
    total = time.perf_counter() - started
    assert sum(seconds for _, seconds in stages.spent) <= total
    header = stages.header(total)
    assert header.split(", ")[0].startswith("read;dur=")
    assert header.endswith(f"total;dur={1000 * total:.3f}")


def test_librdkafka_statistics_become_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    window = {"p50": 1000, "p99": 9000, "max": 20000, "cnt": 5}  # µs, as librdkafka gives them
    idle = {"p50": 0, "p99": 0, "max": 0, "cnt": 0}
    stats = {
        "brokers": {
            "b1": {"rtt": window, "int_latency": window, "outbuf_latency": idle},
            "bootstrap": {"rtt": idle, "int_latency": idle, "outbuf_latency": idle},
        }
    }
    with caplog.at_level(logging.INFO, "rhythm.collector"):
        _log_stats(json.dumps(stats))
    (line,) = [r.getMessage() for r in caplog.records]
    figures = json.loads(line.removeprefix("kafka stats "))
    assert figures["rtt_p99_ms"] == 9.0 and figures["int_max_ms"] == 20.0
    assert figures["outbuf_p99_ms"] == 0.0
