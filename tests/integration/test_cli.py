"""`rhythm ingest` and `rhythm tail` as a user runs them: the real CLI, the real broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rhythm.schemas import decode_event

from .conftest import payload, read_topic

pytestmark = pytest.mark.integration

RHYTHM = [sys.executable, "-m", "rhythm.stack.cli"]


def _line(i: int) -> dict[str, Any]:
    return {
        "event_id": f"00000000-0000-7000-8000-{i:012d}",
        "tenant": "acme",
        "occurred_at": f"2026-10-01T{(i // 3600) % 24:02d}:{(i // 60) % 60:02d}:{i % 60:02d}Z",
        "actor": {"type": "user", "id": f"u-{i % 997}"},
        "verb": "viewed",
        "object": {"type": "document", "id": f"doc-{i % 50}"},
        "tags": ["bikes"],
        "weight": 1.5,
    }


INVALID: dict[str, str | dict[str, Any]] = {
    "not json": "{this is not json",
    "bad tenant": {"tenant": "ACME!"},
    "nan weight": {"weight": float("nan")},
    "no actor": {"actor": None},
    "bad time": {"occurred_at": "yesterday"},
}


def test_ingest_delivers_every_valid_line_and_reports_the_invalid_ones(
    kafka_broker: Any, topic: str, tmp_path: Path
) -> None:
    total = 250_000
    invalid_at: dict[int, str] = {}
    source = tmp_path / "events.jsonl"
    kinds = list(INVALID)
    with source.open("w") as out:
        for i in range(total):
            number = i + 1
            if i % 25_000 == 7:
                kind = kinds[len(invalid_at) % len(kinds)]
                invalid_at[number] = kind
                patch = INVALID[kind]
                if isinstance(patch, str):
                    out.write(patch + "\n")
                    continue
                line = {**_line(i), **patch}
                out.write(json.dumps(line, allow_nan=True) + "\n")
            else:
                out.write(json.dumps(_line(i)) + "\n")
    done = subprocess.run(
        [*RHYTHM, "ingest", str(source), "--topic", topic, "--bootstrap", kafka_broker.bootstrap],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ),
    )
    assert done.returncode == 1, done.stderr  # 1: some lines invalid, every valid one delivered
    valid = total - len(invalid_at)
    assert f"{valid} delivered, 0 undelivered" in done.stdout
    rejects = [json.loads(x) for x in (tmp_path / "events.rejects.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rejects] == sorted(invalid_at)
    for reject in rejects:
        assert reject["error"]  # a reason for a person
    by_kind = {invalid_at[r["line"]]: r["error"] for r in rejects}
    assert "tenant" in by_kind["bad tenant"]
    assert "weight" in by_kind["nan weight"]
    assert "actor" in by_kind["no actor"]
    assert "occurred_at" in by_kind["bad time"]
    assert "JSON" in by_kind["not json"] or "json" in by_kind["not json"]
    for number in sorted(invalid_at)[:3]:
        assert str(number) in done.stderr  # line numbers named on the terminal too

    messages = read_topic(kafka_broker.bootstrap, topic, valid, timeout=120)
    assert len(messages) == valid
    ids = {decode_event(payload(m))["event_id"] for m in messages}
    assert len(ids) == valid


def test_ingest_of_a_clean_file_exits_zero_and_tail_decodes_it(
    kafka_broker: Any, topic: str, tmp_path: Path
) -> None:
    source = tmp_path / "clean.jsonl"
    source.write_text("".join(json.dumps(_line(i)) + "\n" for i in range(20)))
    base = ["--bootstrap", kafka_broker.bootstrap]
    done = subprocess.run(
        [*RHYTHM, "ingest", str(source), "--topic", topic, *base],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "clean.rejects.jsonl").exists()
    tail = subprocess.run(
        [*RHYTHM, "tail", topic, "--from-beginning", "--limit", "20", *base],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert tail.returncode == 0, tail.stderr
    lines = [json.loads(x) for x in tail.stdout.splitlines()]
    assert len(lines) == 20
    ids = sorted(x["value"]["event_id"] for x in lines)
    assert ids == sorted(_line(i)["event_id"] for i in range(20))
    assert all(x["value"]["object_type"] == "document" for x in lines)
