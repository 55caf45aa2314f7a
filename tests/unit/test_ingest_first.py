"""When exports pause for a busy ingest: on a clock the test moves."""

from __future__ import annotations

import pytest

from receiver.ingest_first import IngestFirst


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_exports_go_while_ingest_is_calm() -> None:
    clock = Clock()
    first = IngestFirst(1.0, clock)
    assert [first.delay(False) for _ in range(3)] == [0.0, 0.0, 0.0]


def test_a_burst_shorter_than_the_pause_has_ingest_alone() -> None:
    clock = Clock()
    first = IngestFirst(1.0, clock)
    assert first.delay(True) == 1.0
    clock.now += 0.4
    assert first.delay(True) == pytest.approx(0.6)
    clock.now += 0.1
    assert first.delay(False) == 0.0, "calm again: exports go at once"
    assert first.delay(True) == 1.0, "a new burst pauses them afresh"


def test_sustained_load_alternates_pauses_and_runs_of_the_same_length() -> None:
    clock = Clock()
    first = IngestFirst(1.0, clock)
    waited = 0.0
    ran = 0.0
    for _ in range(400):  # 4 s of a busy ingest, looked at every 10 ms
        if first.delay(True) > 0:
            waited += 0.01
        else:
            ran += 0.01
        clock.now += 0.01
    assert 1.9 <= waited <= 2.1 and 1.9 <= ran <= 2.1


def test_after_a_full_pause_exports_run_although_ingest_stays_busy() -> None:
    clock = Clock()
    first = IngestFirst(1.0, clock)
    assert first.delay(True) == 1.0
    clock.now += 1.0
    assert first.delay(True) == 0.0
    clock.now += 0.99
    assert first.delay(True) == 0.0, "still its turn"
    clock.now += 0.02
    assert first.delay(True) == 1.0, "then ingest's again"


def test_an_overloaded_ingest_has_the_process_to_itself() -> None:
    clock = Clock()
    first = IngestFirst(1.0, clock)
    first.delay(True)
    clock.now += 1.0
    assert first.delay(True) == 0.0, "exports' turn"
    clock.now += 0.1
    assert first.delay(True, overloaded=True) == 1.0, "requests pile up: their turn ends"
    clock.now += 5.0
    assert first.delay(True, overloaded=True) == 1.0, "however long that lasts"
    clock.now += 0.1
    assert first.delay(True) == 0.0, "merely busy, after a pause that long: exports run"
