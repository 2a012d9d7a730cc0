"""Each store's terminal config as HQ holds it: what a new terminal starts with.

A terminal serves nothing before it has a config (products, tariffs, opening hours, the
gate's group). HQ keeps one versioned document per store; the enrolment answer carries
it, so a terminal takes taps as soon as it is enrolled, and ``hq push-config --store``
records a new version here and sends it to every terminal of the store. The document is
validated with the parser the terminals use before it is stored: a document a terminal
would refuse never becomes a store's config.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine

from hq_server.clock import system_clock
from hq_server.db.tables import devices, store_configs
from protocol.terminal_config import ConfigError, parse_config


class StoreConfigError(ValueError):
    """A store config refused: invalid, or not newer than the one HQ holds."""


def set_store_config(engine: Engine, store: str, document: dict[str, Any], actor: str,
                     now_ms: int | None = None) -> int:
    """Make ``document`` the store's config; returns its version.

    The version must be higher than the store's current one: terminals ignore a version
    they already run, so an equal or older number would silently change nothing.
    """
    try:
        config = parse_config(document)
    except ConfigError as exc:
        raise StoreConfigError(str(exc)) from None
    now_ms = system_clock() if now_ms is None else now_ms
    text = json.dumps(config.document, sort_keys=True)
    with engine.begin() as conn:
        current = conn.execute(select(store_configs.c.version)
                               .where(store_configs.c.store == store)).scalar()
        if current is not None and config.version <= current:
            raise StoreConfigError(f"store {store} already runs config version {current}; "
                                   f"give the new document a higher version")
        values = {"version": config.version, "document": text, "updated_by": actor[:64],
                  "updated_at_ms": now_ms}
        if current is None:
            conn.execute(insert(store_configs).values(store=store, **values))
        else:
            conn.execute(update(store_configs).where(store_configs.c.store == store)
                         .values(**values))
    return config.version


def store_config(engine: Engine, store: str) -> dict[str, Any] | None:
    """The store's current config document, or None when HQ holds none for it."""
    with engine.connect() as conn:
        text = conn.execute(select(store_configs.c.document)
                            .where(store_configs.c.store == store)).scalar()
    return None if text is None else json.loads(text)


def store_devices(engine: Engine, store: str) -> list[str]:
    """The active terminals of a store, to send its config to."""
    with engine.connect() as conn:
        return [d for (d,) in conn.execute(
            select(devices.c.device_id).where((devices.c.store == store)
                                              & (devices.c.status == "active"))
            .order_by(devices.c.device_id))]
