"""What defines a machine (:class:`MachineConfig`) and the checks it must pass before any
guest code runs.  Its own module so that the loaders, the trace writer and the board can all
read it without importing each other."""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fwcfg import ConfigError, FwCfgOption
from machine.platform import (
    DEFAULT_RAM_SIZE,
    MAX_CPUS,
    MAX_RAM_SIZE,
    MIN_CPUS,
    MIN_RAM_SIZE,
    RAM_ALIGN,
)


@dataclass(frozen=True)
class MachineConfig:
    """Everything that defines a machine; validated by :class:`E500Machine`."""

    ram_size: int = DEFAULT_RAM_SIZE
    smp: int = 1
    kernel: Path | None = None
    initrd: Path | None = None
    append: str = ""
    dtb: Path | None = None
    bios: Path | None = None  # None: the bundled firmware
    fw_cfg: Sequence[FwCfgOption] = ()
    direct: bool = False
    #: QEMU's -no-reboot: a guest's reset (FW_RESET, RSTCR, the watchdog) stops the machine
    #: with exit status 0 instead of restarting it.
    no_reboot: bool = False
    uuid: str | None = None
    fwcfg_dma: bool = True
    # --- public API (issue 5) ---
    #: Write the boot timeline here as Chrome trace-event JSON (Perfetto, chrome://tracing).
    trace_file: Path | None = None
    #: Keep every event from power-on (``m.events.history``; streams and ``wait_for`` see
    #: events that happened before they were called).
    record_events: bool = False


def check_config(c: MachineConfig) -> None:
    """Raise :class:`fwcfg.ConfigError` with an actionable message for a bad config."""
    if not MIN_CPUS <= c.smp <= MAX_CPUS:
        raise ConfigError(f"-smp {c.smp}: the machine has {MIN_CPUS} to {MAX_CPUS} CPUs")
    if c.ram_size % RAM_ALIGN or not MIN_RAM_SIZE <= c.ram_size <= MAX_RAM_SIZE:
        raise ConfigError(
            f"-m {c.ram_size // (1 << 20)}M ({c.ram_size:#x} bytes): RAM must be a multiple of "
            f"4 KiB between {MIN_RAM_SIZE >> 20} MiB and {MAX_RAM_SIZE >> 20} MiB"
        )
    if c.direct and c.kernel is None:
        raise ConfigError("--direct needs -kernel: there is no firmware to load one")
    if c.uuid is not None:
        try:
            uuidlib.UUID(c.uuid)
        except ValueError:
            raise ConfigError(f"-uuid {c.uuid!r} is not a UUID") from None
