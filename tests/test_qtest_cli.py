"""``python -m machine -S -qtest ...``: the command line QEMU scripts use, end to end."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from fwcfg import Key
from fwcfg.client import FwCfgClient, QtestTransport
from machine import platform
from machine.cli import main, parse_memory, parse_smp
from machine.debug.qtest import QtestClient

FW = platform.FWCFG_BASE
UUID = "4600cb32-38ec-4b2f-8acb-81c6ea54f2d8"


def test_qtest_stdio_serves_the_standard_items_and_user_files(tmp_path: Path) -> None:
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(256)) * 40)
    argv = [sys.executable, "-m", "machine", "-S", "-qtest", "stdio", "-m", "64M",
            "-smp", "cpus=2,maxcpus=4", "-uuid", UUID, "-fw_cfg", f"name=opt/blob,file={blob}",
            "-fw_cfg", "opt/s,string=a,,b"]
    with QtestClient(argv) as q:
        for use_dma in (False, True):
            client = FwCfgClient(
                QtestTransport(q.command, base=FW, scratch=0x10_0000), use_dma=use_dma)
            assert client.signature() == b"QEMU"
            assert client.read_u32(Key.ID) == 3
            assert client.read_item(Key.UUID, 16) == uuid.UUID(UUID).bytes
            assert client.read_u64(Key.RAM_SIZE) == 64 * platform.MiB
            # qtest serves the fw_cfg a boot builds, and a boot's MAX_CPUS is its CPU count
            # (MachineConfig has no maxcpus; QEMU would say 4).
            assert (client.read_u16(Key.NB_CPUS), client.read_u16(Key.MAX_CPUS)) == (2, 2)
            assert [e.name for e in client.directory()] == ["etc/fdt", "opt/blob", "opt/s"]
            assert client.read_file("opt/blob") == blob.read_bytes()
            assert client.read_file("opt/s") == b"a,b"
        assert q.command("endianness") == "OK big"
    assert q.process.returncode == 0  # end of input ends the server


def _serve_unix(spec: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "machine", "-S", "-qtest", spec, "-m", "64"],
                            stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _converse(conn: socket.socket) -> list[str]:
    conn.sendall(b"writel 0x40 0xdeadbeef\nreadl 0x40\nnonsense\n")
    reader = conn.makefile("r")
    return [reader.readline().strip() for _ in range(3)]


def test_qtest_unix_connects_to_a_listening_test_like_libqtest(tmp_path: Path) -> None:
    path = str(tmp_path / "qtest.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    listener.settimeout(30)
    proc = _serve_unix(f"unix:{path}")
    conn, _ = listener.accept()
    with conn:
        assert _converse(conn) == ["OK", "OK 0x00000000deadbeef", "FAIL Unknown command 'nonsense'"]
    assert proc.wait(timeout=30) == 0
    listener.close()


def test_qtest_unix_server_mode(tmp_path: Path) -> None:
    path = tmp_path / "qtest.sock"
    proc = _serve_unix(f"unix:{path},server=on,wait=off")
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    deadline = threading.Event()
    for _ in range(300):
        try:
            conn.connect(str(path))
            break
        except (FileNotFoundError, ConnectionRefusedError):
            deadline.wait(0.05)
    with conn:
        assert _converse(conn)[1] == "OK 0x00000000deadbeef"
    assert proc.wait(timeout=30) == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-m", "7"], f"-m '7': RAM must be between {platform.MIN_RAM_SIZE >> 20} MiB and"),
        (["-m", "lots"], "-m 'lots' is not a size"),
        (["-smp", "33"], "-smp '33': CPU count 33 is outside 1..32"),
        (["-smp", "cpus=4,maxcpus=2"], "maxcpus 2 is below the CPU count 4"),
        (["-uuid", "nope"], "-uuid 'nope' is not a UUID"),
        (["-fw_cfg", "name=opt/x"], "give exactly one of file= and string="),
        (["-fw_cfg", "name=opt/x,file=/nonexistent/f"], "host file '/nonexistent/f' does not"),
        (["-fw_cfg", "name=opt/x,string=1", "-fw_cfg", "name=opt/x,string=2"],
         "duplicate fw_cfg file name 'opt/x'"),
        (["-fw_cfg", "name=" + "o" * 56 + ",string=1"], "is too long (56 bytes"),
        (["-qtest", "tcp:localhost:4444"], "only 'stdio' and 'unix:PATH' are supported"),
        (["-qtest", "unix:/nonexistent/dir/sock"], "cannot connect to /nonexistent/dir/sock"),
        (["-frobnicate"], "unrecognized arguments: -frobnicate"),
        (["-m"], "argument -m: expected one argument"),
    ],
)
def test_bad_options_print_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    qtest = [] if "-qtest" in argv else ["-qtest", "stdio"]
    assert main(["-S", *qtest, *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fwcfg-e500: ") and message in err


def test_names_outside_opt_warn_like_qemu_but_work() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "machine", "-S", "-qtest", "stdio", "-fw_cfg", "etc/x,string=1"],
        input="readb 0\n", capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 0 and proc.stdout == "OK 0x0000000000000000\n"
    assert proc.stderr == (
        "fwcfg-e500: warning: fw_cfg item name 'etc/x' should be prefixed with 'opt/'"
        " (names outside opt/ are reserved for the machine)\n")


def test_trace_prints_fw_cfg_events(tmp_path: Path) -> None:
    trace = tmp_path / "trace.txt"
    proc = subprocess.run(
        [sys.executable, "-m", "machine", "-S", "-qtest", "stdio", "--trace-file", str(trace),
         "-fw_cfg", "opt/x,string=1"],
        # 0x20 is the boot's etc/fdt, the first file a machine adds; the user's come after it.
        input=f"writew {FW + 8:#x} 0x21\nwritew {FW + 8:#x} 0x19\n",
        capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 0
    assert trace.read_text() == "fw_cfg select opt/x\nfw_cfg select file_dir\n"


@pytest.mark.parametrize(
    ("text", "size"),
    [(None, 256 * platform.MiB), ("256", 256 * platform.MiB), ("1G", platform.GiB),
     ("size=512M", 512 * platform.MiB), ("131072k", 128 * platform.MiB), ("3g", 3 * platform.GiB)],
)
def test_memory_sizes_in_qemu_spelling(text: str | None, size: int) -> None:
    assert parse_memory(text) == size


def test_smp_spellings() -> None:
    assert parse_smp("4") == (4, 4)
    assert parse_smp("2,maxcpus=8") == (2, 8)
    assert parse_smp("cpus=3") == (3, 3)
