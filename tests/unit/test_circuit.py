# SPDX-License-Identifier: Apache-2.0
from dataclasses import dataclass

import pytest

from lbtui.control.circuit import HALF_OPEN_FACTOR, CircuitBreaker, Transition
from lbtui.model import Circuit


@dataclass(frozen=True)
class Cfg:
    error_rate: float = 0.5
    min_requests: int = 20
    window_s: int = 10
    open_s: int = 30
    half_open_successes: int = 3


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def make(**kw) -> tuple[CircuitBreaker, FakeClock]:
    clock = FakeClock()
    return CircuitBreaker(Cfg(**kw), clock=clock), clock


def open_it(breaker: CircuitBreaker) -> None:
    [t] = breaker.record(5, 20)
    assert t.new is Circuit.OPEN


def test_starts_closed():
    breaker, _ = make()
    assert breaker.state is Circuit.CLOSED
    assert breaker.factor == 1.0


def test_opens_on_error_rate_with_reason_numbers():
    breaker, clock = make()
    reason = "error rate 0.80 over 25 requests in 10s"
    assert breaker.record(5, 20) == [Transition(clock.t, Circuit.CLOSED, Circuit.OPEN, reason)]
    assert breaker.state is Circuit.OPEN
    assert breaker.factor == 0.0


def test_needs_min_requests():
    breaker, _ = make()
    assert breaker.record(0, 19) == []
    assert breaker.state is Circuit.CLOSED
    [t] = breaker.record(0, 1)
    assert t.new is Circuit.OPEN
    assert "over 20 requests" in t.reason


def test_error_rate_threshold_is_inclusive():
    breaker, _ = make()
    assert breaker.record(11, 9) == []  # 0.45
    breaker.reset()
    [t] = breaker.record(10, 10)  # exactly 0.50
    assert t.new is Circuit.OPEN


def test_window_accumulates_across_calls():
    breaker, clock = make()
    for _ in range(3):
        assert breaker.record(1, 4) == []  # 5, 10, 15 requests: below min_requests
        clock.advance(1)
    [t] = breaker.record(1, 4)
    assert t.new is Circuit.OPEN
    assert "over 20 requests" in t.reason


def test_sliding_window_expires_old_failures():
    breaker, clock = make()
    assert breaker.record(0, 15) == []  # bad second, but below min_requests
    clock.advance(10)  # that bucket has left the 10 s window
    assert breaker.window_totals() == (0, 0)
    assert breaker.record(10, 5) == []  # 5/15 within the window: stays closed
    assert breaker.state is Circuit.CLOSED


def test_sliding_window_keeps_recent_failures():
    breaker, clock = make()
    assert breaker.record(0, 15) == []
    clock.advance(9)  # still inside the 10 s window
    [t] = breaker.record(5, 0)
    assert t.new is Circuit.OPEN
    assert "0.75 over 20" in t.reason


def test_open_ignores_counts_and_half_opens_after_open_s():
    breaker, clock = make()
    open_it(breaker)
    assert breaker.record(100, 0) == []
    clock.advance(29.9)
    assert breaker.tick() == []
    clock.advance(0.1)
    [t] = breaker.tick()
    assert (t.old, t.new) == (Circuit.OPEN, Circuit.HALF_OPEN)
    assert "30s" in t.reason
    assert breaker.factor == HALF_OPEN_FACTOR
    assert breaker.tick() == []


def test_half_open_closes_after_successes():
    breaker, clock = make()
    open_it(breaker)
    clock.advance(30)
    breaker.tick()
    assert breaker.record(2, 0) == []
    [t] = breaker.record(1, 0)
    assert (t.old, t.new) == (Circuit.HALF_OPEN, Circuit.CLOSED)
    assert "3 successes" in t.reason
    # The window starts empty again: old failures do not reopen it.
    assert breaker.window_totals() == (0, 0)
    assert breaker.record(19, 0) == []


def test_half_open_reopens_on_any_failure():
    breaker, clock = make()
    open_it(breaker)
    clock.advance(30)
    breaker.tick()
    [t] = breaker.record(2, 1)
    assert (t.old, t.new) == (Circuit.HALF_OPEN, Circuit.OPEN)
    # The open period starts again from this failure.
    clock.advance(29)
    assert breaker.tick() == []
    clock.advance(1)
    assert breaker.tick()[0].new is Circuit.HALF_OPEN


def test_half_open_successes_count_restarts_each_time():
    breaker, clock = make()
    open_it(breaker)
    clock.advance(30)
    breaker.tick()
    breaker.record(2, 0)
    breaker.record(0, 1)  # back to open
    clock.advance(30)
    breaker.tick()
    assert breaker.record(2, 0) == []
    assert breaker.record(1, 0)[0].new is Circuit.CLOSED


def test_force_open_holds_until_reset():
    breaker, clock = make()
    [t] = breaker.force_open()
    assert (t.old, t.new) == (Circuit.CLOSED, Circuit.OPEN)
    assert breaker.forced
    clock.advance(1000)
    assert breaker.tick() == []
    assert breaker.state is Circuit.OPEN
    [t] = breaker.reset()
    assert (t.old, t.new) == (Circuit.OPEN, Circuit.CLOSED)
    assert not breaker.forced


def test_force_open_from_half_open_and_when_already_open():
    breaker, clock = make()
    open_it(breaker)
    assert breaker.force_open() == []  # already open; now held
    clock.advance(100)
    assert breaker.tick() == []

    breaker2, clock2 = make()
    open_it(breaker2)
    clock2.advance(30)
    breaker2.tick()
    [t] = breaker2.force_open()
    assert (t.old, t.new) == (Circuit.HALF_OPEN, Circuit.OPEN)


def test_force_close_clears_window():
    breaker, _ = make()
    open_it(breaker)
    [t] = breaker.force_close()
    assert (t.old, t.new) == (Circuit.OPEN, Circuit.CLOSED)
    assert "forced closed" in t.reason
    assert breaker.record(0, 10) == []  # earlier failures are gone


def test_reset_when_closed_clears_window_without_transition():
    breaker, _ = make()
    breaker.record(0, 15)
    assert breaker.reset() == []
    assert breaker.window_totals() == (0, 0)
    assert breaker.record(5, 5) == []


def test_transition_timestamp_is_clock():
    breaker, clock = make()
    clock.t = 4242.5
    assert breaker.force_open()[0].ts == 4242.5


def test_negative_counts_rejected():
    breaker, _ = make()
    with pytest.raises(ValueError):
        breaker.record(-1, 0)
