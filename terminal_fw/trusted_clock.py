"""A terminal's time: HQ's clock when it could ask, never earlier than its last record.

A Raspberry Pi has no battery-backed clock: after a power cut it boots at the time the
image was built (or 1970) until NTP answers, and a venue's network may have no NTP at
all. A record signed with that time would be judged by the wrong tariff, the wrong day
and the wrong opening hours, and it could sort before records already sent.

So the terminal keeps two things:

* an **offset** from HQ, learnt over the authenticated channel (the enrolment answer and
  each start's check-in, both over HQ's pinned TLS API): ``now = system + offset``;
* a **floor** on disk (``clock.json`` in the data folder): the latest time it has used,
  written atomically, so that a reboot that loses time is noticed.

:meth:`TrustedClock.check` refuses (:class:`ClockWentBack`) while ``now`` is behind the
floor: the runtime's guard turns that into a refused tap, until HQ answers a check-in
and the time is right again. A clock ahead of the floor is taken as it is (an offline
terminal after a short power cut keeps serving: the floor is what is known for sure).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

CLOCK_FILE = "clock.json"
#: Write the floor again once time has moved this much past it (bounded SD-card wear).
FLOOR_STEP_S = 1.0


class ClockWentBack(RuntimeError):
    """The clock is behind a time this terminal already used: it must not sign."""


class TrustedClock:
    """``now()`` for everything the terminal stamps; see the module docstring."""

    def __init__(self, folder: Path, system: Callable[[], float] = time.time) -> None:
        self.path = Path(folder) / CLOCK_FILE
        self.system = system
        self._lock = threading.Lock()
        self.offset_s = 0.0
        self.floor_s = 0.0
        self.synced = False  # HQ's time was learnt since this start
        try:
            data = json.loads(self.path.read_text())
            # The offset is not taken back: it belongs to the boot it was learnt in.
            self.floor_s = float(data["floor_s"])
        except FileNotFoundError:
            pass
        except (ValueError, TypeError, KeyError) as exc:
            # A torn or edited file: keep no floor rather than refuse forever; say so.
            log.error("clock floor %s unreadable (%s): starting without a floor", self.path, exc)

    def now(self) -> float:
        return self.system() + self.offset_s

    def set_from_hq(self, hq_time_ms: int) -> None:
        """Take HQ's time (from an answer over the authenticated channel)."""
        with self._lock:
            self.offset_s = hq_time_ms / 1000 - self.system()
            self.synced = True
            now = self.now()
            if now < self.floor_s:
                # HQ is the authority: a floor from a clock that ran fast is lowered.
                log.warning("HQ's time is %.1f s behind the stored floor: floor lowered",
                            self.floor_s - now)
                self.floor_s = now
            self._write(max(self.floor_s, now))

    def check(self) -> float:
        """The time now, if it is not behind the floor; else ClockWentBack. Moves the
        floor forward (on disk) as time passes."""
        with self._lock:
            now = self.now()
            if now < self.floor_s:
                raise ClockWentBack(
                    f"clock went backwards: {self.floor_s - now:.1f} s behind the last "
                    "recorded time; waiting for HQ's time")
            if now - self.floor_s >= FLOOR_STEP_S:
                self._write(now)
            return now

    def _write(self, floor_s: float) -> None:
        self.floor_s = floor_s
        tmp = self.path.with_suffix(".tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w") as f:
            json.dump({"floor_s": floor_s, "offset_s": self.offset_s}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
