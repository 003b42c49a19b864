"""Addresses and contents shared by the fw_cfg scenarios (imported by conftest and tests)."""

from __future__ import annotations

RAM_BASE = 0x1000
RAM_SIZE = 0x10000
RAM_END = RAM_BASE + RAM_SIZE
#: Where scenarios put DMA descriptors and buffers.
DESC = RAM_BASE + 0x100
BUF = RAM_BASE + 0x1000

KERNEL = bytes(range(256)) * 3 + b"tail"
