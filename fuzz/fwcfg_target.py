"""Coverage-guided fuzz target (atheris) over the fw_cfg register and DMA interface.

Each input is a little program for a guest: a header byte picks the memory (the test
``BytearrayMemory`` or the machine's ``GuestRAM``, based at 0 or not) and the register layout
(wide MMIO or the x86 ports); the rest is a sequence of operations — select, data reads, any
access shape at any offset, guest stores, DMA descriptors built from edge values or raw bytes and
started in the three ways a guest can start them.  After every operation the device is compared
with the spec's model (``tests/fwcfg/test_fuzz_model.py``): any host exception, any difference,
any byte outside guest RAM is a crash.

Usage::

    python fuzz/fwcfg_target.py -max_total_time=60 [corpus_dir]   # libFuzzer flags
    python fuzz/fwcfg_target.py -runs=5000

``one_input(data)`` runs one input without atheris (the bench and tests replay with it).
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["fwcfg"]):
    import fwcfg  # noqa: F401  (instrumented before anything else imports it)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fwcfg"))

from test_fuzz_model import (
    EDGE_KEYS,
    EDGE_LENGTHS,
    EDGE_OPS,
    Harness,
    Layout,
    MemoryKind,
    edge_addresses,
)

#: Operations per input at most: long enough for select-read-DMA chains, short enough to be fast.
MAX_OPS = 64


class Reader:
    """Consumes an input from the front; reads past its end return zeros (inputs may be short)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def more(self) -> bool:
        return self.pos < len(self.data)

    def take(self, n: int) -> int:
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return int.from_bytes(chunk.ljust(n, b"\0"), "big")

    def pick(self, options: list[int]) -> int:
        return options[self.take(1) % len(options)]

    def raw(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk


def _address(r: Reader, h: Harness, edges: list[int]) -> int:
    mode = r.take(1) % 4
    if mode == 0:
        return r.pick(edges)
    if mode == 1:
        return h.base + r.take(2) % (h.end - h.base)
    if mode == 2:
        return r.pick(edges) + r.take(1) - 128
    return r.take(8)


def one_input(data: bytes) -> None:
    r = Reader(data)
    header = r.take(1)
    kind: MemoryKind = "guestram" if header & 1 else "bytearray"
    layout: Layout = "ioport" if header & 2 else "mmio"
    base = 0 if header & 4 and kind == "guestram" else 0x10000
    h = Harness(kind, layout, base=base)
    edges = edge_addresses(h.base, h.end)
    data_reg = 0x1 if layout == "ioport" else 0x0
    try:
        for _ in range(MAX_OPS):
            if not r.more():
                break
            op = r.take(1) % 8
            if op == 0:
                h.select(r.pick(EDGE_KEYS) if r.take(1) & 1 else r.take(2))
            elif op == 1:
                size = 1 if layout == "ioport" else r.pick([1, 2, 4, 8])
                for _ in range(1 + r.take(1) % 32):
                    h.read(data_reg, size)
            elif op == 2:
                offset, size = r.take(1) % 0x20 - 4, r.pick([1, 2, 3, 4, 8, 16])
                if r.take(1) & 1:
                    h.write(offset, size, r.take(8))
                else:
                    h.read(offset, size)
            elif op == 3:
                h.guest_store(_address(r, h, edges), r.raw(1 + r.take(1) % 32))
            elif op in (4, 5):
                desc = _address(r, h, edges)
                control = (r.pick(EDGE_KEYS) << 16) | r.pick(EDGE_OPS) | (r.take(1) & 0x08)
                length = r.pick(EDGE_LENGTHS) if r.take(1) & 1 else r.take(4)
                h.put_descriptor(desc, control, length, _address(r, h, edges))
                h.dma(desc, ["wide", "halves", "low"][r.take(1) % 3])
            elif op == 6:
                desc = _address(r, h, edges)
                h.guest_store(desc, struct.pack(">IIQ", r.take(4), r.take(4), r.take(8)))
                h.dma(desc, ["wide", "halves", "low"][r.take(1) % 3])
            else:
                h.reset()
            h.check()
    finally:
        h.close()


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
