"""Stateful property tests: long random guest sessions against the spec's model.

Hypothesis plays a guest that selects, reads the data register, scribbles on RAM, builds DMA
descriptors with every edge value (the last bytes of RAM, straddling its end, wrapping at 2^64,
lengths 0 and 2^32-1, keys outside the entry space, every combination of control bits) and
starts them as one 64-bit store, two halves, or a lone low half.  After every step the device
must agree with :class:`~test_fuzz_model.Model` on everything observable and no byte may have
landed outside guest RAM (:meth:`~test_fuzz_model.Harness.check`).

``FUZZ_EXAMPLES`` (environment) raises the number of sessions; ``bench/bench_fuzz.py`` uses it.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from test_fuzz_model import (
    EDGE_KEYS,
    EDGE_LENGTHS,
    EDGE_OPS,
    SELECT,
    U32,
    U64,
    Harness,
    Layout,
    MemoryKind,
    edge_addresses,
)

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))
STEPS = int(os.environ.get("FUZZ_STEPS", "40"))

keys = st.one_of(st.sampled_from(EDGE_KEYS), st.integers(0, 0xFFFF))
lengths = st.one_of(st.sampled_from(EDGE_LENGTHS), st.integers(0, 64), st.integers(0, U32))
ops = st.one_of(st.sampled_from(EDGE_OPS), st.integers(0, 0xFFFF))
hows = st.sampled_from(["wide", "halves", "low"])


class FwCfgSession(RuleBasedStateMachine):
    """One guest session on a fresh device (subclasses pick the memory and the layout)."""

    kind: MemoryKind = "bytearray"
    layout: Layout = "mmio"
    base = 0x10000

    def __init__(self) -> None:
        super().__init__()
        self.h = Harness(self.kind, self.layout, base=self.base)
        self.edges = edge_addresses(self.h.base, self.h.end)

    def teardown(self) -> None:
        self.h.close()

    def _address(self, data: st.DataObject, label: str) -> int:
        return data.draw(st.one_of(
            st.sampled_from(self.edges),
            st.integers(self.h.base, self.h.end - 1),
            st.integers(0, U64),
        ), label=label)

    @rule(key=keys)
    def select(self, key: int) -> None:
        self.h.select(key)

    @rule(size=st.sampled_from([1, 2, 4, 8]), times=st.integers(1, 40))
    def read_data(self, size: int, times: int) -> None:
        for _ in range(times):
            self.h.read(0x1 if self.layout == "ioport" else 0x0,
                        1 if self.layout == "ioport" else size)

    @rule(offset=st.integers(-4, 0x1C), size=st.sampled_from([1, 2, 3, 4, 8, 16]),
          value=st.integers(0, U64), write=st.booleans())
    def any_access(self, offset: int, size: int, value: int, write: bool) -> None:
        """Any shape at any offset: accepted ones act, the rest read 0 and do nothing."""
        if write:
            self.h.write(offset, size, value)
        else:
            self.h.read(offset, size)

    @rule(data=st.data(), raw=st.binary(min_size=1, max_size=48))
    def guest_store(self, data: st.DataObject, raw: bytes) -> None:
        self.h.guest_store(self._address(data, "store at"), raw)

    @rule(data=st.data(), key=keys, op=ops, select=st.booleans(), length=lengths, how=hows)
    def dma(self, data: st.DataObject, key: int, op: int, select: bool, length: int,
            how: str) -> None:
        desc = self._address(data, "descriptor at")
        address = self._address(data, "buffer at")
        control = (key << 16) | (op & 0xFFFF & ~SELECT) | (SELECT if select else 0)
        self.h.put_descriptor(desc, control, length, address)
        self.h.dma(desc, how)

    @rule(data=st.data(), how=hows)
    def dma_of_whatever_is_there(self, data: st.DataObject, how: str) -> None:
        """Start a transfer on bytes the guest never arranged as a descriptor."""
        self.h.dma(self._address(data, "descriptor at"), how)

    @precondition(lambda self: self.h.steps > 0)
    @rule()
    def reset(self) -> None:
        self.h.reset()

    @invariant()
    def device_matches_the_spec(self) -> None:
        self.h.check()


class GuestRamSession(FwCfgSession):
    """The machine's own RAM implementation, based at 0 so a wrapped address would hit RAM."""

    kind = "guestram"
    base = 0


class IoPortSession(FwCfgSession):
    """QEMU's x86 port layout over the machine's RAM."""

    kind = "guestram"
    layout = "ioport"
    base = 0


_settings = settings(max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

TestBytearraySession = FwCfgSession.TestCase
TestBytearraySession.settings = _settings
TestGuestRamSession = GuestRamSession.TestCase
TestGuestRamSession.settings = _settings
TestIoPortSession = IoPortSession.TestCase
TestIoPortSession.settings = _settings
