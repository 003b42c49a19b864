"""GDB remote-protocol framing: what gdb sends becomes packets, garbage never raises."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from machine.debug.gdb_packets import (
    Ack,
    BadPacket,
    Interrupt,
    Packet,
    PacketReader,
    checksum,
    escape,
    frame,
    unescape,
)


def test_a_packet_is_framed_with_its_modulo_256_checksum() -> None:
    assert frame(b"OK") == b"$OK#9a"
    assert frame(b"") == b"$#00"
    assert checksum(b"qSupported") == sum(b"qSupported") % 256


def test_the_reader_splits_acks_interrupts_and_packets_as_gdb_sends_them() -> None:
    stream = b"+$qSupported:multiprocess+#c6\x03-$g#67"
    assert PacketReader().feed(stream) == [
        Ack(True),
        Packet(b"qSupported:multiprocess+"),
        Interrupt(),
        Ack(False),
        Packet(b"g"),
    ]


def test_a_packet_split_across_reads_arrives_once() -> None:
    reader = PacketReader()
    wire = frame(b"m1000,4")
    got = [item for b in wire for item in reader.feed(bytes([b]))]
    assert got == [Packet(b"m1000,4")]


def test_a_wrong_checksum_is_reported_and_the_next_packet_still_parses() -> None:
    reader = PacketReader()
    items = reader.feed(b"$g#00$g#67")
    assert isinstance(items[0], BadPacket) and "does not match" in items[0].reason
    assert items[1] == Packet(b"g")


def test_non_hex_checksum_digits_and_noise_between_packets_are_survivable() -> None:
    reader = PacketReader()
    items = reader.feed(b"noise$g#zz more noise $?#3f")
    assert isinstance(items[0], BadPacket) and "not hex" in items[0].reason
    assert items[1] == Packet(b"?")


def test_an_overlong_packet_is_refused_without_buffering_it() -> None:
    reader = PacketReader(max_packet=16)
    payload = b"M0,40:" + b"00" * 64
    items = reader.feed(frame(payload))
    assert len(items) == 1 and isinstance(items[0], BadPacket)
    assert "longer than 16" in items[0].reason


def test_a_restarted_packet_drops_the_unfinished_one() -> None:
    assert PacketReader().feed(b"$m10$g#67") == [Packet(b"g")]


def test_binary_data_escapes_the_four_special_bytes() -> None:
    data = b"a$b#c}d*e"
    escaped = escape(data)
    assert b"$" not in escaped and b"#" not in escaped and b"*" not in escaped
    assert escaped == b"a}\x04b}\x03c}]d}\x0ae"
    assert unescape(escaped) == data


@given(st.binary(max_size=200))
def test_escape_round_trips_and_frames_parse_back(data: bytes) -> None:
    assert unescape(escape(data)) == data
    assert PacketReader().feed(frame(escape(data))) == [Packet(escape(data))]


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(noise: bytes) -> None:
    items = PacketReader(max_packet=64).feed(noise)
    assert all(isinstance(i, Packet | Interrupt | Ack | BadPacket) for i in items)
