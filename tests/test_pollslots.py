"""Who may poll in FW_WAIT_STORE (machine/pollwait.PollSlots): one CPU per spare host core."""

from __future__ import annotations

import gc
import time

import pytest

from machine import pollwait
from machine.pollwait import POLL_BUDGET_NS, PollSlots


class FakeCpu:
    def __init__(self) -> None:
        self.polling = False


def test_a_slot_is_free_again_when_its_poll_ends() -> None:
    slots, a, b = PollSlots(1), FakeCpu(), FakeCpu()
    assert slots.claim(a)
    a.polling = True
    assert not slots.claim(b)  # a polls on the only slot
    assert slots.claim(a)  # a CPU making a hypercall is not polling: its own slot is free
    a.polling = False  # its poll saw the word change
    assert slots.claim(b)


def test_a_slot_is_free_again_when_its_budget_is_over(monkeypatch: pytest.MonkeyPatch) -> None:
    slots, a, b = PollSlots(1), FakeCpu(), FakeCpu()
    assert slots.claim(a)
    a.polling = True  # stopped mid-poll, say: it never clears the flag
    later = time.monotonic_ns() + POLL_BUDGET_NS + 1
    monkeypatch.setattr(pollwait.time, "monotonic_ns", lambda: later)
    assert slots.claim(b)


def test_no_spare_core_means_no_polling() -> None:
    assert not PollSlots(0).claim(FakeCpu())


def test_a_slot_does_not_keep_a_closed_cpu_alive() -> None:
    slots = PollSlots(1)
    a = FakeCpu()
    a.polling = True
    assert slots.claim(a)
    del a
    gc.collect()
    assert slots.claim(FakeCpu())


def test_the_rounds_follow_the_budget_by_at_most_a_factor_of_two() -> None:
    slots = PollSlots(1)
    slots.rounds = 10_000
    slots.ran_out(POLL_BUDGET_NS // 10)  # ran out ten times too soon: double, not ten times
    assert slots.rounds == 20_000
    slots.ran_out(POLL_BUDGET_NS * 4 // 3)
    assert slots.rounds == 15_000
