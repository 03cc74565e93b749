"""Saved entity state: every field of every window comes back as it was saved."""

from __future__ import annotations

import dataclasses

from rhythm.processors.codec import decode_entity, encode_entity
from rhythm.processors.signals.entity import EntityState, Window


def test_every_window_field_comes_back_in_its_place() -> None:
    # Distinct values per field: decoding fields into the wrong places cannot pass.
    fields = [f.name for f in dataclasses.fields(Window)]
    values: dict[str, object] = {name: 1000 + i for i, name in enumerate(fields)}
    values.update(weight_sum=2.5, weight_max=7.25, dirty=False)
    window = Window(**values)  # type: ignore[arg-type]
    other = Window(size_ms=86_400_000, start_ms=0, event_count=3, weight_max=1.0)
    state = EntityState(
        pending=[5, 3, 9],
        last_ms=42,
        windows={(window.size_ms, window.start_ms): window, (other.size_ms, 0): other},
    )
    restored, applied = decode_entity(encode_entity(state, {0: 3, 2: 11}))
    assert restored.windows == state.windows
    assert list(restored.windows) == list(state.windows)
    assert sorted(restored.pending) == [3, 5, 9] and restored.last_ms == 42
    assert applied == {0: 3, 2: 11}
