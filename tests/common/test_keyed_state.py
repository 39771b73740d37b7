"""KeyedState without a broker: a put, a change after it and a delete become the changelog records a restore
reads back to the same state; a value remembered from its own compacted topic owes no record."""

from __future__ import annotations

from aiokafka import ConsumerRecord

from harness.records import consumer_record
from services.common.consumer import KeyedState


def as_records(changes: list[tuple[int, str, bytes | None]]) -> list[ConsumerRecord]:
    return [consumer_record("log", p, i, key.encode(), value) for i, (p, key, value) in enumerate(changes)]


def test_changes_are_the_last_value_per_key_and_a_restore_reads_them_back():
    state: KeyedState[dict] = KeyedState("log")
    state.put(1, "a", {"n": 1})
    state.put(1, "a", {"n": 2})
    state.put(1, "b", {"n": 1})
    state.put(2, "c", {"n": 1})
    state.delete(1, "b")
    state.delete(1, "never-there")
    changes = state.changes()
    assert sorted(changes) == [(1, "a", b'{"n":2}'), (1, "b", None), (2, "c", b'{"n":1}')]
    assert state.changes() == []  # owed once

    again: KeyedState[dict] = KeyedState("log")
    again.load(1, as_records([c for c in changes if c[0] == 1]))
    again.load(2, as_records([c for c in changes if c[0] == 2]))
    assert again.partitions == state.partitions == {1: {"a": {"n": 2}}, 2: {"c": {"n": 1}}}
    assert len(again) == 2


def test_remembered_values_owe_nothing_and_a_dropped_partition_owes_nothing_more():
    state: KeyedState[str] = KeyedState("contacts")
    state.remember(0, "c1", "x")
    state.remember(0, "c2", "y")
    state.remember(0, "c2", None)
    assert state.of(0) == {"c1": "x"} and state.changes() == []
    state.put(3, "k", "v")
    state.drop([3])
    assert state.changes() == [] and state.of(3) == {}
