"""The report's heads-ups and feedback section: its queries on the embedded store, the merge
of their rows, and the section in the text and HTML reports."""

from __future__ import annotations

from clickhouse_connect.driver.client import Client
from rich.console import Console

from rhythm.notifier.feedback import feedback_from_cli
from rhythm.schemas.people import DeliveryRecord
from rhythm.sinks.store import Store
from rhythm.sinks.tables import ALERTS, FEEDBACK, NOTIFICATIONS
from rhythm.sinks.tables.alerts import process as transform_alert
from rhythm.sinks.tables.feedback import process as transform_feedback
from rhythm.sinks.tables.notifications import process as transform_notification
from rhythm.sinks.tables.rows import Message
from rhythm.stack.report.feedback import FeedbackLine, feedback_from_rows
from rhythm.stack.report.page import render_html
from rhythm.stack.report.sql import render
from rhythm.stack.report.text import render_text

from .test_notifier import alert
from .test_report import sample_report, store  # noqa: F401 (the store fixture)


def _row(transform: object, value: bytes, n: int) -> tuple[object, ...]:
    row = transform(Message("t", 0, n, 1_767_000_000_000, None, value))  # type: ignore[operator]
    assert isinstance(row, tuple)
    return row


def test_told_and_said_per_alert_kind_and_kind_of_entity(store: Client) -> None:  # noqa: F811
    alerts = [alert(alert_id=f"a{i}", entity_id=f"c-{i}") for i in range(4)]
    alerts.append(alert(alert_id="s1", kind="silence", role="target", entity_type="account"))
    delivered = [
        DeliveryRecord(
            key=f"k{i}-{r}", alert_id=a.alert_id, tenant="acme", kind=a.kind, recipient=r,
            channel="webhook", address="x", reason="owner", state="sent", attempts=1,
            created_at=1, due_at=1, updated_at=2, sent_at=2, version=3,
        )
        for i, a in enumerate(alerts)
        for r in ("user:u-1", "user:u-2")
    ]  # fmt: skip
    said = [
        feedback_from_cli("acme", "a0", "user:u-1", "not_useful", 5, None, alerts[0].model_dump()),
        feedback_from_cli("acme", "a1", "user:u-1", "not_useful", 6, None, alerts[1].model_dump()),
        feedback_from_cli("acme", "a2", "user:u-2", "done", 7, None, alerts[2].model_dump()),
        feedback_from_cli("acme", "s1", "user:u-1", "snooze", 8, 99, alerts[4].model_dump()),
    ]
    writer = Store(store, "rhythm")
    writer.insert(
        ALERTS,
        [_row(transform_alert, a.model_dump_json().encode(), n) for n, a in enumerate(alerts)],
        "a",
    )
    writer.insert(
        NOTIFICATIONS,
        [
            _row(transform_notification, d.model_dump_json().encode(), n)
            for n, d in enumerate(delivered)
        ],
        "n",
    )
    # The same feedback twice (a link used twice reaches the store once).
    rows = [_row(transform_feedback, f.model_dump_json().encode(), n) for n, f in enumerate(said)]
    writer.insert(FEEDBACK, [*rows, rows[0]], "f")
    params = {"tenant": ""}
    told = store.query(render("heads_ups_told"), parameters=params).named_results()
    given = store.query(render("feedback_given"), parameters=params).named_results()
    lines = feedback_from_rows(told, given)
    assert lines == (
        FeedbackLine("unanswered", "actor:contact", told=8, done=1, not_useful=2),
        FeedbackLine("silence", "target:account", told=2, snoozed=1),
    )
    assert lines[0].not_useful_rate == 0.25


def test_the_section_is_in_the_text_and_html_reports() -> None:
    lines = (FeedbackLine("unanswered", "actor:contact", 8, 1, 0, 2),)
    console = Console(record=True, width=200)
    render_text(sample_report(feedback=lines), console)
    text = console.export_text()
    assert "Heads-ups told and what recipients said of them" in text and "25.0 %" in text
    html = render_html(sample_report(feedback=lines), charts=False)
    assert "<td>actor:contact</td>" in html and "25.0 %" in html
    console = Console(record=True, width=200)
    render_text(sample_report(), console)
    assert "Heads-ups told" in console.export_text()  # shown empty too: "none"
