"""Named points where a test can cut the power (SIGKILL) of a running terminal.

``ONECARD_FAILPOINT=<name>`` in the environment makes the process kill itself the
first time it reaches ``<name>``; ``<name>:<n>`` the n-th time. Nothing happens when the
variable is unset, which is always the case in production. This is how the crash tests
prove that a power cut at each step of a tap loses or doubles nothing.
"""

from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}


def failpoint(name: str) -> None:
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
