"""fw_cfg: QEMU's firmware configuration device as a sans-I/O state machine, plus a client."""

from fwcfg._errors import ConfigError as ConfigError
from fwcfg._memory import BytearrayMemory as BytearrayMemory
from fwcfg._memory import GuestMemory as GuestMemory
from fwcfg._memory import GuestMemoryError as GuestMemoryError

__all__ = ["BytearrayMemory", "ConfigError", "GuestMemory", "GuestMemoryError"]
