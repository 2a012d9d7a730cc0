"""HQ's one clock: the time, in epoch milliseconds, as a value passed in.

Rules take ``now_ms`` (or a :data:`Clock`) as an argument so a test can say what time it
is; only the outer edge of HQ (the processes, the CLI, the API) reads the real clock,
through :func:`system_clock`, the single place that does.
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: Something that says what time it is now, in epoch milliseconds.
Clock = Callable[[], int]


def system_clock() -> int:
    """The machine's wall clock, in epoch milliseconds."""
    return int(time.time() * 1000)
