"""Option types and options that several command groups share.

Every number an operator can type is bounded (click's ranges, and :class:`BoundedFloat`
for seconds, which refuses NaN and infinities), every date is checked to lie between
1970 and the year 9999, and a database URL HQ cannot use is a usage error before
anything is opened.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import click

DEFAULT_HQ_DB = "sqlite:///onecard-hq.db"

#: The latest moment a date option takes: 9999-12-31T23:59:59.999Z in epoch ms.
MAX_EPOCH_MS = 253_402_300_799_999
#: The most bytes a JSON document given on the command line may have.
MAX_DOCUMENT_BYTES = 1024 * 1024

PORT = click.IntRange(1, 65535)

_EPOCH_MS = re.compile(r"[0-9]{1,15}")


class BoundedFloat(click.ParamType):
    """A finite number of seconds (or hours, or a rate) within ``[low, high]``; click's
    FloatRange lets NaN through, and ``inf`` or ``1e308`` would overflow a timedelta."""

    name = "seconds"

    def __init__(self, low: float, high: float, *, low_open: bool = False) -> None:
        self.low, self.high, self.low_open = low, high, low_open

    def convert(self, value, param, ctx) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        below = number <= self.low if self.low_open else number < self.low
        if not math.isfinite(number) or below or number > self.high:
            bracket = "(" if self.low_open else "["
            self.fail(f"{value!r} is not in the range {bracket}{self.low:g}, {self.high:g}]",
                      param, ctx)
        return number


def when_ms(text: str, param: str | None = None) -> int:
    """An ISO date/time (UTC unless it says otherwise) or epoch milliseconds, between
    1970 and the year 9999; anything else is a usage error naming ``param``."""
    from datetime import UTC, datetime

    def bad(why: str) -> click.BadParameter:
        return click.BadParameter(f"{why}: {text[:40]!r} (e.g. 2026-11-01 or epoch ms)",
                                  param_hint=param)

    if _EPOCH_MS.fullmatch(text):
        ms = int(text)
    elif text.isascii() and text[:1].isdigit():
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            raise bad("not a date or time") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        ms = int(when.timestamp() * 1000)
    else:
        raise bad("not a date or time")
    if not 0 <= ms <= MAX_EPOCH_MS:
        raise bad("not between 1970 and the year 9999")
    return ms


def optional_when_ms(text: str | None, param: str) -> int | None:
    return None if text is None else when_ms(text, param)


def _database_url(ctx, param, url: str) -> str:
    """A usage error, before anything is opened, for a URL HQ cannot use at all."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise click.BadParameter(f"{url[:60]!r} is not a database URL (sqlite:///path.db "
                                 "or postgresql+psycopg://...)", ctx, param) from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise click.BadParameter(f"HQ runs on SQLite or PostgreSQL, not {parsed.drivername}",
                                 ctx, param)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        folder = Path(parsed.database).parent
        if not folder.is_dir():
            raise click.BadParameter(f"folder {folder} does not exist", ctx, param)
    return url


db_option = click.option(
    "--db", default=lambda: os.environ.get("ONECARD_HQ_DB", DEFAULT_HQ_DB), show_default=DEFAULT_HQ_DB,
    callback=_database_url,
    help="HQ database URL: sqlite:///path.db or postgresql+psycopg://... (env ONECARD_HQ_DB).",
)

site_option = click.option(
    "--site", "site_root", type=click.Path(path_type=Path), required=True,
    default=lambda: os.environ.get("ONECARD_SITE"),
    help="Folder made by `onecard broker init` (env ONECARD_SITE).")


def operator_name() -> str:
    """Who runs this command, as HQ records it (``cli:<user>``)."""
    return f"cli:{os.environ.get('USER', 'root')}"


operator_option = click.option(
    "--operator", "operator", required=True, envvar="ONECARD_OPERATOR",
    help="The HQ operator you act as (env ONECARD_OPERATOR); their role and scope decide "
         "what you may do, and the audit log names them.")


def cli_actor(engine, name: str):
    """The :class:`~hq_server.operators.access.Actor` a command acts as: the named active
    operator, with their role and scope (an operator of the ``admin`` role of old is an
    HQ administrator). The operators work makes the command line log in; until then the
    name must be an active operator of this HQ."""
    from sqlalchemy import select

    from hq_server.db.tables import operators
    from hq_server.operators.access import Actor, Level, Scope

    with engine.connect() as conn:
        row = conn.execute(select(operators).where(operators.c.username == name)
                           ).mappings().first()
    if row is None or row["status"] != "active":
        raise click.UsageError(f"no active operator {name[:64]!r} in this HQ")
    role = {"admin": "hq_admin"}.get(row["role"], row["role"])
    scope_text = row.get("scope") if hasattr(row, "get") else None
    scope = Scope.parse(scope_text) if scope_text else Scope(Level.CHAIN)
    return Actor(row["username"], role, scope, f"cli {operator_name()}")
