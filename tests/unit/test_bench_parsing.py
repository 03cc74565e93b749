"""The peers section's parsers and table: py-spy raw stacks, the peers' logs, the rendered text."""

from __future__ import annotations

from pathlib import Path

from bench.compare import check, reference_windows
from bench.harness import Timing
from bench.peers.faust_agent import EMPTY_RESULT
from bench.peers_bench import PEER_LABELS, profile_top, quix_late, read_result_line, render_section


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


def test_read_result_line_takes_the_last_json_after_the_prefix(tmp_path: Path) -> None:
    log = tmp_path / "log"
    assert read_result_line(log, EMPTY_RESULT) is None
    log.write_text(
        "[warn] starting\n"
        f'{EMPTY_RESULT} {{"events": 10, "seconds": 2.0}}\n'
        f'[2026-12-06 21:00:00] [WARNING] {EMPTY_RESULT} {{"events": 20, "seconds": 4.0}}\n'
    )
    assert read_result_line(log, EMPTY_RESULT) == {"events": 20, "seconds": 4.0}


def _timing(rate: float, load: str = "1.00") -> Timing:
    return Timing(events=int(rate * 10), seconds=10.0, first_seen_s=0.0, load=load, input_s=9.0)


def test_render_section_reports_ratios_output_checks_and_loads() -> None:
    ref = reference_windows(
        [{"event_id": "e", "tenant": "t", "actor_type": "u", "actor_id": "1", "occurred_at": 0}],
        (3600,),
    )
    equal = check(ref.windows, dict(ref.windows))
    differs = check(ref.windows, {k: {**v, "event_count": 9} for k, v in ref.windows.items()})
    runs = {
        "rhythm": [_timing(4000, "1.10"), _timing(6000, "1.30")],
        "quix": [_timing(1000), _timing(1000)],
        "faust": [_timing(500), _timing(500)],
        "faust-empty": [_timing(5000), _timing(5000)],
        "consume": [_timing(1_000_000), _timing(1_000_000)],
    }
    text = render_section(
        runs,
        {"rhythm": equal, "quix": equal, "faust": differs},
        ref,
        {"rhythm_processor_events_total": 1.0},
        {},
        "",
        2,
        facts={"scale": 1.0, "sent": 1, "duplicates": 0, "mean_size": 100, "total": 1},
    )
    rows = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| ")}
    rhythm = rows["| " + PEER_LABELS["rhythm"]]
    # median 5,000 events/s: 1.00 x Rhythm, 1.00 x the empty Faust agent, loads of each round
    assert "| 5,000 | 1.00 | 1.00 | yes | 4,000 / 6,000 | 1.10 / 1.30 |" in rhythm
    assert "| 1,000 | 5.00 | 0.20 | yes |" in rows["| " + PEER_LABELS["quix"]]
    assert "| 500 | 10.00 | 0.10 | no |" in rows["| " + PEER_LABELS["faust"]]
    assert "— (no output)" in rows["| " + PEER_LABELS["consume"]]
    assert "| Rhythm ≥ 3× Quix Streams at its defaults (outputs equal) | yes | 5.00× |" in text
    # 10x, but the Faust output differs: not met
    assert "| Rhythm ≥ 10× plain Faust (outputs equal) | no | 10.00× |" in text
    assert "NOT EQUAL" in text and "events 1" in text
