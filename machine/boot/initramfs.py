"""The initramfs: a newc cpio writer, and the project's default archive around its init.

Linux unpacks a "newc" cpio archive handed to it as the initrd into its root file system and
runs ``/init`` from it (``Documentation/driver-api/early-userspace/buffer-format.rst``; the
unpacker is ``init/initramfs.c``).  The project writes the archive itself instead of running
``cpio -o`` because:

- a device node needs no root: ``cpio -o`` archives what is on disk, so ``/dev/console`` would
  have to be made with ``mknod`` first, and the kernel opens init's stdin, stdout and stderr on
  ``/dev/console`` only if the archive has it (``console_on_rootfs`` in ``init/main.c``; an
  initramfs boot gets no devtmpfs on ``/dev``);
- the archive is reproducible: modification times 0, owner root, inode numbers in order;
- bad input is caught here, with a message, rather than by a kernel that skips an entry it
  cannot use and later panics with "No working init found".

:func:`newc_archive` writes any list of :class:`Directory`, :class:`File` and
:class:`CharDevice` entries, :func:`parse_newc` reads an archive back, and
:func:`default_initramfs` builds the archive the Linux boot tests use: the init from
``guest-stubs/linux-init/`` (shipped as ``machine/boot/guest/init.elf``) with ``/dev``,
``/dev/console``, ``/proc`` and ``/sys``.  ``python -m machine.boot.initramfs initrd.cpio``
writes that archive to a file for ``fwcfg-e500 -initrd`` or ``qemu-system-ppc -initrd``.
"""

from __future__ import annotations

import argparse
import stat
import string
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from construct import (
    Adapter,
    Bytes,
    Const,
    ConstructError,
    PaddedString,
    Padding,
    Rebuild,
    Struct,
    len_,
    this,
)

from fwcfg import ConfigError
from machine.boot.guest import GUEST_DIR

#: The init of the default initramfs, built from ``guest-stubs/linux-init/`` and checked in like
#: the other guest images (``make -C guest-stubs install``).
INIT_ELF: Final = GUEST_DIR / "init.elf"

NEWC_MAGIC: Final = b"070701"
#: Six bytes of magic and thirteen 8-digit hex fields.
NEWC_HEADER_SIZE: Final = 110
#: The name that ends an archive.
TRAILER_NAME: Final = "TRAILER!!!"
#: Linux's PATH_MAX: ``init/initramfs.c`` skips a header whose name size (with its NUL) is
#: larger, and everything after it in the archive with it.
PATH_MAX: Final = 4096
#: ``MKDEV``'s field widths (``include/linux/kdev_t.h``: MINORBITS = 20, 32-bit dev_t).
MAX_MAJOR: Final = (1 << 12) - 1
MAX_MINOR: Final = (1 << 20) - 1
#: The console's device number (``Documentation/admin-guide/devices.txt``: 5, 1 = /dev/console).
CONSOLE_MAJOR: Final = 5
CONSOLE_MINOR: Final = 1

_NAME_CHARS: Final = frozenset(string.ascii_letters + string.digits + string.punctuation + " ")
_HEX_DIGITS: Final = frozenset(string.hexdigits.encode())


class _Hex32(Adapter):
    """A 32-bit unsigned number as 8 ASCII hex digits: newc's only field type."""

    def _decode(self, obj: bytes, context: Any, path: str) -> int:
        if not set(obj) <= _HEX_DIGITS:
            raise ConstructError(f"{obj!r} is not 8 hex digits", path=path)
        return int(obj, 16)

    def _encode(self, obj: int, context: Any, path: str) -> bytes:
        if not 0 <= obj <= 0xFFFF_FFFF:
            raise ConstructError(f"{obj} does not fit in 8 hex digits", path=path)
        return b"%08X" % obj


_Hex8 = _Hex32(Bytes(8))

#: One archive member: header, NUL-terminated name and data, each padded to 4 bytes
#: (``buffer-format.rst``; ``cpio(5)``, "New ASCII Format").  ``filesize`` and ``namesize``
#: are rebuilt from the data and the name.  Names are ASCII (see :func:`_check_path`).
NewcRecord = Struct(
    "magic" / Const(NEWC_MAGIC),
    "ino" / _Hex8,
    "mode" / _Hex8 * "file type and permission bits, as st_mode",
    "uid" / _Hex8,
    "gid" / _Hex8,
    "nlink" / _Hex8 * "a non-directory with nlink >= 2 is a hard-link candidate",
    "mtime" / _Hex8,
    "filesize" / Rebuild(_Hex8, len_(this.data)),
    "devmajor" / _Hex8 * "the device the file was on: unused by Linux",
    "devminor" / _Hex8,
    "rdevmajor" / _Hex8 * "a device node's own number",
    "rdevminor" / _Hex8,
    "namesize" / Rebuild(_Hex8, len_(this.name) + 1) * "with the NUL",
    "check" / _Hex8 * "0: only 070702 archives carry a checksum",
    "name" / PaddedString(this.namesize, "ascii"),
    Padding((-(this.namesize + 2)) % 4) * "110-byte header + name to a multiple of 4",
    "data" / Bytes(this.filesize),
    Padding((-this.filesize) % 4) * "data to a multiple of 4",
)


def _check_path(path: str) -> str:
    """The archive name for ``path`` (``/dev/console`` and ``dev/console`` alike give
    ``dev/console``), or :class:`ConfigError` saying why Linux could not use it."""
    name = path.removeprefix("/")
    if not name:
        raise ConfigError(f"initramfs path {path!r} names the root, which always exists")
    if not set(name) <= _NAME_CHARS:
        bad = next(c for c in name if c not in _NAME_CHARS)
        raise ConfigError(f"initramfs path {path!r} contains {bad!r}: names are printable ASCII")
    if len(name) + 1 > PATH_MAX:
        raise ConfigError(f"initramfs path {name[:40]!r}... is {len(name)} bytes long: Linux "
                          f"takes at most {PATH_MAX - 1}")
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise ConfigError(f"initramfs path {path!r} has an empty, '.' or '..' component")
    if name == TRAILER_NAME:
        raise ConfigError(f"initramfs path {path!r} is the name that ends the archive")
    return name


def _check_mode(path: str, mode: int) -> None:
    if not 0 <= mode <= 0o7777:
        raise ConfigError(f"initramfs mode {mode:#o} of {path!r} is not permission bits "
                          "(0 to 0o7777; the entry's kind gives the file type)")


@dataclass(frozen=True, slots=True, kw_only=True)
class Directory:
    """A directory; ``path`` is normalised to its archive name (no leading ``/``)."""

    path: str
    mode: int = 0o755

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", _check_path(self.path))
        _check_mode(self.path, self.mode)


@dataclass(frozen=True, slots=True, kw_only=True)
class File:
    """A regular file with its contents."""

    path: str
    data: bytes
    mode: int = 0o644

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", _check_path(self.path))
        _check_mode(self.path, self.mode)
        if len(self.data) > 0xFFFF_FFFF:
            raise ConfigError(f"initramfs file {self.path!r} is {len(self.data)} bytes: newc "
                              "sizes are 32 bits")


@dataclass(frozen=True, slots=True, kw_only=True)
class CharDevice:
    """A character device node (``/dev/console`` is 5, 1)."""

    path: str
    major: int
    minor: int
    mode: int = 0o600

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", _check_path(self.path))
        _check_mode(self.path, self.mode)
        if not 0 <= self.major <= MAX_MAJOR or not 0 <= self.minor <= MAX_MINOR:
            raise ConfigError(f"initramfs device {self.path!r} number {self.major}:{self.minor} "
                              f"is out of range (major 0-{MAX_MAJOR}, minor 0-{MAX_MINOR})")


Entry = Directory | File | CharDevice


def _record(entry: Entry, ino: int, mtime: int) -> dict[str, Any]:
    fields: dict[str, Any] = dict(
        ino=ino, uid=0, gid=0, mtime=mtime, devmajor=0, devminor=0, rdevmajor=0, rdevminor=0,
        check=0, name=entry.path, data=b"", nlink=1,
    )
    match entry:
        case Directory():
            fields.update(mode=stat.S_IFDIR | entry.mode, nlink=2)
        case File():
            fields.update(mode=stat.S_IFREG | entry.mode, data=entry.data)
        case CharDevice():
            fields.update(mode=stat.S_IFCHR | entry.mode, rdevmajor=entry.major,
                          rdevminor=entry.minor)
    return fields


def newc_archive(entries: Iterable[Entry], *, mtime: int = 0) -> bytes:
    """A newc cpio archive of ``entries``, in their order, ended by the trailer.

    Each entry's parent directory must come earlier in the list (Linux creates members in
    archive order and drops one whose directory does not exist yet), and no path may appear
    twice.  Everything is owned by root, dated ``mtime`` and numbered from inode 1, so the
    same entries always give the same bytes.
    """
    out = bytearray()
    kinds: dict[str, type] = {}
    for ino, entry in enumerate(entries, start=1):
        if entry.path in kinds:
            raise ConfigError(f"initramfs path {entry.path!r} appears twice")
        parent = entry.path.rpartition("/")[0]
        if parent and parent not in kinds:
            raise ConfigError(f"initramfs path {entry.path!r} comes before its directory "
                              f"{parent!r}")
        if parent and kinds[parent] is not Directory:
            raise ConfigError(f"initramfs path {entry.path!r} is inside {parent!r}, which is "
                              "not a directory")
        kinds[entry.path] = type(entry)
        out += NewcRecord.build(_record(entry, ino, mtime))
    out += NewcRecord.build(dict(
        ino=0, mode=0, uid=0, gid=0, nlink=1, mtime=0, devmajor=0, devminor=0, rdevmajor=0,
        rdevminor=0, check=0, name=TRAILER_NAME, data=b"",
    ))
    return bytes(out)


@dataclass(frozen=True, slots=True)
class Member:
    """One member of an archive as :func:`parse_newc` read it."""

    name: str
    ino: int
    mode: int
    uid: int
    gid: int
    nlink: int
    mtime: int
    rdevmajor: int
    rdevminor: int
    data: bytes

    @property
    def entry(self) -> Entry:
        """The entry that writes this member (for the kinds :func:`newc_archive` writes)."""
        perm = stat.S_IMODE(self.mode)
        if stat.S_ISDIR(self.mode):
            return Directory(path=self.name, mode=perm)
        if stat.S_ISREG(self.mode):
            return File(path=self.name, data=self.data, mode=perm)
        if stat.S_ISCHR(self.mode):
            return CharDevice(path=self.name, major=self.rdevmajor, minor=self.rdevminor,
                              mode=perm)
        raise ConfigError(f"initramfs member {self.name!r} has file type {self.mode:#o}, "
                          "which this module does not write")


def parse_newc(data: bytes) -> list[Member]:
    """The members of a newc archive up to its trailer (not included).

    For checking archives (the tests, and anyone curious what an initrd holds); a truncated or
    foreign archive raises :class:`ConfigError` with the offset of the bad member.
    """
    members: list[Member] = []
    offset = 0
    while True:
        try:
            rec = NewcRecord.parse(data[offset:])
        except ConstructError as exc:
            raise ConfigError(f"not a newc cpio archive at byte {offset}: {exc}") from None
        if rec.name == TRAILER_NAME:
            return members
        members.append(Member(rec.name, rec.ino, rec.mode, rec.uid, rec.gid, rec.nlink,
                              rec.mtime, rec.rdevmajor, rec.rdevminor, rec.data))
        offset += len(NewcRecord.build(rec))


def _check_init(init: Path, data: bytes) -> None:
    """A wrong binary as /init would only show as a kernel panic ("No working init found"):
    check it is an ELF the e500's Linux can run (32-bit, big-endian, EM_PPC = 20)."""
    if data[:4] != b"\x7fELF" or data[4:6] != b"\x01\x02" or data[18:20] != b"\x00\x14":
        raise ConfigError(f"init {init} is not a 32-bit big-endian PowerPC ELF "
                          "(build it with `make -C guest-stubs init`)")


def default_entries(init: bytes) -> list[Entry]:
    """The default initramfs: ``/init`` and the mount points and console node it needs."""
    return [
        Directory(path="dev"),
        CharDevice(path="dev/console", major=CONSOLE_MAJOR, minor=CONSOLE_MINOR),
        Directory(path="proc", mode=0o555),
        Directory(path="sys", mode=0o555),
        File(path="init", data=init, mode=0o755),
    ]


def default_initramfs(init: Path | None = None) -> bytes:
    """The default initramfs around ``init`` (the shipped :data:`INIT_ELF` if not given)."""
    path = INIT_ELF if init is None else init
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read init {path}: {exc.strerror}") from None
    _check_init(path, data)
    return newc_archive(default_entries(data))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m machine.boot.initramfs OUT [--init ELF]``: write the default initramfs."""
    parser = argparse.ArgumentParser(
        prog="python -m machine.boot.initramfs",
        description="Write fwcfg-e500's default initramfs (a newc cpio archive) to OUT.")
    parser.add_argument("out", type=Path, help="the archive to write, e.g. initrd.cpio")
    parser.add_argument("--init", type=Path, default=None,
                        help=f"the program to run as /init (default: {INIT_ELF})")
    args = parser.parse_args(argv)
    try:
        archive = default_initramfs(args.init)
        args.out.write_bytes(archive)
    except ConfigError as exc:
        print(f"initramfs: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"initramfs: cannot write {args.out}: {exc.strerror}", file=sys.stderr)
        return 2
    return 0


__all__ = [
    "INIT_ELF",
    "CharDevice",
    "Directory",
    "Entry",
    "File",
    "Member",
    "NewcRecord",
    "default_entries",
    "default_initramfs",
    "main",
    "newc_archive",
    "parse_newc",
]

if __name__ == "__main__":
    sys.exit(main())
