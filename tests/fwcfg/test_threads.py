"""Several vCPUs at once: every register access is atomic, DMA transfers never interleave."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator

import pytest

from fwcfg import BytearrayMemory, DmaAccess, DmaControl, FwCfg

THREADS = 8
ROUNDS = 200


@pytest.fixture(autouse=True)
def eager_thread_switches() -> Iterator[None]:
    """Switch threads as often as the interpreter can, so that races show up quickly."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def test_concurrent_dma_transfers_each_get_their_own_file() -> None:
    ram = BytearrayMemory(THREADS * 0x2000)
    dev = FwCfg(ram)
    contents = {f"opt/cpu{i}": os.urandom(1000 + i) for i in range(THREADS)}
    for name, data in contents.items():
        dev.add_file(name, data)
    keys = {name: dev.key_of(name) for name in contents}
    failures: list[str] = []

    def vcpu(i: int) -> None:
        name = f"opt/cpu{i}"
        desc, buf = i * 0x2000, i * 0x2000 + 0x100
        for _ in range(ROUNDS):
            ram.write(desc, DmaAccess.build({
                "control": DmaControl.SELECT | DmaControl.READ | (keys[name] << 16),
                "length": len(contents[name]), "address": buf}))
            dev.dma(desc)
            got, status = ram.read(buf, len(contents[name])), ram.read(desc, 4)
            if got != contents[name] or status != bytes(4):
                failures.append(name)

    threads = [threading.Thread(target=vcpu, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert dev.statistics().dma_transfers == THREADS * ROUNDS


def test_concurrent_data_reads_never_tear_or_lose_bytes() -> None:
    dev = FwCfg(BytearrayMemory(4096))
    words = b"".join(i.to_bytes(8, "big") for i in range(THREADS * ROUNDS))
    key = dev.add_file("opt/words", words)
    dev.select(key)
    seen: list[bytes] = []
    lock = threading.Lock()

    def vcpu() -> None:
        mine = [dev.read_data(8) for _ in range(ROUNDS)]
        with lock:
            seen.extend(mine)

    threads = [threading.Thread(target=vcpu) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Each 8-byte read took one whole word: together they are every word exactly once.
    assert sorted(seen) == [words[i : i + 8] for i in range(0, len(words), 8)]
