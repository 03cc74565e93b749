"""The bad-input catalogue through all three doors, with the processors and the sink running:
each bad input gets a clear error or a dead letter with its reason, no process dies, the good
events sent after the bad ones are processed (no partition stalls), and the counts add up:
offered = stored + dead letters + rejected."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from rhythm.producers import Client, ClientSettings, KafkaSettings
from rhythm.schemas import ContractError
from rhythm.stack.kafka import LocalKafka

from ..integration.conftest import read_topic
from .catalogue import CLIENT_CASES, UNICODE_IDS, RawCase, good, ingest_lines, raw_cases
from .report import REPORT, BadRow
from .stack import Stack, wait_until

pytestmark = pytest.mark.integration

KCAT = "/usr/bin/kcat"


@pytest.fixture
def stack(kafka_broker: LocalKafka, tmp_path: Path) -> Iterator[Stack]:
    # retention 0: a valid event from 1970 must stay in the table for the count (with the
    # default TTL of 365 days a merge may drop it at any time, which is its purpose).
    s = Stack(kafka_broker, tmp_path, retention_days=0)
    s.sink.start(120)
    s.sink.keep_raw_rows()  # raw count() below: no merge may fold rows meanwhile
    s.processors.start()
    try:
        yield s
    finally:
        s.close()


def end_offsets(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "end-offsets"})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), 5)[1] for p in parts)
    finally:
        consumer.close()


def kcat(bootstrap: str, topic: str, partition: int, case: RawCase, workdir: Path) -> bool:
    """One message with kcat, as a foreign producer would write it; False if it refused.
    A file argument is one message, but an empty file is none: empty and NULL values go
    through stdin as `key<TAB>` lines (-Z: an empty value is sent as NULL)."""
    args = [KCAT, "-P", "-b", bootstrap, "-t", topic, "-p", str(partition)]
    if not case.value:
        assert case.key is not None
        args += ["-K", "\\t"] + (["-Z"] if case.value is None else [])
        done = subprocess.run(args, input=case.key + b"\t\n", capture_output=True, timeout=60)
    else:
        path = workdir / "value.bin"
        path.write_bytes(case.value)
        if case.key is not None:
            args += ["-k", case.key.decode()]
        done = subprocess.run([*args, str(path)], capture_output=True, timeout=60)
    return done.returncode == 0 and b"ERROR" not in done.stderr


def scrape(port: int) -> dict[str, float]:
    """Prometheus samples as {name{labels}: value}."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def total(samples: dict[str, float], prefix: str) -> dict[str, float]:
    return {k: v for k, v in samples.items() if k.startswith(prefix + "{") or k == prefix}


def by_label(samples: dict[str, float], prefix: str, label: str) -> Counter[str]:
    out: Counter[str] = Counter()
    for key, value in total(samples, prefix).items():
        match = re.search(rf'{label}="([^"]*)"', key)
        out[match.group(1) if match else ""] += int(value)
    return out


@pytest.mark.skipif(not Path(KCAT).exists(), reason="kcat is installed by .ci/run")
def test_bad_input_through_every_door(stack: Stack, tmp_path: Path) -> None:
    now = int(time.time() * 1000)
    bootstrap, topic = stack.bootstrap, stack.topics.events
    settings = ClientSettings(kafka=KafkaSettings(bootstrap_servers=bootstrap), topic=topic)
    offered = 0
    rejected = 0
    sent_ids: set[str] = set()

    # -- door 1: the client ------------------------------------------------------------------
    with Client(settings, on_error=lambda _e, reason: pytest.fail(f"gave up: {reason}")) as c:
        for n, case in enumerate(CLIENT_CASES):
            event = good(n, now)
            case.change(event)
            offered += 1
            with pytest.raises(ContractError) as caught:
                c.send(event)
            message = str(caught.value)
            assert case.field in message, (case.name, message)
            assert len(message) < 2000, "the error must stay readable"
            rejected += 1
            REPORT.bad.append(BadRow("client", case.name, f"ContractError: {message[:90]}"))
        for n, (label, actor_id) in enumerate(UNICODE_IDS.items()):
            event = good(100 + n, now, actor={"type": "user", "id": actor_id})
            offered += 1
            sent_ids.add(c.send(event))
            REPORT.bad.append(BadRow("client", f"unicode actor id ({label})", "accepted, stored"))
        assert c.flush(60) == 0

    # -- door 2: rhythm ingest ---------------------------------------------------------------
    lines, cases = ingest_lines(now)
    source = tmp_path / "input.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n\n")  # a blank line at the end is skipped
    rejects = tmp_path / "rejects.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "rhythm.stack.cli", "ingest", str(source), "--topic", topic,
         "--bootstrap", bootstrap, "--rejects", str(rejects), "--no-progress"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # 1: some lines invalid, every valid one delivered
    import json

    reject_lines = {}
    for line in rejects.read_text().splitlines():
        entry = json.loads(line)
        reject_lines[entry["line"]] = entry["error"]
    expected_bad = {n for n, (_case, valid) in enumerate(cases, 1) if not valid}
    assert set(reject_lines) == expected_bad
    for n, (label, valid) in enumerate(cases, 1):
        outcome = "delivered" if valid else f"rejects file line {n}: {reject_lines[n][:80]}"
        REPORT.bad.append(BadRow("rhythm ingest", label, outcome))
    offered += len(cases)
    rejected += len(expected_bad)
    assert f"{len(cases)} lines: {len(cases) - len(expected_bad)} valid" in done.stdout

    # -- door 3: raw bytes on the topic (kcat) -----------------------------------------------
    raw = raw_cases(now)
    refused_by_broker = 0
    for n, rc in enumerate(raw):
        assert kcat(bootstrap, topic, n % 2, rc, tmp_path), rc.name
    offered += len(raw)
    huge = RawCase("2 MB message (over the broker's limit)", b"\x00" * 2_000_000, "", "")
    offered += 1
    if not kcat(bootstrap, topic, 0, huge, tmp_path):
        refused_by_broker += 1
        rejected += 1
    assert refused_by_broker == 1

    # -- then good events on every partition: none may be stuck behind the bad ones ----------
    with Client(settings) as c:
        good_after = [c.send(good(5000 + i, now, actor={"type": "user", "id": f"after-{i}"}))
                      for i in range(200)]  # fmt: skip
        assert c.flush(60) == 0
    offered += len(good_after)

    # -- the outcome -------------------------------------------------------------------------
    on_topic = end_offsets(bootstrap, topic)
    assert offered == on_topic + rejected  # nothing else reached the topic
    assert stack.sink.sync(120), stack.sink.log()[-3000:]
    stored = stack.rows("SELECT count() FROM rhythm.events")[0][0]
    dead = dict(
        stack.rows(
            f"SELECT reason, count() FROM rhythm.dead_letters FINAL WHERE topic = '{topic}' "
            "GROUP BY reason"
        )
    )
    dead_total = sum(dead.values())
    # The sink's view: every message on the topic is a row or a dead letter, and its table
    # of dead letters says why.
    assert stored + dead_total == on_topic, (stored, dead)
    expected_sink = Counter(rc.sink for rc in raw if rc.sink != "stored")
    assert Counter(dead) == expected_sink

    ids = {r[0] for r in stack.rows("SELECT toString(event_id) FROM rhythm.events")}
    assert sent_ids | set(good_after) <= ids
    actor_ids = {r[0] for r in stack.rows("SELECT actor_id FROM rhythm.events")}
    assert set(UNICODE_IDS.values()) <= actor_ids  # byte for byte, NUL and all

    # The processors' view: each message taken or dead-lettered with its reason.
    wait_until(
        lambda: sum(by_label(scrape(stack.processors.metrics_port),
                             "rhythm_processor_events_total", "partition").values())
        + sum(by_label(scrape(stack.processors.metrics_port),
                       "rhythm_processor_dead_letters_total", "reason").values())
        >= on_topic,
        120, "the processors to get through every message",
    )  # fmt: skip
    samples = scrape(stack.processors.metrics_port)
    taken = sum(by_label(samples, "rhythm_processor_events_total", "partition").values())
    proc_dead = by_label(samples, "rhythm_processor_dead_letters_total", "reason")
    assert taken + sum(proc_dead.values()) == on_topic
    assert proc_dead == Counter(rc.processors for rc in raw if rc.processors != "taken")
    letters = read_topic(bootstrap, stack.pipeline.topics["dead"], sum(proc_dead.values()), 60)
    assert len(letters) == sum(proc_dead.values())

    assert stack.processors.alive(), stack.processors.log_path.read_text()[-3000:]
    assert stack.sink.proc is not None and stack.sink.proc.poll() is None
    for rc in raw:
        sink = "stored" if rc.sink == "stored" else f"sink dead letter {rc.sink}"
        proc = "processed" if rc.processors == "taken" else f"processor dead letter {rc.processors}"
        REPORT.bad.append(BadRow("raw bytes (kcat)", rc.name, f"{sink}; {proc}"))
    REPORT.bad.append(BadRow("raw bytes (kcat)", huge.name, "refused by the broker (kcat error)"))
    REPORT.notes.append(
        f"bad-input run: {offered} offered = {stored} stored + {dead_total} dead letters "
        f"(sink) + {rejected} rejected at the door; processors: {taken} taken + "
        f"{sum(proc_dead.values())} dead letters = {on_topic} on the topic"
    )
