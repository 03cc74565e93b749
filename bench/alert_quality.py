"""`make eval`: the alert rules on large labelled scenarios, written to docs/signals-quality.md.

The scenarios come from tests/scenarios (an independent generator; its README says what it
plants and how it labels). Each is a quarter of several tenants. The rules run in-process
through stage 2's own code (`run_rules`); tests/integration/test_alert_quality.py shows on a
small scenario that the real pipeline publishes exactly the same alerts.

    python -m bench.alert_quality [--runs 1a,2b,5a] [--out docs/signals-quality.md]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from tests.scenarios.generate import generate
from tests.scenarios.score import (
    SilenceScore,
    WaitScore,
    run_rules,
    score_silence,
    score_waits,
    settings_for,
    wilson,
)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RUNS = "1a,2b,5a"  # seed + variant; 1a is where the rules were looked at first


def _pct(k: int, n: int) -> str:
    if n == 0:
        return "n/a"
    lo, hi = wilson(k, n)
    return f"{100 * k / n:.1f} % ({k}/{n}; 95 % CI {100 * lo:.0f}-{100 * hi:.0f})"


def _median(xs: list[float]) -> str:
    return f"{statistics.median(xs):.1f}" if xs else "n/a"


def section(name: str, meta: dict[str, Any], s: SilenceScore, w: WaitScore) -> list[str]:
    fa_q = s.false_alarms_per_entity_quarter
    unambiguous_fp = w.fp - w.ambiguous_alarms
    lines = [
        f"### Scenario {name}",
        "",
        f"{meta['events']:,} events, {meta['tenants']} tenants, {meta['days']} days; "
        f"rules ran in {meta['seconds']:.0f} s.",
        "",
        "**silence**",
        "",
        "| measure | value | goal |",
        "|---|---|---|",
        f"| planted stops found (recall) | {_pct(s.found, s.stops)} | ≥ 95 % |",
        f"| ... within 3× the entity's usual gap | {_pct(s.found_within_3_usual, s.stops)} | "
        "≥ 95 % |",
        f"| delay, in usual gaps (median of found) | {_median(s.delays_usual)} | |",
        f"| false alarms on stationary entities | {s.stationary_alarms} on {s.stationary} "
        f"entities = **{fa_q:.2f} per entity per quarter** | ≤ 1 |",
        f"| ... on weekday-only entities, fired outside working time | "
        f"{s.weekday_only_alarms_off_hours} | |",
        f"| ... on weekday-only entities, after under an hour of working time (caused by a "
        f"night, weekend or holiday) | {s.weekday_only_alarms_off_time} | 0 |",
        f"| alerts before a planted stop | {s.alarms_before_stop} | |",
        f"| alerts on entities whose pace changes (slow-down, days off, vacation...) | "
        f"{s.changing_alarms} on {s.changing} entities | (not a goal; reported) |",
        "",
        "| pattern | entities | alerts | found | missed | false alarms |",
        "|---|---|---|---|---|---|",
        *(
            f"| {p} | {c['entities']} | {c['alerts']} | {c['found']} | {c['missed']} | "
            f"{c['false_alarms']} |"
            for p, c in sorted(s.by_pattern.items())
        ),
        "",
        "**unanswered** (a wait = a run of their messages with none of ours between)",
        "",
        "| | alerted | not alerted |",
        "|---|---|---|",
        f"| missed (a reply was owed) | {w.tp} | {w.fn} |",
        f"| not owed (answered, slow, closing) | {w.fp} | |",
        "",
        "| measure | value | goal |",
        "|---|---|---|",
        f"| recall | {_pct(w.tp, w.tp + w.fn)} | ≥ 95 % |",
        f"| precision | {_pct(w.tp, w.tp + w.fp)} | ≥ 90 % |",
        f"| precision without the ambiguous closings | {_pct(w.tp, w.tp + unambiguous_fp)} | |",
        f"| cold-start misses found | {_pct(w.cold_found, w.cold_found + w.cold_missed)} | |",
        f"| alerts on our own people's messages | {w.ours_alerted} | 0 |",
        f"| false alarms by label | {dict(sorted(w.fp_by_label.items()))} | |",
        f"| hours from the message to the alert (median of found) | {_median(w.delays_h)} | |",
        "",
    ]
    return lines


def evaluate(seed: int, variant: str) -> tuple[dict[str, Any], SilenceScore, WaitScore]:
    scenario = generate(seed=seed, size="large", variant=variant)
    started = time.monotonic()
    alerts = run_rules(scenario, settings_for(scenario))
    meta = {
        "events": len(scenario.events),
        "tenants": len(scenario.tenants),
        "days": scenario.days,
        "seconds": time.monotonic() - started,
    }
    return meta, score_silence(scenario, alerts), score_waits(scenario, alerts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=DEFAULT_RUNS, help="seed+variant list, e.g. 1a,2b")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "signals-quality.md")
    args = parser.parse_args(argv)
    body: list[str] = []
    for run in args.runs.split(","):
        seed, variant = int(run[:-1]), run[-1]
        print(f"scenario {run}: generating and running the rules...", file=sys.stderr)
        meta, s, w = evaluate(seed, variant)
        body += section(f"large, seed {seed}, variant {variant}", meta, s, w)
    text = args.out.read_text() if args.out.exists() else ""
    marker = "<!-- results: written by `make eval` -->"
    head = text.split(marker)[0] if marker in text else text
    args.out.write_text(head.rstrip() + "\n\n" + marker + "\n\n" + "\n".join(body))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
