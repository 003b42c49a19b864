"""GDB remote serial protocol framing, sans I/O: bytes in, packets out; payloads in, bytes out.

The wire format (GDB manual, "Overview" of the remote protocol): a packet is
``$payload#cc`` where ``cc`` is the modulo-256 sum of the payload bytes in two hex digits.
Inside a payload, ``}`` escapes the next byte (XOR 0x20); ``$``, ``#``, ``}`` and ``*`` must be
escaped in binary data (``X`` packets, ``qXfer`` replies).  Outside packets, ``+``/``-``
acknowledge, and a lone 0x03 byte is an interrupt request (Ctrl-C).  ``*`` introduces run-length
encoding, which only the stub may send; we never do, and gdb never sends it.

:class:`PacketReader` is fed whatever the socket delivered and yields :class:`Packet`,
:class:`Interrupt`, :class:`Ack` and :class:`BadPacket` values; it never raises on garbage, so
a confused or hostile client cannot take the machine down with bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

#: The longest packet we accept (payload bytes); announced as PacketSize in qSupported.
MAX_PACKET: Final = 0x4000
_INTERRUPT: Final = 0x03
_ESCAPE: Final = 0x7D  # '}'
_MUST_ESCAPE: Final = frozenset(b"$#}*")


@dataclass(frozen=True, slots=True)
class Packet:
    """One well-formed packet; ``payload`` is still escaped (only binary fields use escapes)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Interrupt:
    """The client sent 0x03 outside a packet: stop the running target."""


@dataclass(frozen=True, slots=True)
class Ack:
    """``+`` (``ok``) or ``-`` (resend your last packet)."""

    ok: bool


@dataclass(frozen=True, slots=True)
class BadPacket:
    """A packet whose checksum did not match, or that was too long; answer with ``-``."""

    reason: str


Item = Packet | Interrupt | Ack | BadPacket


def checksum(payload: bytes | bytearray) -> int:
    return sum(payload) & 0xFF


def frame(payload: bytes) -> bytes:
    """``$payload#cc``.  The payload must already be escaped where it carries binary data."""
    return b"$" + payload + b"#" + b"%02x" % checksum(payload)


def escape(data: bytes) -> bytes:
    """Escape binary data for a payload (``qXfer`` replies)."""
    out = bytearray()
    for b in data:
        if b in _MUST_ESCAPE:
            out += bytes((_ESCAPE, b ^ 0x20))
        else:
            out.append(b)
    return bytes(out)


def unescape(data: bytes) -> bytes:
    """Undo :func:`escape` (``X`` packet data).  A trailing lone ``}`` is dropped."""
    out = bytearray()
    it = iter(data)
    for b in it:
        if b == _ESCAPE:
            nxt = next(it, None)
            if nxt is None:
                break
            out.append(nxt ^ 0x20)
        else:
            out.append(b)
    return bytes(out)


class PacketReader:
    """Turns a byte stream from gdb into protocol items.

    States: between packets (acks, interrupts and noise are recognised, anything else is
    skipped, as gdb itself does), inside a payload, or reading the two checksum digits.
    """

    def __init__(self, max_packet: int = MAX_PACKET) -> None:
        self._max = max_packet
        self._buf = bytearray()
        self._state = "idle"  # "idle" | "payload" | "checksum"
        self._sum = bytearray()
        self._too_long = False

    def feed(self, data: bytes) -> list[Item]:
        items: list[Item] = []
        for b in data:
            item = self._byte(b)
            if item is not None:
                items.append(item)
        return items

    def _byte(self, b: int) -> Item | None:
        if self._state == "idle":
            if b == ord("$"):
                self._state = "payload"
                self._buf.clear()
                self._too_long = False
            elif b == _INTERRUPT:
                return Interrupt()
            elif b in b"+-":
                return Ack(b == ord("+"))
            return None
        if self._state == "payload":
            if b == ord("#"):
                self._state = "checksum"
                self._sum.clear()
            elif b == ord("$"):
                # A new packet started before this one ended: gdb gave up on it; so do we.
                self._buf.clear()
                self._too_long = False
            elif len(self._buf) >= self._max:
                self._too_long = True
            else:
                self._buf.append(b)
            return None
        self._sum.append(b)
        if len(self._sum) < 2:
            return None
        self._state = "idle"
        try:
            expected = int(self._sum.decode("ascii"), 16)
        except (UnicodeDecodeError, ValueError):
            return BadPacket(f"checksum digits {bytes(self._sum)!r} are not hex")
        if self._too_long:
            return BadPacket(f"longer than {self._max} bytes")
        got = checksum(self._buf)
        if got != expected:
            return BadPacket(f"checksum {expected:02x} does not match the payload ({got:02x})")
        return Packet(bytes(self._buf))
