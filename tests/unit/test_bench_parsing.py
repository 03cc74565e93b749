"""The benchmark's parsers of its peers' output: py-spy raw stacks and the Quix peer's log."""

from __future__ import annotations

from pathlib import Path

from bench.peers_bench import profile_top, quix_late


def test_profile_top_ranks_functions_by_own_samples_and_merges_lines(tmp_path: Path) -> None:
    raw = tmp_path / "profile.txt"
    raw.write_text(
        "main (app.py:1);_stage2 (processors/app.py:10);send (aiokafka/producer.py:5) 6\n"
        "main (app.py:1);_stage2 (processors/app.py:12);send (aiokafka/producer.py:7) 2\n"
        "main (app.py:1);_stage1 (processors/app.py:40) 2\n"
    )
    text = profile_top(raw)
    assert text.startswith("10 samples.")
    rows = [line for line in text.splitlines() if line.startswith("| ") and "`" in line]
    # send: 8 of 10 samples at the top of the stack, its two lines merged into one row
    assert rows[0] == "| 80.0 | 80.0 | `send (aiokafka/producer.py)` |"
    assert "| 80.0 | `_stage2 (processors/app.py)` |" in text  # Rhythm's own, by total


def test_profile_top_without_samples(tmp_path: Path) -> None:
    raw = tmp_path / "profile.txt"
    raw.write_text("")
    assert profile_top(raw) == "(no samples)\n"


def test_quix_late_reads_the_last_logged_count(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_text(
        "quix peer: 1 late window updates dropped so far\n"
        "other line\n"
        "quix peer: 1001 late window updates dropped so far\n"
    )
    assert quix_late(log) == 1001
    log.write_text("nothing late\n")
    assert quix_late(log) == 0
