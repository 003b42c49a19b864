"""The initramfs: the project's newc writer against the system's ``cpio``, and its init on Linux.

The archive is checked the way others read it: GNU ``cpio`` lists and extracts it (and the
writer's parser reads what GNU ``cpio -o`` writes), the kernel unpacks it on
``qemu-system-ppc -M ppce500``, and the init from ``guest-stubs/linux-init/`` prints every line
it promises, echoes a line typed on the console and powers QEMU off.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fwcfg import ConfigError
from machine.boot.initramfs import (
    INIT_ELF,
    CharDevice,
    Directory,
    Entry,
    File,
    NewcRecord,
    default_entries,
    default_initramfs,
    main,
    newc_archive,
    parse_newc,
)
from tests.e500.test_linux import vmlinux as vmlinux  # the cached kernel build, as a fixture

REPO = Path(__file__).resolve().parent.parent
CPIO = shutil.which("cpio")
QEMU = shutil.which("qemu-system-ppc")
HAVE_CROSS = all(shutil.which("powerpc-linux-gnu-" + t) for t in ("gcc", "as", "ld"))
needs_cpio = pytest.mark.skipif(CPIO is None, reason="cpio not installed")

SAMPLE: list[Entry] = [
    Directory(path="/etc"),
    File(path="/etc/motd", data=b"hello\n", mode=0o644),
    Directory(path="bin", mode=0o700),
    File(path="bin/x", data=bytes(range(256)) * 3 + b"odd", mode=0o4755),
    File(path="empty", data=b""),
    Directory(path="dev"),
    CharDevice(path="dev/console", major=5, minor=1),
    CharDevice(path="dev/big", major=4095, minor=(1 << 20) - 1, mode=0o666),
]


def cpio(*args: str, data: bytes, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert CPIO is not None
    proc = subprocess.run([CPIO, *args], input=data, capture_output=True, cwd=cwd, timeout=30)
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(),
                                       proc.stderr.decode())


# --- the format ------------------------------------------------------------------------------


def test_a_header_is_110_hex_bytes_and_name_and_data_end_on_4_byte_boundaries() -> None:
    raw = newc_archive([File(path="/abc", data=b"12345", mode=0o755)])

    assert raw[:110] == (b"070701" + b"00000001" + b"000081ED" + b"00000000" * 2 + b"00000001"
                         + b"00000000" + b"00000005" + b"00000000" * 4 + b"00000004"
                         + b"00000000")
    assert raw[110:116] == b"abc\0\0\0"   # 110 + 4 = 114 -> 116
    assert raw[116:124] == b"12345\0\0\0"  # 5 -> 8
    trailer = raw[124:]
    assert trailer[:6] == b"070701" and trailer[110:121] == b"TRAILER!!!\0"
    assert len(raw) % 4 == 0


def test_headers_round_trip_through_the_layout() -> None:
    fields = dict(ino=7, mode=0o20600, uid=1, gid=2, nlink=1, mtime=0x5F5E1000, devmajor=3,
                  devminor=4, rdevmajor=5, rdevminor=1, check=0, name="dev/console", data=b"")
    rec = NewcRecord.parse(NewcRecord.build(fields))
    assert {k: rec[k] for k in fields} == fields
    assert (rec.namesize, rec.filesize) == (12, 0)


names = st.text(alphabet="abcxyz019_-.", min_size=1, max_size=12).filter(
    lambda s: s not in (".", ".."))


@st.composite
def archives(draw: st.DrawFn) -> list[Entry]:
    entries: list[Entry] = []
    dirs = [""]
    for name in draw(st.lists(names, unique=True, max_size=12)):
        path = f"{draw(st.sampled_from(dirs))}/{name}".lstrip("/")
        kind = draw(st.sampled_from(["dir", "file", "chr"]))
        mode = draw(st.integers(0, 0o7777))
        if kind == "dir":
            entries.append(Directory(path=path, mode=mode))
            dirs.append(path)
        elif kind == "file":
            entries.append(File(path=path, data=draw(st.binary(max_size=70)), mode=mode))
        else:
            entries.append(CharDevice(path=path, major=draw(st.integers(0, 4095)),
                                      minor=draw(st.integers(0, (1 << 20) - 1)), mode=mode))
    return entries


@given(archives())
def test_any_archive_reads_back_as_the_entries_it_was_written_from(entries: list[Entry]) -> None:
    members = parse_newc(newc_archive(entries))
    assert [m.entry for m in members] == entries
    assert [m.ino for m in members] == list(range(1, len(entries) + 1))


def test_the_same_entries_give_the_same_bytes() -> None:
    assert newc_archive(SAMPLE) == newc_archive(list(SAMPLE))
    assert newc_archive(SAMPLE, mtime=1) != newc_archive(SAMPLE)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: File(path="a" * 4096, data=b""), r"is 4096 bytes long: Linux takes at most 4095"),
        (lambda: Directory(path="/"), r"'/' names the root"),
        (lambda: Directory(path=""), r"'' names the root"),
        (lambda: File(path="a/../b", data=b""), r"'a/../b' has an empty, '\.' or '\.\.'"),
        (lambda: File(path="a//b", data=b""), r"'a//b' has an empty"),
        (lambda: File(path="caf\u00e9", data=b""), r"contains '\u00e9': names are printable ASCII"),
        (lambda: File(path="a\0b", data=b""), r"contains '\\x00'"),
        (lambda: File(path="TRAILER!!!", data=b""), r"the name that ends the archive"),
        (lambda: File(path="x", data=b"", mode=0o100644),
         r"mode 0o100644 of 'x' is not permission bits"),
        (lambda: Directory(path="x", mode=-1), r"mode -0o1 of 'x' is not permission bits"),
        (lambda: CharDevice(path="tty", major=4096, minor=0),
         r"device 'tty' number 4096:0 is out of range \(major 0-4095, minor 0-1048575\)"),
        (lambda: CharDevice(path="tty", major=4, minor=1 << 20), r"number 4:1048576 is out"),
        (lambda: newc_archive([File(path="dev/console", data=b"")]),
         r"'dev/console' comes before its directory 'dev'"),
        (lambda: newc_archive([File(path="init", data=b""), File(path="init/x", data=b"")]),
         r"'init/x' is inside 'init', which is not a directory"),
        (lambda: newc_archive([Directory(path="/dev"), Directory(path="dev")]),
         r"'dev' appears twice"),
        (lambda: parse_newc(b"070707" + bytes(200)), r"not a newc cpio archive at byte 0"),
        (lambda: parse_newc(newc_archive([Directory(path="d")])[:150]),
         r"not a newc cpio archive at byte 112"),
    ],
    ids=["name-too-long", "root", "empty", "dotdot", "empty-component", "non-ascii", "nul",
         "trailer-name", "file-type-in-mode", "negative-mode", "major", "minor", "no-parent",
         "parent-is-a-file", "duplicate", "odc-magic", "truncated"],
)
def test_bad_input_is_refused_with_a_message_naming_it(make: Callable[[], object],
                                                      message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make()


def test_the_default_initramfs_refuses_an_init_linux_could_not_run(tmp_path: Path) -> None:
    x86 = tmp_path / "init"
    x86.write_bytes(b"\x7fELF\x01\x01\x01" + bytes(11) + b"\x03\x00" + bytes(40))
    with pytest.raises(ConfigError, match=r"is not a 32-bit big-endian PowerPC ELF"):
        default_initramfs(x86)
    with pytest.raises(ConfigError, match=r"cannot read init .*/missing: No such file"):
        default_initramfs(tmp_path / "missing")
    assert main([str(tmp_path / "out.cpio"), "--init", str(x86)]) == 2


# --- read by GNU cpio --------------------------------------------------------------------------


@needs_cpio
def test_cpio_lists_the_default_initramfs_with_its_console_node(tmp_path: Path) -> None:
    out = tmp_path / "initrd.cpio"
    assert main([str(out)]) == 0
    listing = cpio("-t", "-v", "--quiet", data=out.read_bytes())

    assert listing.returncode == 0, listing.stderr
    rows = [line.split() for line in listing.stdout.splitlines()]
    assert [r[-1] for r in rows] == ["dev", "dev/console", "proc", "sys", "init"]
    console = rows[1]
    assert console[0] == "crw-------" and console[4:6] == ["5,", "1"]
    assert rows[4][0] == "-rwxr-xr-x" and int(rows[4][4]) == INIT_ELF.stat().st_size
    assert {r[2] for r in rows} == {r[3] for r in rows} == {"root"}


@needs_cpio
def test_cpio_extracts_every_member_byte_exact(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    extract = cpio("-i", "-d", "-v", "--no-absolute-filenames", "--preserve-modification-time",
                   data=newc_archive(SAMPLE), cwd=root)

    nodes_allowed = os.geteuid() == 0  # only root may mknod; cpio then reports the node
    assert extract.returncode == (0 if nodes_allowed else 2), extract.stderr
    assert (root / "etc/motd").read_bytes() == b"hello\n"
    assert (root / "bin/x").read_bytes() == bytes(range(256)) * 3 + b"odd"
    assert (root / "empty").read_bytes() == b""
    assert stat.S_IMODE((root / "bin").stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "bin/x").stat().st_mode) == 0o4755
    assert (root / "etc/motd").stat().st_mtime == 0
    if nodes_allowed:
        console = (root / "dev/console").stat()
        assert stat.S_ISCHR(console.st_mode) and stat.S_IMODE(console.st_mode) == 0o600
        assert (os.major(console.st_rdev), os.minor(console.st_rdev)) == (5, 1)
        big = (root / "dev/big").stat()
        assert (os.major(big.st_rdev), os.minor(big.st_rdev)) == (4095, (1 << 20) - 1)
    else:
        assert "dev/console" in extract.stderr


@needs_cpio
def test_the_parser_reads_what_gnu_cpio_writes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f").write_bytes(b"abcde")
    (src / "sub" / "f").chmod(0o640)
    assert CPIO is not None
    written = subprocess.run([CPIO, "-o", "-H", "newc", "--quiet"], input=b"sub\nsub/f\n",
                             cwd=src, capture_output=True, check=True).stdout

    entries = [m.entry for m in parse_newc(written)]
    assert entries[0] == Directory(path="sub", mode=stat.S_IMODE((src / "sub").stat().st_mode))
    assert entries[1] == File(path="sub/f", data=b"abcde", mode=0o640)


# --- the init -----------------------------------------------------------------------------------


@pytest.mark.cross
@pytest.mark.skipif(not HAVE_CROSS, reason="powerpc-linux-gnu cross tools not installed")
def test_the_shipped_init_is_exactly_what_the_sources_build(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["make", "-s", "-C", str(REPO / "guest-stubs"), f"O={tmp_path}", "init"],
        capture_output=True, text=True, env=dict(os.environ, LC_ALL="C"), timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "init.elf").read_bytes() == INIT_ELF.read_bytes(), (
        "init.elf differs from a fresh build of guest-stubs/linux-init/: run "
        "`make -C guest-stubs install` and commit machine/boot/guest/init.elf"
    )


def test_the_default_initramfs_holds_the_shipped_init_and_the_console() -> None:
    members = parse_newc(default_initramfs())
    assert [m.entry for m in members] == default_entries(INIT_ELF.read_bytes())


class Console:
    """QEMU's serial console on a pipe: lines as they arrive, with the time each came."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.start = time.monotonic()
        self.lines: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._cond:
                line = raw.decode(errors="replace").rstrip("\r\n")
                self.lines.append((time.monotonic() - self.start, line))
                self._cond.notify_all()

    def expect(self, line: str, timeout: float) -> float:
        """Waits for ``line``; returns the seconds from QEMU's start to it."""
        with self._cond:
            ok = self._cond.wait_for(lambda: any(text == line for _, text in self.lines)
                                     or not self._thread.is_alive(), timeout)
            for t, text in self.lines:
                if text == line:
                    return t
        raise AssertionError(f"no {line!r} within {timeout} s (ok={ok}):\n" + self.text())

    def text(self) -> str:
        with self._cond:
            return "\n".join(f"{t:6.2f} {text}" for t, text in self.lines)


@pytest.mark.qemu
@pytest.mark.cross
@pytest.mark.skipif(QEMU is None, reason="qemu-system-ppc not installed")
def test_the_init_runs_on_qemu_ppce500_echoes_a_typed_line_and_powers_off(
        vmlinux: Path, tmp_path: Path) -> None:
    assert QEMU is not None
    initrd = tmp_path / "initrd.cpio"
    initrd.write_bytes(default_initramfs())
    append = "console=ttyS0 init.sleep=1"
    proc = subprocess.Popen(
        [QEMU, "-M", "ppce500", "-smp", "1", "-m", "256", "-nographic", "-no-reboot",
         "-kernel", str(vmlinux), "-initrd", str(initrd), "-append", append],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    console = Console(proc)
    try:
        console.expect("fwcfg-e500 init: hello from userspace", timeout=60)
        console.expect("init: cpus=1", timeout=10)
        console.expect(f"init: cmdline={append}", timeout=10)
        console.expect("init: type a line:", timeout=10)
        # Typed only now: bytes sent before the tty is open would be lost in the UART.
        assert proc.stdin is not None
        proc.stdin.write(b"hello from the host\n")
        proc.stdin.flush()
        echo = console.expect("init: echo: hello from the host", timeout=10)
        slept = console.expect("init: slept 1 s", timeout=10)
        off = console.expect("init: powering off", timeout=10)
        assert proc.wait(timeout=30) == 0, console.text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert slept - echo >= 0.9, console.text()  # init.sleep=1 reached the init
    assert off >= slept
    assert "Run /init as init process" in console.text()
    assert not re.search(r"Kernel panic|unable to open an initial console", console.text())
    print(console.text())  # the transcript with timings, for -rP
