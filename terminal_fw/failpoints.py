"""Named points where a test can cut the power (SIGKILL) of a running terminal.

``ONECARD_FAILPOINT=<name>`` in the environment makes the process kill itself the
first time it reaches ``<name>``; ``<name>:<n>`` the n-th time. Nothing happens when the
variable is unset, which is always the case in production. This is how the crash tests
prove that a power cut at each step of a tap loses or doubles nothing.

In one process, :func:`set_handler` installs a function called with each failpoint's
name: the deterministic simulator (``tests/sim``) raises its power cut from there, at
every named point of every tap, without a process to kill.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

_counts: dict[str, int] = {}
_handler: Callable[[str], None] | None = None


def set_handler(handler: Callable[[str], None] | None) -> Callable[[str], None] | None:
    """Call ``handler(name)`` at every failpoint from now on (None: stop); returns the
    handler it replaces. An exception the handler raises comes out of the failpoint."""
    global _handler
    previous, _handler = _handler, handler
    return previous


def failpoint(name: str) -> None:
    if _handler is not None:
        _handler(name)
    spec = os.environ.get("ONECARD_FAILPOINT")
    if not spec:
        return
    target, _, nth = spec.rpartition(":")
    if not nth.isdigit():
        target, nth = spec, "1"
    if target != name:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
