"""The one exception type for bad host-side configuration.

Guest mistakes never raise: they become guest-visible results (zeros, the DMA ERROR bit, an
ePAPR status code).  A bad *host* input — a file name that is too long, a missing host file, an
impossible RAM size, a foreign ELF — raises :class:`ConfigError` with a message that names the
offending value, so the CLI can print it as one line and exit with status 2.  The machine
package raises the same type for its own configuration checks.
"""

from __future__ import annotations


class ConfigError(Exception):
    """Bad host configuration; ``str(err)`` is a complete sentence a user can act on."""
