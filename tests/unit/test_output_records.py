"""The records the processors build and the models the sink validates them with agree."""

from __future__ import annotations

from rhythm.processors.signals.conversation import ReplyConfig
from rhythm.processors.signals.entity import SignalConfig
from rhythm.processors.stage2 import Stage2Partition
from rhythm.schemas.keys import EntityKey, signal_key
from rhythm.schemas.outputs import Alert, AlertRecord, Signal, SignalRecord

HOUR = 3_600_000


def test_the_typed_records_have_the_models_fields() -> None:
    assert set(SignalRecord.__annotations__) == set(Signal.model_fields)
    assert set(AlertRecord.__annotations__) == set(Alert.model_fields)


def test_stage2s_signals_validate_and_key_back_to_their_entity() -> None:
    proc = Stage2Partition(0, 1, SignalConfig(), ReplyConfig())
    key = EntityKey("acme", "actor", "user", "u\x1f1")  # ids may hold the separator
    proc.apply({"p": 0, "wm": HOUR, "u": [[key.encode(), HOUR + 5, 2.0, 0, 0]]})
    out = proc.apply({"p": 0, "wm": 30 * 24 * HOUR, "u": []})
    assert out.signals
    for record in out.signals:
        assert Signal.model_validate(record).entity_id == "u\x1f1"
        assert EntityKey.of(record) == key
        assert signal_key(record).startswith(key.encode())
