"""Sending a config to one terminal or to every terminal of a store, and what came of it.

``hq push-config`` used to print the terminal's raw report (``{"error": "", ...}`` on
success); :class:`PushOutcome` says it in the operator's terms: applied, refused (with
the reason) or pending (offline terminals take the retained config when they connect).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

from hq_server.fleet.service import FleetService
from hq_server.fleet.store_config import StoreConfigError, set_store_config, store_devices
from protocol.terminal_config import ConfigError, parse_config


class PushRefused(ValueError):
    """The document was refused before anything was sent."""


@dataclass(frozen=True)
class PushOutcome:
    device_id: str
    version: int  # the version sent
    running: int | None  # the version the terminal reports it runs (None: no report yet)
    error: str = ""

    @property
    def state(self) -> str:
        if self.running is None:
            return "pending"
        return "applied" if self.running >= self.version else "refused"

    @property
    def refused(self) -> bool:
        return self.state == "refused"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"device_id": self.device_id, "version": self.version,
                               "state": self.state, "running": self.running}
        if self.refused:
            out["error"] = self.error
        return out


def push_config(fleet: FleetService, document: dict[str, Any], *, device_id: str | None = None,
                store: str | None = None, engine: Engine | None = None, actor: str = "",
                wait_s: float = 15.0) -> list[PushOutcome]:
    """Publish ``document`` to a device, or record it as ``store``'s config (``engine``
    needed) and publish it to each of the store's active terminals."""
    try:
        version = parse_config(document).version
    except ConfigError as exc:
        raise PushRefused(f"config refused before sending: {exc}") from None
    if store is not None:
        if engine is None:
            raise ValueError("a store's config needs HQ's database")
        try:
            set_store_config(engine, store, document, actor)
        except StoreConfigError as exc:
            raise PushRefused(f"config refused before sending: {exc}") from None
        targets = store_devices(engine, store)
    elif device_id is not None:
        targets = [device_id]
    else:
        raise ValueError("give a device or a store")
    for target in targets:
        fleet.publish_config(target, document)
    outcomes = []
    for target in targets:
        report = fleet.wait_for_report(target, version, wait_s) if wait_s else None
        outcomes.append(PushOutcome(target, version, None if report is None else report.version,
                                    "" if report is None else report.error))
    return outcomes
