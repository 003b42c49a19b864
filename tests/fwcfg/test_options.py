"""``-fw_cfg`` as QEMU spells it, and each host-side mistake with its one message."""

from __future__ import annotations

from pathlib import Path

import pytest

from fwcfg import (
    BytearrayMemory,
    ConfigError,
    FwCfg,
    FwCfgOption,
    apply_fw_cfg_options,
    parse_fw_cfg_option,
)
from fwcfg.client import DeviceTransport, FwCfgClient


@pytest.mark.parametrize(
    ("text", "option"),
    [
        ("name=opt/x,file=/tmp/f", FwCfgOption(name="opt/x", file="/tmp/f")),
        ("opt/x,file=/tmp/f", FwCfgOption(name="opt/x", file="/tmp/f")),  # implied name=
        ("file=/tmp/f,name=opt/x", FwCfgOption(name="opt/x", file="/tmp/f")),
        ("name=opt/s,string=a,,b", FwCfgOption(name="opt/s", string="a,b")),  # ,, is a comma
        ("name=opt/s,string=", FwCfgOption(name="opt/s", string="")),
        ("name=opt/s,string=x=y", FwCfgOption(name="opt/s", string="x=y")),
    ],
)
def test_qemu_spellings_parse(text: str, option: FwCfgOption) -> None:
    assert parse_fw_cfg_option(text) == option


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name=opt/x", r"give exactly one of file= and string="),
        ("name=opt/x,file=/a,string=b", r"give exactly one of file= and string="),
        ("file=/a", r"a file name \(name=\) is needed"),
        ("name=,string=x", r"a file name \(name=\) is needed"),
        ("name=opt/" + "x" * 52 + ",string=s", r"is too long \(56 bytes, the limit is 55\)"),
        ("name=opt/x,file=", r"file= is empty"),
        ("name=opt/x,size=3", r"unknown parameter 'size'"),
        ("name=opt/x,string=a,b", r"'b' is not of the form key=value"),
        ("name=opt/x,gen_id=foo", r"gen_id= is not supported"),
    ],
)
def test_bad_options_raise_one_clear_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_fw_cfg_option(text)


def test_applying_adds_files_and_warns_outside_opt(tmp_path: Path) -> None:
    host = tmp_path / "blob"
    host.write_bytes(b"\x00\x01blob")
    dev = FwCfg(BytearrayMemory(4096))
    warnings = apply_fw_cfg_options(dev, [
        parse_fw_cfg_option(f"name=opt/blob,file={host}"),
        parse_fw_cfg_option("name=etc/mine,string=text"),
    ])
    assert warnings == [
        "fw_cfg item name 'etc/mine' should be prefixed with 'opt/'"
        " (names outside opt/ are reserved for the machine)"
    ]
    client = FwCfgClient(DeviceTransport(dev))
    assert client.read_file("opt/blob") == b"\x00\x01blob"
    assert client.read_file("etc/mine") == b"text"
    dev.close()


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["name=opt/a,string=1", "name=opt/a,string=2"], r"duplicate fw_cfg file name 'opt/a'"),
        (["name=opt/a,file=/nonexistent/x"], r"host file '/nonexistent/x' does not exist"),
        ([f"name=opt/{i},string=x" for i in range(0x21)], r"too many fw_cfg files"),
    ],
)
def test_applying_reports_host_problems(texts: list[str], message: str) -> None:
    dev = FwCfg(BytearrayMemory(4096))
    with pytest.raises(ConfigError, match=message):
        apply_fw_cfg_options(dev, [parse_fw_cfg_option(t) for t in texts])
