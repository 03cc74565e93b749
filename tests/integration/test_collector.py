"""The HTTP collector with real clients, a real `rhythm collector` process, the real broker and
the sink: Python (httpx, requests), curl, Segment's official @segment/analytics-node, and a
page in headless Chromium (fetch and sendBeacon). Each event is checked in ClickHouse, raw
rows counted: once. Then bad input, rate limits, and Kafka away.

One sink and one collector serve the whole module (they take most of its time). A missing
`curl`, `node`/`npm` or `chromium` fails the test: .ci/run installs them.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import os
import queue
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
import requests

from rhythm.collector.items import message_event_id
from rhythm.schemas.topics import TopicSpec
from rhythm.stack.kafka import LocalKafka
from rhythm.stack.ports import free_port

from .conftest import read_topic
from .test_sink_support import RHYTHM, SinkProcess, Topics, make_topics, poll, running_sink

pytestmark = pytest.mark.integration

DRIVERS = Path(__file__).resolve().parents[1] / "drivers"
PAGE = DRIVERS / "browser" / "collector.html"
TENANTS = ("acme", "globex", "flood")


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed (.ci/run installs it)"
    return path


def _pump(stream: IO[bytes], lines: queue.SimpleQueue[bytes]) -> None:
    for line in stream:
        lines.put(line)


class CollectorProcess:
    """`rhythm collector` as a user runs it, configured through the environment."""

    def __init__(self, workdir: Path, bootstrap: str, name: str, **settings: Any) -> None:
        self.workdir = workdir
        self.keys_file = workdir / f"{name}-keys.json"
        self.log_path = workdir / f"{name}.log"
        self.env = dict(os.environ, RHYTHM_KAFKA_BOOTSTRAP_SERVERS=bootstrap)
        values = {"port": 0, "keys_file": self.keys_file} | settings
        for key, value in values.items():
            self.env[f"RHYTHM_COLLECTOR_{key.upper()}"] = (
                json.dumps(value) if isinstance(value, list) else str(value)
            )
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def key(self, tenant: str) -> tuple[str, str]:
        """A new write key through the CLI: (key, key id)."""
        done = self.rhythm("keys", "create", tenant, "--name", "test")
        created = json.loads(done.stdout)
        return created["key"], created["id"]

    def rhythm(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*RHYTHM, *args], env=self.env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done

    def start(self, timeout: float = 60.0) -> CollectorProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*RHYTHM, "collector"], env=self.env, stdout=subprocess.PIPE, stderr=log
        )
        log.close()
        assert self.proc.stdout is not None
        lines: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        threading.Thread(target=_pump, args=(self.proc.stdout, lines), daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            with contextlib.suppress(queue.Empty):
                line = lines.get(timeout=0.2)
                if line.startswith(b"{"):
                    self.url = json.loads(line)["url"]
                    return self
        raise AssertionError(f"the collector did not start:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def metrics(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as response:
            return str(response.read().decode())

    def metric(self, line_start: str) -> float:
        for line in self.metrics().splitlines():
            if line.startswith(line_start + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.terminate()
        return self.proc.wait(60)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


class PageServer:
    """Serves the browser page on its own origin and takes the page's report."""

    def __init__(self) -> None:
        self.page = b""
        self.reports: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(server.page)))
                self.end_headers()
                self.wfile.write(server.page)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                server.reports.put(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@dataclass
class Stack:
    sink: SinkProcess
    collector: CollectorProcess
    topics: Topics
    people_topic: str
    page: PageServer
    bootstrap: str
    keys: dict[str, tuple[str, str]]

    def rows(self, prefix: str) -> tuple[int, int]:
        """(raw rows, distinct event ids) of the events whose actor starts with `prefix`."""
        client = self.sink.client()
        try:
            rows, ids = client.query(
                "SELECT count(), uniqExact(event_id) FROM rhythm.events "
                "WHERE startsWith(actor_id, {p:String})",
                parameters={"p": prefix},
            ).result_rows[0]
        finally:
            client.close()
        return int(rows), int(ids)

    def landed_once(self, prefix: str, expected: int, resent: int = 0) -> None:
        """`expected` events of `prefix` are in ClickHouse, each as exactly one raw row, and
        the sink has consumed everything published (so a duplicate would show). `resent`:
        how many of them a client deliberately sent again (a retry that also got its 200):
        those are duplicates in Kafka by design, one event in `FINAL`, and at most one more
        raw row each (copies in one insert are folded as it is written)."""
        poll(lambda: self.rows(prefix)[1] >= expected, 60, f"{expected} events of {prefix}")
        assert self.sink.sync(60)
        rows, ids = self.rows(prefix)
        assert ids == expected and expected <= rows <= expected + resent, (rows, ids)
        final = self.query(
            "SELECT count() FROM rhythm.events FINAL WHERE startsWith(actor_id, {p:String})",
            p=prefix,
        )
        assert final == [(expected,)]

    def query(self, sql: str, **parameters: Any) -> list[tuple[Any, ...]]:
        client = self.sink.client()
        try:
            return [tuple(r) for r in client.query(sql, parameters=parameters).result_rows]
        finally:
            client.close()


@pytest.fixture(scope="module")
def stack(kafka_broker: LocalKafka, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("collector")
    topics = make_topics(kafka_broker, "collector")
    people = f"people.{uuid.uuid4().hex[:8]}"
    kafka_broker.create_topics([TopicSpec(people, 2, {"cleanup.policy": "compact"})])
    page = PageServer()
    collector = CollectorProcess(
        workdir,
        kafka_broker.bootstrap,
        "collector",
        cors_origins=[page.origin],
        body_timeout_s=2,
        header_timeout_s=2,
        key_rate=200,
        key_burst=500,
        tenant_rate=200,
        tenant_burst=500,
    )
    collector.env["RHYTHM_CLIENT_TOPIC"] = topics.events
    collector.env["RHYTHM_CLIENT_PEOPLE_TOPIC"] = people
    keys = {tenant: collector.key(tenant) for tenant in TENANTS}
    try:
        with running_sink(kafka_broker, topics, workdir) as sink:
            sink.keep_raw_rows()
            collector.start()
            yield Stack(sink, collector, topics, people, page, kafka_broker.bootstrap, keys)
            assert collector.stop() == 0, collector.log()[-2000:]
    finally:
        collector.close()
        page.close()


def basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


def canonical(prefix: str, i: int, **changes: Any) -> dict[str, Any]:
    return {
        "actor": {"type": "user", "id": f"{prefix}-{i % 3}"},
        "verb": "viewed",
        "object": {"type": "doc", "id": f"d-{i}"},
        "occurred_at": "2026-12-01T10:00:00.000Z",
        "properties": {"i": i},
    } | changes


# -- real clients ----------------------------------------------------------------------------


def test_python_clients_httpx_and_requests(stack: Stack) -> None:
    key, _ = stack.keys["acme"]
    url = stack.collector.url
    # httpx: canonical JSON, a gzipped batch with one invalid event (the others accepted)
    events = [canonical("py-httpx", i) for i in range(40)]
    events.append(canonical("py-httpx", 99, verb="Not A Verb"))
    body = gzip.compress(json.dumps({"events": events}).encode())
    headers = {
        "Authorization": f"Bearer {key}",
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
    }
    with httpx.Client(timeout=30) as client:
        answer = client.post(f"{url}/v1/events", content=body, headers=headers)
        assert answer.status_code == 200, answer.text
        result = answer.json()
        assert (result["accepted"], result["rejected"]) == (40, 1)
        assert result["errors"][0]["index"] == 40 and "verb" in result["errors"][0]["error"]
        # the same batch again (a client's retry): the same ids, so no second event
        again = client.post(f"{url}/v1/events", content=body, headers=headers)
        assert again.status_code == 200
    # requests: Segment's batch with Basic auth (the key as user name), and identify
    batch: dict[str, Any] = {
        "batch": [
            {
                "type": "track",
                "userId": f"py-req-{i}",
                "event": "Signed Up",
                "messageId": f"py-req-m{i}",
                "properties": {"plan": "pro"},
                "timestamp": "2026-12-01T10:00:00Z",
            }
            for i in range(10)
        ],
        "sentAt": "2026-12-01T10:00:01Z",
    }
    sent = requests.post(f"{url}/v1/batch", json=batch, auth=(key, ""), timeout=30)
    assert sent.status_code == 200 and sent.json()["accepted"] == 10, sent.text
    identify: dict[str, Any] = {
        "userId": "py-req-0",
        "traits": {"name": "Ann Example", "email": "a@example.com"},
    }
    said = requests.post(f"{url}/v1/identify", json=identify, auth=(key, ""), timeout=30)
    assert said.status_code == 200, said.text

    stack.landed_once("py-httpx", 40, resent=40)
    stack.landed_once("py-req", 10)
    ids = stack.query("SELECT toString(event_id) FROM rhythm.events WHERE actor_id = 'py-req-3'")
    assert ids == [(message_event_id("acme", "py-req-m3"),)]
    verbs = stack.query(
        "SELECT DISTINCT tenant, verb FROM rhythm.events WHERE startsWith(actor_id, 'py-')"
    )
    assert sorted(verbs) == [("acme", "signed_up"), ("acme", "viewed")]
    people = [
        json.loads(m.value() or b"") for m in read_topic(stack.bootstrap, stack.people_topic, 1)
    ]
    assert [(p["tenant"], p["actor_id"], p["traits"]["name"]) for p in people] == [
        ("acme", "py-req-0", "Ann Example")
    ]


def test_curl(stack: Stack, tmp_path: Path) -> None:
    curl = tool("curl")
    key, _ = stack.keys["acme"]
    url = stack.collector.url
    # docs/collector.md: one track call, then a gzipped batch file
    track = subprocess.run(
        [curl, "-sS", "-u", f"{key}:", "-H", "Content-Type: application/json",
         "-d", '{"userId": "curl-1", "event": "Report Exported", "messageId": "curl-m1"}',
         "-w", "\n%{http_code}", f"{url}/v1/track"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert track.stdout.splitlines()[-1] == "200", track.stdout + track.stderr
    batch = tmp_path / "batch.json.gz"
    batch.write_bytes(
        gzip.compress(
            json.dumps(
                {"batch": [{"userId": f"curl-{i}", "event": "Viewed", "messageId": f"curl-b{i}"}
                           for i in range(2, 7)]}
            ).encode()
        )
    )  # fmt: skip
    sent = subprocess.run(
        [curl, "-sS", "-u", f"{key}:", "-H", "Content-Type: application/json",
         "-H", "Content-Encoding: gzip", "--data-binary", f"@{batch}",
         "-w", "\n%{http_code}", f"{url}/v1/batch"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert sent.stdout.splitlines()[-1] == "200", sent.stdout + sent.stderr
    assert json.loads(sent.stdout.splitlines()[0])["accepted"] == 5
    stack.landed_once("curl-", 6)


def test_segment_analytics_node(stack: Stack) -> None:
    tool("node")
    tool("npm")
    built = subprocess.run(
        ["make", "-s", "-C", str(DRIVERS), "segment"], capture_output=True, text=True, timeout=600
    )
    assert built.returncode == 0, built.stderr[-3000:]
    script = built.stdout.strip().splitlines()[-1]
    key, _ = stack.keys["globex"]
    sent = subprocess.run(
        ["node", script, stack.collector.url, key, "node", "45"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert json.loads(sent.stdout.splitlines()[-1]) == {"sent": 46, "failures": []}
    stack.landed_once("node-", 45)
    rows = stack.query(
        "SELECT tenant, verb, target_type, target_id, properties['currency'], "
        "properties['context.library.name'] FROM rhythm.events "
        "WHERE startsWith(actor_id, 'node-') LIMIT 1"
    )
    assert rows == [
        ("globex", "order_completed", "group", "acct-7", "EUR", "@segment/analytics-node")
    ]


def test_a_page_in_chromium_with_fetch_and_send_beacon(stack: Stack, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is not installed (.ci/run installs it)"
    key, _ = stack.keys["acme"]
    page = PAGE.read_text()
    for name, value in (("COLLECTOR", stack.collector.url), ("WRITE_KEY", key), ("PREFIX", "web")):
        page = page.replace("{{" + name + "}}", value)
    stack.page.page = page.encode()
    # the preflight a browser sends before the fetch with an Authorization header
    preflight = httpx.options(
        f"{stack.collector.url}/v1/batch",
        headers={"Origin": stack.page.origin, "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == stack.page.origin
    assert "Authorization" in preflight.headers["access-control-allow-headers"]
    other = httpx.options(f"{stack.collector.url}/v1/batch", headers={"Origin": "http://evil"})
    assert "access-control-allow-origin" not in other.headers

    browser = subprocess.Popen(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", stack.page.origin + "/"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        report = stack.page.reports.get(timeout=90)
        assert "error" not in report, report
        assert report["fetched"]["status"] == 200 and report["fetched"]["body"]["accepted"] == 3
        assert report["beacon"] is True
        stack.landed_once("web-", 4)  # three fetched, one beacon
    finally:
        browser.kill()
        browser.wait(30)
    paths = stack.query(
        "SELECT DISTINCT properties['context.page.path'] FROM rhythm.events "
        "WHERE startsWith(actor_id, 'web-') AND verb = 'button_clicked'"
    )
    assert paths == [("/",)]


# -- what is refused ---------------------------------------------------------------------------


def raw_http(url: str, data: bytes, *, pause_after: int | None = None, wait: float = 30) -> bytes:
    """Send `data` on a fresh connection (stopping after `pause_after` bytes: a slow
    client), and return everything the server says until it closes or `wait` passes."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as sock:
        sock.sendall(data if pause_after is None else data[:pause_after])
        chunks = []
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)


def test_bad_input_gets_a_clear_4xx_is_counted_and_never_reaches_kafka(stack: Stack) -> None:
    key, _ = stack.keys["acme"]
    url = stack.collector.url
    json_headers = {"Authorization": basic(key), "Content-Type": "application/json"}
    gzipped = json_headers | {"Content-Encoding": "gzip"}
    bomb = gzip.compress(b"[" + b" " * 20_000_000 + b"]", 9)
    big_event = {"userId": "bad-1", "event": "x", "properties": {"blob": "y" * 40_000}}
    cases: list[tuple[str, str, bytes, dict[str, str], int, str]] = [
        ("malformed JSON", "/v1/track", b'{"userId": "bad-1", ', json_headers, 400,
         "malformed_json"),
        ("not a batch", "/v1/batch", b'{"batch": 7}', json_headers, 400, "bad_shape"),
        ("wrong types", "/v1/track", b'{"userId": ["bad-1"], "event": 5}', json_headers, 400,
         "invalid_event"),
        ("contract", "/v1/events", json.dumps(canonical("bad", 1, weight="heavy")).encode(),
         json_headers, 400, "invalid_event"),
        ("another tenant", "/v1/events", json.dumps(canonical("bad", 1, tenant="globex")).encode(),
         json_headers, 400, "tenant_mismatch"),
        ("huge body", "/v1/batch", b'{"batch": [' + b" " * 600_000 + b"]}", json_headers, 413,
         "too_large"),
        ("huge event", "/v1/track", json.dumps(big_event).encode(), json_headers, 413,
         "event_too_large"),
        ("bad gzip", "/v1/track", b"\x1f\x8b not really", gzipped, 400, "bad_gzip"),
        ("gzip bomb", "/v1/batch", bomb, gzipped, 413, "too_large"),
        ("form body", "/v1/track", b"userId=bad-1", json_headers | {
            "Content-Type": "application/x-www-form-urlencoded"}, 415, "bad_content_type"),
        ("no key", "/v1/track", b'{"userId": "bad-1", "event": "x"}',
         {"Content-Type": "application/json"}, 401, "missing"),
        ("unknown key", "/v1/track", b'{"userId": "bad-1", "event": "x"}',
         json_headers | {"Authorization": basic("rk_not-a-key")}, 401, "unknown_key"),
    ]  # fmt: skip
    before = {reason: stack.collector.metric(f'rhythm_collector_rejects_total{{reason="{reason}"}}')
              for *_, reason in cases}  # fmt: skip
    with httpx.Client(timeout=30) as client:
        for what, path, body, headers, status, reason in cases:
            answer = client.post(url + path, content=body, headers=headers)
            assert answer.status_code == status, (what, answer.text)
            assert answer.json()["success"] is False, what
            if status != 400 or reason in ("malformed_json", "bad_shape", "bad_gzip"):
                assert answer.json().get("reason", reason) == reason, (what, answer.text)
            else:  # every message invalid: each named in `errors`
                assert answer.json()["errors"][0]["error"], what
        # a revoked key: works, then `rhythm keys revoke`, then 401 from the next request on
        revoked, revoked_id = stack.collector.key("acme")
        good = {"userId": "bad-revoked", "event": "x", "messageId": "bad-r1"}
        poll(  # a new key works within 0.1 s
            lambda: (
                client.post(f"{url}/v1/track", json=good, auth=(revoked, "")).status_code == 200
            ),
            10,
            "the new key accepted",
        )
        stack.collector.rhythm("keys", "revoke", revoked_id)
        listed = stack.collector.rhythm("keys", "list").stdout
        assert revoked not in listed and '"revoked_at": "' in listed
        # the collector looks at the keys file at most once a second: poll (a request let
        # through before it looked is the same event each time, bad-r2)
        deadline = time.monotonic() + 10
        late = 0
        while True:
            answer = client.post(
                f"{url}/v1/track", json=good | {"messageId": "bad-r2"}, auth=(revoked, "")
            )
            if answer.status_code != 200 or time.monotonic() > deadline:
                break
            late += 1
        assert answer.status_code == 401, answer.text
        assert answer.json()["reason"] == "revoked_key"
    # slow clients: a body that stops coming gets 408, headers that stop get the door
    head = (
        "POST /v1/track HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: {basic(key)}\r\nContent-Length: 200\r\n\r\n"
    ).encode()
    slow_body = raw_http(url, head + b'{"userId": "bad-slow", ', wait=30)
    assert slow_body.startswith(b"HTTP/1.1 408"), slow_body[:200]
    slow_headers = raw_http(url, head, pause_after=40, wait=30)
    assert slow_headers == b""  # closed after header_timeout_s, nothing read as a request

    for *_, reason in cases:
        after = stack.collector.metric(f'rhythm_collector_rejects_total{{reason="{reason}"}}')
        assert after > before[reason], reason
    assert stack.collector.metric('rhythm_collector_rejects_total{reason="revoked_key"}') >= 1
    assert stack.collector.metric('rhythm_collector_rejects_total{reason="body_timeout"}') >= 1
    # of all that, only the one event sent with the key before its revocation is stored
    stack.landed_once("bad", 1 + min(late, 1), resent=max(late - 1, 0))
    # and no key in the collector's log or metrics
    assert key not in stack.collector.log() and key not in stack.collector.metrics()


def test_a_flooding_tenant_gets_429_and_another_tenant_goes_on(stack: Stack) -> None:
    flood, _ = stack.keys["flood"]
    calm, _ = stack.keys["globex"]
    url = stack.collector.url
    statuses = []
    retry_after = None
    with httpx.Client(timeout=30) as client:
        for n in range(20):  # 2,000 events against a bucket of 500 refilling at 200/s
            answer = client.post(
                f"{url}/v1/batch",
                json={"batch": [{"userId": "flood-1", "event": "spam", "messageId": f"f-{n}-{i}"}
                                for i in range(100)]},
                auth=(flood, ""),
            )  # fmt: skip
            statuses.append(answer.status_code)
            if answer.status_code == 429:
                retry_after = answer.headers["Retry-After"]
                assert answer.json()["reason"] in ("rate_limited_key", "rate_limited_tenant")
                # answered after refusal_delay_s (0.5): a flood ignoring Retry-After is slowed
                assert answer.elapsed.total_seconds() >= 0.45, answer.elapsed
            calm_answer = client.post(
                f"{url}/v1/track",
                json={"userId": "calm-1", "event": "fine", "messageId": f"calm-{n}"},
                auth=(calm, ""),
            )
            assert calm_answer.status_code == 200, calm_answer.text
    assert 200 in statuses and 429 in statuses, statuses
    assert retry_after is not None and int(retry_after) >= 1
    accepted = 100 * statuses.count(200)
    stack.landed_once("flood-", accepted)  # exactly the accepted ones, each once
    stack.landed_once("calm-", 20)


def test_503_with_retry_after_when_kafka_is_away(kafka_broker: LocalKafka, tmp_path: Path) -> None:
    """A collector whose Kafka does not answer: 503 after ack_timeout_s, then, the buffer
    full, 503 at once; never a 200. Readiness says so."""
    dead = f"127.0.0.1:{free_port()}"
    collector = CollectorProcess(
        tmp_path, dead, "away", ack_timeout_s=1, buffer_max_events=5, retry_after_s=7
    )
    key, _ = collector.key("acme")
    collector.start()
    try:
        with httpx.Client(timeout=30) as client:
            ready = client.get(collector.url + "/readyz")
            assert ready.status_code == 503
            assert client.get(collector.url + "/healthz").status_code == 200
            batch = {"batch": [{"userId": "away-1", "event": "x", "messageId": f"a{i}"}
                               for i in range(4)]}  # fmt: skip
            first = client.post(collector.url + "/v1/batch", json=batch, auth=(key, ""))
            assert (first.status_code, first.json()["reason"]) == (503, "kafka_timeout")
            assert first.headers["Retry-After"] == "7"
            second = client.post(collector.url + "/v1/batch", json=batch, auth=(key, ""))
            assert (second.status_code, second.json()["reason"]) == (503, "buffer_full")
            assert second.headers["Retry-After"] == "7"
        assert collector.metric('rhythm_collector_requests_total{route="batch",status="200"}') == 0
    finally:
        collector.close()
