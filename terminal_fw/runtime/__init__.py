"""One terminal runtime for gates, staff handhelds and kiosks; the role is configuration.

* :mod:`~terminal_fw.runtime.terminal` — :class:`Runtime`: the parts put together, and
  what roles may ask of them (:class:`terminal_fw.roles.host.TerminalHost`);
* :mod:`~terminal_fw.runtime.settings` — local settings and the chain-key file;
* :mod:`~terminal_fw.runtime.hq_link` — subscriptions to HQ's topics and their handlers;
* :mod:`~terminal_fw.runtime.commands` — HQ's remote commands, as a table;
* :mod:`~terminal_fw.runtime.readers` — the reader loops that feed the role;
* :mod:`~terminal_fw.runtime.service` — running it until SIGTERM.

The roles themselves are in :mod:`terminal_fw.roles`, card sessions for UIs in
:mod:`terminal_fw.sessions`, the tap runner in :mod:`terminal_fw.tap`.
"""

from terminal_fw.runtime.service import serve
from terminal_fw.runtime.settings import (
    ROLES,
    RuntimeSettings,
    load_chain_keys,
    software_version,
    write_chain_keys,
)
from terminal_fw.runtime.terminal import Runtime

__all__ = ["ROLES", "Runtime", "RuntimeSettings", "load_chain_keys", "serve",
           "software_version", "write_chain_keys"]
