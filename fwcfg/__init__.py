"""fw_cfg: QEMU's firmware configuration device as a sans-I/O state machine, plus a client.

The device (:class:`FwCfg`) holds items and implements the registers' behaviour over an injected
:class:`GuestMemory`; :class:`MmioWide` and :class:`IoPort` map bus accesses onto it;
:mod:`fwcfg.client` reads it back as a guest would.  Layouts and keys live in ``fwcfg._layouts``
and are re-exported here.
"""

from fwcfg._device import FileInfo as FileInfo
from fwcfg._device import FwCfg as FwCfg
from fwcfg._device import FwCfgStatistics as FwCfgStatistics
from fwcfg._errors import ConfigError as ConfigError
from fwcfg._events import DmaOp as DmaOp
from fwcfg._events import DmaTransfer as DmaTransfer
from fwcfg._events import Event as Event
from fwcfg._events import Selected as Selected
from fwcfg._frontends import FrontEnd as FrontEnd
from fwcfg._frontends import IoPort as IoPort
from fwcfg._frontends import MmioWide as MmioWide
from fwcfg._items import Item as Item
from fwcfg._items import ViewItem as ViewItem
from fwcfg._layouts import DEFAULT_FILE_SLOTS as DEFAULT_FILE_SLOTS
from fwcfg._layouts import DMA_SIGNATURE as DMA_SIGNATURE
from fwcfg._layouts import FILE_NAME_MAX as FILE_NAME_MAX
from fwcfg._layouts import SIGNATURE as SIGNATURE
from fwcfg._layouts import DmaAccess as DmaAccess
from fwcfg._layouts import DmaControl as DmaControl
from fwcfg._layouts import Feature as Feature
from fwcfg._layouts import FileDir as FileDir
from fwcfg._layouts import FileEntry as FileEntry
from fwcfg._layouts import Key as Key
from fwcfg._layouts import PpcKey as PpcKey
from fwcfg._memory import BytearrayMemory as BytearrayMemory
from fwcfg._memory import GuestMemory as GuestMemory
from fwcfg._memory import GuestMemoryError as GuestMemoryError
from fwcfg._options import FwCfgOption as FwCfgOption
from fwcfg._options import apply_fw_cfg_options as apply_fw_cfg_options
from fwcfg._options import parse_fw_cfg_option as parse_fw_cfg_option

__all__ = [
    "DEFAULT_FILE_SLOTS",
    "DMA_SIGNATURE",
    "FILE_NAME_MAX",
    "SIGNATURE",
    "BytearrayMemory",
    "ConfigError",
    "DmaAccess",
    "DmaControl",
    "DmaOp",
    "DmaTransfer",
    "Event",
    "Feature",
    "FileDir",
    "FileEntry",
    "FileInfo",
    "FrontEnd",
    "FwCfg",
    "FwCfgOption",
    "FwCfgStatistics",
    "GuestMemory",
    "GuestMemoryError",
    "IoPort",
    "Item",
    "Key",
    "MmioWide",
    "PpcKey",
    "Selected",
    "ViewItem",
    "apply_fw_cfg_options",
    "parse_fw_cfg_option",
]
