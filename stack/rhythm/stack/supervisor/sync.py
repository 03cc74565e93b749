"""`rhythm sync`: wait until everything published so far has gone all the way through.

Hops, each waited for in turn, each "so far" captured when its hop starts:
1. the processors have consumed the events topic (stage 1);
2. they have consumed the internal updates topic (stage 2: every window the watermark has
   closed is emitted, with its alerts, and acknowledged by Kafka before the commit);
2b. with `history_group` (the default): the history lane has consumed its input
   (`rhythm backfill`'s and what the live lane routed to it in hop 1) and its updates topic;
3. with `notifier_group`: the notifier has routed every alert (its group is past the alerts
   topic's end, and it publishes the routing's delivery records before committing);
4. the sink has written its topics to ClickHouse (the deliveries among them).

With `watermark_at_least`, it first waits until the processors' watermark (read from their
/metrics) has reached that time: after a burst of events (a simulation, a backfill) the
windows up to its end close only once the watermark gets there, which for a quiet stream
takes the idle rule's few seconds.
"""

from __future__ import annotations

import time

from rhythm.runtime.kafka_settings import KafkaSettings
from rhythm.runtime.scrape import scrape_min
from rhythm.runtime.sink_sync import SyncReport, wait_for_sink
from rhythm.schemas.topics import (
    ALERTS_TOPIC,
    EVENTS_TOPIC,
    HISTORY_GROUP,
    HISTORY_TOPIC,
    HISTORY_UPDATES_TOPIC,
    PROCESSORS_GROUP,
    SINK_GROUP,
    SINK_TOPICS,
    UPDATES_TOPIC,
)


def wait_for_pipeline(
    kafka: KafkaSettings,
    timeout: float,
    *,
    events_topic: str = EVENTS_TOPIC,
    updates_topic: str = UPDATES_TOPIC,
    sink_topics: tuple[str, ...] = SINK_TOPICS,
    processor_group: str = PROCESSORS_GROUP,
    sink_group: str = SINK_GROUP,
    notifier_group: str | None = None,
    history_group: str | None = HISTORY_GROUP,
    history_topics: tuple[str, str] = (HISTORY_TOPIC, HISTORY_UPDATES_TOPIC),
    alerts_topic: str = ALERTS_TOPIC,
    watermark_at_least: float | None = None,
    metrics_port: int = 9465,
) -> SyncReport:
    started = time.monotonic()
    if watermark_at_least is not None:
        while True:
            mark = scrape_min(metrics_port, "rhythm_processor_stage2_watermark_seconds")
            if mark is not None and mark >= watermark_at_least:
                break
            if time.monotonic() - started > timeout:
                return SyncReport(False, [], time.monotonic() - started)
            time.sleep(0.2)
    hops: list[tuple[list[str], str]] = [
        ([events_topic], processor_group),
        ([updates_topic], processor_group),
        *(
            [([history_topics[0]], history_group), ([history_topics[1]], history_group)]
            if history_group
            else []
        ),
        *([([alerts_topic], notifier_group)] if notifier_group else []),
        (list(sink_topics), sink_group),
    ]
    report = SyncReport(True)
    for topics, group in hops:
        left = max(0.1, timeout - (time.monotonic() - started))
        report = wait_for_sink(kafka, topics, left, group_id=group)
        if not report:
            break
    report.elapsed_s = time.monotonic() - started
    return report
