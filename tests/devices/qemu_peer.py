"""A real QEMU ppce500 to compare device models with, over qtest.

Differential device tests (MPIC, GUTS, GPIO, UART) run the same register accesses on
``qemu-system-ppc -M ppce500`` and on our models and compare what is read.  :class:`QemuPeer`
is that QEMU: started stopped (``-S``, so no guest code runs and nothing but the test touches
the devices), with the project's demo ELF as ``-kernel`` (ppce500 refuses to start without a
payload), spoken to through :class:`machine.debug.qtest.QtestClient`.

Addresses are QEMU's physical addresses: CCSR sits at :attr:`QemuPeer.CCSR` (0xF_E000_0000 on
QEMU, 0xE000_0000 on this machine), so a test adds the same CCSR offset to each side's base.

Two facts of QEMU under qtest that shape every differential test:

* **No current CPU.**  qtest accesses come from QEMU's main loop, where no CPU is current, so
  registers that depend on the accessing CPU (the MPIC's current-CPU window, GUTS PVR/SVR)
  cannot be compared this way: the MPIC reads 0xFFFFFFFF there, QEMU 7.2 crashes on GUTS PVR.
* **Time stands still.**  Under ``-S`` QEMU's virtual clock does not run.  qtest's
  ``clock_step``/``clock_set`` move it, but only with the qtest accelerator, which Debian's
  QEMU 7.2 build does not ship: there the commands answer ``FAIL Unknown command`` and
  :meth:`QemuPeer.clock_step` raises :class:`QtestError`.  Compare timers with a model clock
  that stands still too (check :attr:`QemuPeer.has_clock` first).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Sequence
from types import TracebackType
from typing import Final

from machine.boot.guest import DEMO_ELF
from machine.debug.qtest import QtestClient

QEMU: Final = "qemu-system-ppc"


class QtestError(RuntimeError):
    """QEMU answered a qtest command with something other than OK."""


def qemu_available() -> bool:
    """Whether ``qemu-system-ppc`` is on PATH (tests skip without it, outside CI)."""
    return shutil.which(QEMU) is not None


class QemuPeer:
    """``qemu-system-ppc -M ppce500 -smp N -S -qtest stdio``, as a context manager."""

    CCSR: int = 0xF_E000_0000

    def __init__(self, smp: int = 1, extra_args: Sequence[str] = ()) -> None:
        self.smp = smp
        self.extra_args = list(extra_args)
        self.argv = [
            QEMU, "-M", "ppce500", "-smp", str(smp), "-S", "-qtest", "stdio",
            "-display", "none", "-nodefaults", "-kernel", str(DEMO_ELF), *self.extra_args,
        ]
        self._client: QtestClient | None = None
        self._has_clock: bool | None = None
        self._start()

    # --- lifetime ----------------------------------------------------------------------

    def _start(self) -> None:
        self._client = QtestClient(self.argv)
        # The first answer proves QEMU is up (and fails loudly if it refused the options).
        self.readl(self.CCSR)

    def _stop(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        process = client.process
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        # QEMU does not exit when its qtest chardev closes: end it (it exits cleanly on TERM).
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def restart(self) -> None:
        """A fresh QEMU: every device in its reset state, the clock at 0."""
        self._stop()
        self._start()

    def close(self) -> None:
        self._stop()

    def __enter__(self) -> QemuPeer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- the protocol ------------------------------------------------------------------

    def command(self, line: str) -> str:
        """Send one qtest command; return the text after ``OK`` (raise on anything else)."""
        if self._client is None:
            raise QtestError("the QEMU peer is closed")
        answer = self._client.command(line)
        if answer != "OK" and not answer.startswith("OK "):
            raise QtestError(f"{line!r} -> {answer!r}")
        return answer[3:]

    def _read(self, word: str, addr: int) -> int:
        return int(self.command(f"{word} {addr:#x}"), 16)

    def _write(self, word: str, addr: int, value: int) -> None:
        self.command(f"{word} {addr:#x} {value:#x}")

    def readb(self, addr: int) -> int:
        return self._read("readb", addr)

    def readw(self, addr: int) -> int:
        return self._read("readw", addr)

    def readl(self, addr: int) -> int:
        return self._read("readl", addr)

    def readq(self, addr: int) -> int:
        return self._read("readq", addr)

    def writeb(self, addr: int, value: int) -> None:
        self._write("writeb", addr, value)

    def writew(self, addr: int, value: int) -> None:
        self._write("writew", addr, value)

    def writel(self, addr: int, value: int) -> None:
        self._write("writel", addr, value)

    def writeq(self, addr: int, value: int) -> None:
        self._write("writeq", addr, value)

    def set_irq_in(self, path: str, n: int, level: bool, name: str = "unnamed-gpio-in") -> None:
        """Drive input ``n`` of device ``path`` (e.g. ``/machine/pic``, an MPIC source)."""
        self.command(f"set_irq_in {path} {name} {n} {int(level)}")

    # --- time --------------------------------------------------------------------------

    @property
    def has_clock(self) -> bool:
        """Whether this QEMU has ``clock_step``/``clock_set`` (the qtest accelerator)."""
        if self._has_clock is None:
            try:
                self.command("clock_step 0")
                self._has_clock = True
            except QtestError:
                self._has_clock = False
        return self._has_clock

    def clock_step(self, ns: int | None = None) -> int:
        """Advance the virtual clock by ``ns`` (to the next timer deadline if None), running
        the timers that expire; return the new clock in ns."""
        return int(self.command("clock_step" if ns is None else f"clock_step {ns}"))

    def clock_set(self, ns: int) -> int:
        """Move the virtual clock to ``ns``; return it."""
        return int(self.command(f"clock_set {ns}"))


__all__ = ["QEMU", "QemuPeer", "QtestError", "qemu_available"]
