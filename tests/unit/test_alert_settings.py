"""The alert rules' settings: per-tenant policy from the environment, bad ones refused at start."""

from __future__ import annotations

from datetime import date

import pytest
from pydantic import ValidationError

from rhythm.processors.settings import ProcessorSettings
from rhythm.processors.signals.calendar import OFF


def test_tenants_override_the_global_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "RHYTHM_PROCESSOR_TENANTS",
        '{"tokyo": {"timezone": "Asia/Tokyo", "working_days": [0, 1, 2, 3, 4, 5],'
        ' "holidays": ["2026-11-03"], "internal_types": ["staff"], "queue": "team:jp"}}',
    )
    monkeypatch.setenv("RHYTHM_PROCESSOR_SILENCE_FOR", '["actor:staff", "*:account"]')
    policy = ProcessorSettings().alert_policy()
    assert policy.side("tokyo", "staff") == "ours" and policy.side("tokyo", "user") is None
    assert policy.side("other", "user") == "ours" and policy.side("other", "contact") == "theirs"
    assert policy.queue("tokyo") == "team:jp" and policy.queue("other") == "queue:default"
    cal = policy.tenant("tokyo").calendar
    assert cal.tz == "Asia/Tokyo" and 5 in cal.working_days
    assert date(2026, 11, 3) in cal.holidays
    assert cal.category(1_793_674_800_000) == OFF  # 2026-11-03 12:00 in Tokyo
    assert policy.silence_rule("tokyo", "actor", "staff") is not None
    assert policy.silence_rule("tokyo", "target", "account") is not None
    assert policy.silence_rule("tokyo", "actor", "document") is None
    assert policy.silence_rule("tokyo", "tag", "account") is None


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("TIMEZONE", "Mars/Olympus", "unknown time zone"),
        ("WORKING_DAYS", "[]", "at least one working day"),
        ("WORKING_DAYS", "[1, 7]", "working days are 0"),
        ("WORKING_HOURS", "[18, 9]", "working hours"),
        ("EXTERNAL_TYPES", '["user"]', "both internal and external"),
        ("SILENCE_FOR", '["person"]', "role:entity_type"),
        ("SILENCE_FOR", '["boss:user"]', "role:entity_type"),
        ("REPLY_QUANTILE", "1.0", "less than 1"),
        ("REPLY_MARGIN", "0.5", "greater than or equal to 1"),
        ("SILENCE_FALSE_ALARMS_PER_QUARTER", "0", "greater than 0"),
        ("TENANTS", '{"acme": {"timezone": "Nowhere/Land"}}', "unknown time zone"),
        ("TENANTS", '{"acme": {"working_hour": [8, 17]}}', "Extra inputs"),
    ],
)
def test_a_bad_policy_is_a_clear_error_at_start(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(f"RHYTHM_PROCESSOR_{name}", value)
    with pytest.raises(ValidationError, match=message):
        ProcessorSettings()
