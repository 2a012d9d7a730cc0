"""Supervision of HQ's threads, and the heartbeat that says which parts of HQ are alive.

An HQ process (:class:`~hq_server.process.hq_process.HqProcess`: ``onecard hq run``,
``hq ingest``, ``hq serve-api``) is several threads: paho's network loops, the ingest
pipeline's two stages, the side loop (reconciliation, gap re-requests, the denylist
broadcast), the fleet service and the API. A thread that dies quietly
is the worst failure there is: the process stays up, so systemd restarts nothing, while
records or UID answers stop for every terminal. So every thread runs under a
:class:`Supervisor`:

* a component whose ``run`` raises (or returns while HQ is not stopping) is restarted
  after a short pause, and the reason is logged and kept in its health row;
* a component that dies ``max_restarts`` times within ``window_s`` seconds is not
  restarted again: the process stops with exit code :data:`EXIT_FAILED`, so systemd
  (``Restart=on-failure``) starts it afresh with new connections and state. A crash
  loop means something in the process is broken; restarting one thread again would
  only hide it;
* a component built with ``restart=False`` takes the process down at its first death.

Each supervisor writes one row per component to ``component_health`` every
``beat_every`` seconds: its state, last beat, restarts, last error and progress figures
(backlog, last batch). ``onecard hq status`` and the API's ``GET /health`` run in other
processes and read those rows (:func:`hq_health`): a component whose beat is older than
three intervals is reported dead, whatever its row says, since its process may be gone.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Engine

from hq_server.db.tables import component_health, devices

log = logging.getLogger(__name__)

#: Exit status of a process whose supervisor gave up (EX_SOFTWARE): systemd restarts it.
EXIT_FAILED = 70

#: A beat older than this many intervals means the component (or its process) is gone.
STALE_AFTER_BEATS = 3


@dataclass
class Component:
    """One supervised thread.

    ``run`` does the component's work until ``stop`` is called (by :meth:`Supervisor.stop`)
    and only returns then; ``progress`` gives the figures ``hq status`` shows (queue
    depths, last batch).
    """

    name: str
    run: Callable[[], None]
    restart: bool = True
    progress: Callable[[], dict[str, Any]] | None = None
    stop: Callable[[], None] | None = None


@dataclass
class _State:
    component: Component
    state: str = "starting"  # running / restarting / failed / stopped
    started_at_ms: int = 0
    restarts: int = 0
    last_error: str | None = None
    deaths: deque = field(default_factory=deque)  # monotonic times of recent deaths
    thread: threading.Thread | None = None


class Supervisor:
    def __init__(self, process: str, *, engine: Engine | None = None, beat_every: float = 2.0,
                 max_restarts: int = 5, window_s: float = 60.0, backoff_s: float = 0.5,
                 clock: Callable[[], float] = time.time) -> None:
        """``process`` names this process in the health rows (its MQTT client id, which
        is unique per worker); without ``engine`` nothing is written (library use, tests)."""
        self.process = process[:64]
        self.engine = engine
        self.beat_every = beat_every
        self.max_restarts = max_restarts
        self.window_s = window_s
        self.backoff_s = backoff_s
        self.clock = clock
        self.stopping = threading.Event()
        self.failed = threading.Event()
        self.failure: str | None = None
        self._states: dict[str, _State] = {}
        self._lock = threading.Lock()
        self._beat: threading.Thread | None = None

    def add(self, component: Component) -> None:
        if component.name in self._states:
            raise ValueError(f"component {component.name!r} is already supervised")
        self._states[component.name] = _State(component)
        if self._beat is not None:  # added after start: run it at once
            self._launch(self._states[component.name])

    def start(self) -> Supervisor:
        for state in self._states.values():
            self._launch(state)
        self._beat = threading.Thread(target=self._run_beat, name=f"{self.process}-beat",
                                      daemon=True)
        self._beat.start()
        return self

    def _launch(self, state: _State) -> None:
        state.thread = threading.Thread(target=self._keep, args=(state,),
                                        name=f"hq-{state.component.name}", daemon=True)
        state.thread.start()

    def _keep(self, state: _State) -> None:
        """Run one component; on its death log why, then restart it or give up."""
        c = state.component
        while not self.stopping.is_set():
            state.state, state.started_at_ms = "running", self._now_ms()
            try:
                c.run()
                if self.stopping.is_set():
                    break
                reason = "returned while HQ was running"
                log.error("HQ component %s %s", c.name, reason)
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"[:500]
                log.exception("HQ component %s died: %s", c.name, reason)
            with self._lock:
                state.last_error = reason
                now = time.monotonic()
                state.deaths.append(now)
                while state.deaths and now - state.deaths[0] > self.window_s:
                    state.deaths.popleft()
                if not c.restart or len(state.deaths) > self.max_restarts:
                    state.state = "failed"
                    why = ("does not restart" if not c.restart else
                           f"died {len(state.deaths)} times in {self.window_s:.0f}s")
                    self._fail(f"{c.name} {why}; last: {reason}")
                    return
                state.restarts += 1
                state.state = "restarting"
            log.warning("restarting HQ component %s (restart %d) after: %s", c.name,
                        state.restarts, reason)
            self._write_beat()
            self.stopping.wait(self.backoff_s * min(2 ** (len(state.deaths) - 1), 20))
        state.state = "stopped"

    def _fail(self, reason: str) -> None:
        log.critical("HQ process %s gives up: %s", self.process, reason)
        self.failure = reason
        self.failed.set()

    def stop(self) -> None:
        """End restarts and ask every component to stop (its ``stop`` ends its ``run``)."""
        self.stopping.set()
        for state in self._states.values():
            if state.component.stop is not None:
                try:
                    state.component.stop()
                except Exception:
                    log.exception("stopping HQ component %s failed", state.component.name)

    def join(self, timeout: float = 10.0) -> None:
        for state in self._states.values():
            if state.thread is not None and state.thread is not threading.current_thread():
                state.thread.join(timeout)
        if self._beat is not None:
            self._beat.join(timeout)
        self._write_beat(final=True)

    def wait(self) -> int:
        """Block until :meth:`stop` or a fatal death; the process's exit status."""
        while not (self.stopping.is_set() or self.failed.is_set()):
            self.failed.wait(0.5)
        return EXIT_FAILED if self.failed.is_set() else 0

    # --- health -------------------------------------------------------------------------

    def health(self) -> dict[str, dict[str, Any]]:
        """Each component's state as this process sees it."""
        out = {}
        for name, s in self._states.items():
            try:
                progress = s.component.progress() if s.component.progress else {}
            except Exception as exc:  # a figure we cannot read is not a reason to die
                progress = {"progress_error": f"{type(exc).__name__}: {exc}"[:200]}
            alive = s.state == "running" and s.thread is not None and s.thread.is_alive()
            out[name] = {"state": s.state if alive or s.state != "running" else "dead",
                         "restarts": s.restarts, "last_error": s.last_error,
                         "started_at_ms": s.started_at_ms, "progress": progress}
        return out

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _run_beat(self) -> None:
        while not self.stopping.wait(self.beat_every):
            self._write_beat()

    def _write_beat(self, final: bool = False) -> None:
        """One row per component; a failed write is logged and tried at the next beat
        (the database may be restarting: ``hq status`` then sees the beat age grow)."""
        if self.engine is None:
            return
        now = self._now_ms()
        try:
            with self._lock, self.engine.begin() as conn:
                for name, h in self.health().items():
                    state = "stopped" if final and h["state"] == "running" else h["state"]
                    row = {"state": state, "pid": os.getpid(), "host": socket.gethostname()[:128],
                           "started_at_ms": h["started_at_ms"], "last_beat_ms": now,
                           "beat_every_ms": int(self.beat_every * 1000),
                           "restarts": h["restarts"], "last_error": h["last_error"],
                           "detail": json.dumps(h["progress"], sort_keys=True, default=str)}
                    key = ((component_health.c.process == self.process)
                           & (component_health.c.component == name))
                    if conn.execute(update(component_health).where(key).values(**row)).rowcount == 0:
                        conn.execute(insert(component_health).values(
                            process=self.process, component=name, **row))
        except Exception:
            log.exception("could not write HQ's health rows; trying again at the next beat")


def forget_process(engine: Engine, process: str) -> int:
    """Drop a retired process's health rows (a worker that will not run again)."""
    with engine.begin() as conn:
        return conn.execute(delete(component_health).where(
            component_health.c.process == process)).rowcount


def hq_health(engine: Engine, now_ms: int | None = None) -> dict[str, Any]:
    """Which parts of HQ are alive and how far behind they are, from the health rows.

    ``ok`` is true when at least one component has reported and every component that
    has not been stopped cleanly is running with a fresh beat. ``gaps_pending`` counts
    records devices numbered that HQ has not got contiguously (the re-request backlog).
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    with engine.connect() as conn:
        rows = conn.execute(select(component_health).order_by(
            component_health.c.process, component_health.c.component)).mappings().all()
        gaps = conn.execute(select(
            func.count(), func.coalesce(func.sum(devices.c.highest_seen
                                                 - devices.c.contiguous_through), 0))
            .where(devices.c.highest_seen > devices.c.contiguous_through)).one()
    components = []
    for r in rows:
        age = now_ms - r["last_beat_ms"]
        fresh = age <= STALE_AFTER_BEATS * max(r["beat_every_ms"], 1) + 1000
        if r["state"] == "stopped":
            status = "stopped"
        elif r["state"] == "running" and fresh:
            status = "alive"
        elif r["state"] == "restarting" and fresh:
            status = "restarting"
        else:
            status = "dead" if r["state"] != "failed" else "failed"
        try:
            detail = json.loads(r["detail"] or "{}")
        except ValueError:
            detail = {}
        components.append({"process": r["process"], "component": r["component"],
                           "status": status, "state": r["state"], "beat_age_ms": age,
                           "restarts": r["restarts"], "last_error": r["last_error"],
                           "pid": r["pid"], "host": r["host"], "progress": detail})
    live = [c for c in components if c["status"] != "stopped"]
    ok = bool(live) and all(c["status"] == "alive" for c in live)
    return {"ok": ok, "components": components,
            "gaps_pending": {"devices": int(gaps[0]), "records": int(gaps[1])}}
