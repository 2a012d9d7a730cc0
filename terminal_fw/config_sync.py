"""Config as a device shadow: HQ's desired version in, the version we run reported back.

A new document is parsed and validated whole (:func:`protocol.terminal_config.parse_config`)
before anything changes; only then is it committed to the local store and swapped in as
one object. A tap takes the current object once at its start, so it runs on one version
from beginning to end. A document that fails validation is refused and reported with the
reason, and the terminal keeps running the version it had. The applied document survives
restarts, so a terminal that boots without a broker still serves with its last config.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

from protocol.fleet import ConfigReport
from protocol.messages import MessageError, load_json
from protocol.terminal_config import EMPTY, ConfigError, TerminalConfig, parse_config
from terminal_fw.local_store import LocalStore

log = logging.getLogger(__name__)


class ConfigSync:
    """The running config, its persistence, and the report of what runs."""

    def __init__(self, store: LocalStore, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self._lock = threading.Lock()
        self.store.execute("CREATE TABLE IF NOT EXISTS config (id INTEGER PRIMARY KEY CHECK (id = 1),"
                           " version INTEGER NOT NULL, document TEXT NOT NULL)")
        self._current = EMPTY
        self._refused: tuple[int, str] = (0, "")
        row = self.store.execute("SELECT document FROM config WHERE id = 1").fetchone()
        if row is not None:
            try:
                self._current = parse_config(json.loads(row[0]))
            except (ConfigError, ValueError) as exc:  # cannot happen unless edited by hand
                log.error("stored config unreadable (%s): running without config", exc)
        self.listeners: list[Callable[[TerminalConfig], None]] = []

    @property
    def current(self) -> TerminalConfig:
        return self._current

    def offer(self, payload: bytes | dict) -> ConfigReport:
        """Apply a desired document if it is newer and valid; return what to report."""
        with self._lock:
            try:
                new = parse_config(payload)
            except ConfigError as exc:
                version = _claimed_version(payload)
                self._refused = (version, str(exc))
                log.warning("config version %s refused: %s (still running %d)", version or "?",
                            exc, self._current.version)
                return self.report()
            if new.version <= self._current.version:
                return self.report()  # the retained copy again, or an older one
            with self.store.transaction() as conn:
                conn.execute("INSERT OR REPLACE INTO config (id, version, document) VALUES (1, ?, ?)",
                             (new.version, json.dumps(new.document, sort_keys=True)))
            self._current = new  # one reference swap: a tap sees the old or the new, whole
            if self._refused[0] <= new.version:
                self._refused = (0, "")
            log.info("config version %d applied", new.version)
        for listener in list(self.listeners):
            listener(new)
        return self.report()

    def report(self) -> ConfigReport:
        return ConfigReport(self._current.version, self._refused[0], self._refused[1],
                            int(self.clock() * 1000))


def _claimed_version(payload: bytes | dict) -> int:
    """The version a refused document says it is, to report; 0 when it says nothing
    readable (read through the same bounded reader, so a hostile document cannot raise)."""
    try:
        data = load_json(payload, "config") if isinstance(payload, (bytes, bytearray)) else payload
    except MessageError:
        return 0
    v = data.get("version") if isinstance(data, dict) else None
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0
