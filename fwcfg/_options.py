"""QEMU's ``-fw_cfg`` option: parsing and applying it, with QEMU's host-side checks.

The spelling is QEMU's: ``[name=]NAME,file=PATH`` or ``[name=]NAME,string=TEXT``, where a comma
inside a value is written twice (``,,``), as in every QemuOpts option.  Each mistake raises
:class:`~fwcfg.ConfigError` with one message naming the bad value; a name outside ``opt/`` is
allowed but produces the warning QEMU prints.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fwcfg._device import FwCfg
from fwcfg._errors import ConfigError
from fwcfg._layouts import FILE_NAME_MAX

#: The prefix reserved for user files (fw_cfg.rst, "Externally Provided Items").
USER_PREFIX = "opt/"
_KEYS = ("name", "file", "string")


@dataclass(frozen=True, slots=True, kw_only=True)
class FwCfgOption:
    """One ``-fw_cfg`` item: a file name and exactly one of a host path or a string."""

    name: str
    file: str | None = None
    string: str | None = None


def _split_qemu_opts(text: str) -> list[str]:
    """Split on single commas; ``,,`` stands for a literal comma (QemuOpts' escape)."""
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == ",":
            if text.startswith(",,", i):
                current.append(",")
                i += 2
                continue
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    return parts


def parse_fw_cfg_option(text: str) -> FwCfgOption:
    """Parse the argument of one ``-fw_cfg``."""
    values: dict[str, str] = {}
    for index, part in enumerate(_split_qemu_opts(text)):
        key, sep, value = part.partition("=")
        if not sep:
            if index == 0:  # QEMU's implied "name"
                key, value = "name", part
            else:
                raise ConfigError(f"-fw_cfg {text!r}: {part!r} is not of the form key=value")
        if key == "gen_id":
            raise ConfigError(f"-fw_cfg {text!r}: gen_id= is not supported by this machine")
        if key not in _KEYS:
            raise ConfigError(
                f"-fw_cfg {text!r}: unknown parameter {key!r} (expected name, file or string)"
            )
        values[key] = value
    name = values.get("name")
    if not name:
        raise ConfigError(f"-fw_cfg {text!r}: a file name (name=) is needed")
    if ("file" in values) == ("string" in values):
        raise ConfigError(f"-fw_cfg {text!r}: give exactly one of file= and string=")
    size = len(name.encode("utf-8"))
    if size > FILE_NAME_MAX:
        raise ConfigError(
            f"-fw_cfg name {name!r} is too long ({size} bytes, the limit is {FILE_NAME_MAX})"
        )
    if "file" in values and not values["file"]:
        raise ConfigError(f"-fw_cfg {text!r}: file= is empty")
    return FwCfgOption(name=name, file=values.get("file"), string=values.get("string"))


def apply_fw_cfg_options(device: FwCfg, options: Iterable[FwCfgOption]) -> list[str]:
    """Add each option's file to ``device``; return the warnings QEMU would print.

    Host files are opened now (so a missing or unreadable one is reported before the machine
    runs) but read only when the guest reads them.
    """
    warnings: list[str] = []
    for opt in options:
        if not opt.name.startswith(USER_PREFIX):
            warnings.append(
                f"fw_cfg item name {opt.name!r} should be prefixed with {USER_PREFIX!r}"
                " (names outside opt/ are reserved for the machine)"
            )
        if opt.file is not None:
            device.add_host_file(opt.name, Path(opt.file))
        else:
            assert opt.string is not None
            device.add_string_file(opt.name, opt.string)
    return warnings
