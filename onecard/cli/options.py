"""Option types and options that several command groups share.

Every number an operator can type is bounded (click's ranges, and :class:`BoundedFloat`
for seconds, which refuses NaN and infinities), every date is checked to lie between
1970 and the year 9999, and a database URL HQ cannot use is a usage error before
anything is opened.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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


# --- who runs a command that changes data ----------------------------------------------

def cli_origin() -> str:
    """Where a CLI action comes from, for the audit log (``cli <user>@<host>``)."""
    import socket

    return f"cli {os.environ.get('USER', 'root')}@{socket.gethostname()}"[:128]


def current_actor(db: str, engine=None):
    """The signed-in operator running this command, as an Actor (role and scope).

    From ``ONECARD_TOKEN`` (an API token ``oct_...`` or a session ``ocs_...``), else the
    session ``onecard hq login`` stored for this database. Refused (a ClickException,
    exit 1) when nobody is signed in or the session expired."""
    from hq_server.clock import system_clock
    from hq_server.db.engine import open_engine
    from hq_server.operators.api_tokens import PREFIX as API_TOKEN
    from hq_server.operators.api_tokens import actor_of_token
    from hq_server.operators.errors import AuthenticationFailed
    from hq_server.operators.sessions import resume_session
    from onecard.cli.session_file import stored_token

    token = os.environ.get("ONECARD_TOKEN") or stored_token(db)
    if not token:
        raise click.ClickException("sign in first: onecard hq login (or set ONECARD_TOKEN)")
    engine = engine or open_engine(db)
    try:
        if token.startswith(API_TOKEN):
            return actor_of_token(engine, token, cli_origin(), system_clock())
        return resume_session(engine, token, ("cli",), cli_origin(), system_clock())[0]
    except AuthenticationFailed as exc:
        raise click.ClickException(f"{exc}: onecard hq login") from None


def actor_option(command):
    """Give a command that changes data the signed-in operator as ``actor``.

    Put it under ``@db_option`` (the command needs ``db``)::

        @click.command("denylist") @db_option @actor_option
        def hq_denylist(db, actor, ...): authorise(actor, "cards.write", place) ...

    The command then acts as that operator, authorised by permission and scope through
    the same services as the API."""
    import functools

    @functools.wraps(command)
    def with_actor(*args, **kwargs):
        return command(*args, actor=current_actor(kwargs["db"]), **kwargs)

    return with_actor


def authorised(actor, permission: str, place=None) -> None:
    """``authorise`` for the CLI: a refusal is one line and exit 1, never a traceback;
    out of scope reads as not found."""
    from hq_server.operators.access import Forbidden, NotVisible, authorise

    try:
        authorise(actor, permission, place)
    except Forbidden as exc:
        raise click.ClickException(str(exc)) from None
    except NotVisible:
        raise click.ClickException("not found") from None


@contextlib.contextmanager
def refusals() -> Iterator[None]:
    """Service refusals as one line and exit 1 (out of scope reads as not found)."""
    from hq_server.api.common import EditConflict
    from hq_server.operators.access import Forbidden, NotVisible
    from hq_server.operators.errors import AuthenticationFailed, OperatorError, SignInThrottled

    try:
        yield
    except NotVisible:
        raise click.ClickException("not found") from None
    except EditConflict as exc:
        raise click.ClickException(f"{exc}; show it again and retry") from None
    except (Forbidden, OperatorError, AuthenticationFailed, SignInThrottled) as exc:
        raise click.ClickException(str(exc)) from None


def each_page(fetch: Callable[[str | None, int], Any], limit: int | None = None) -> Iterator[Any]:
    """Every item of a cursor-paginated list (``fetch(cursor, n)`` answers a page with
    ``items`` and ``next_cursor``), at most ``limit`` of them, 200 a page."""
    cursor, shown = None, 0
    while limit is None or shown < limit:
        page = fetch(cursor, 200 if limit is None else min(200, limit - shown))
        yield from page.items
        shown += len(page.items)
        if page.next_cursor is None:
            return
        cursor = page.next_cursor
