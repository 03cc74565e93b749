"""A fatal consumer error ends the sink's loop instead of being logged and ignored (found by
the fault suite: after a broker restart a static member was fenced, and the sink stayed up
reading nothing)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError

from rhythm.sinks.consumer import ConsumerLoop, FatalConsumerError


class ErrorMessage:
    def __init__(self, error: KafkaError) -> None:
        self._error = error

    def error(self) -> KafkaError:
        return self._error


def handle(error: KafkaError) -> Any:
    state = SimpleNamespace(_logged={})
    return ConsumerLoop._handle(state, ErrorMessage(error), 0.0, set())  # type: ignore[arg-type]


def test_a_fatal_error_stops_the_loop() -> None:
    fenced = KafkaError(KafkaError._FATAL, "Static consumer fenced by other consumer", fatal=True)
    with pytest.raises(FatalConsumerError, match="fenced"):
        handle(fenced)


def test_other_errors_are_logged_and_the_loop_goes_on() -> None:
    assert handle(KafkaError(KafkaError._TRANSPORT, "broker down")) is None
    assert handle(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, "not yet")) is None
