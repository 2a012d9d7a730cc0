"""The chain (连锁): regions (大区) and stores (单店) from the command line.

Each command calls :mod:`hq_server.chain.stores` as the operator given with
``--operator``; refusals print their reason and exit 1.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from onecard.cli.options import MAX_DOCUMENT_BYTES, actor_option, db_option, each_page

#: The version an edit is based on (HQ stores it in a 32-bit integer).
VERSION = click.IntRange(1, 2**31 - 1)


def _refusals(run: Callable[[], Any]) -> Any:
    from hq_server.api.common import EditConflict
    from hq_server.chain.errors import ChainError, ChainNotFound
    from hq_server.operators.access import Forbidden, NotVisible

    try:
        return run()
    except (ChainError, Forbidden, EditConflict) as exc:
        raise click.ClickException(str(exc)) from None
    except (ChainNotFound, NotVisible) as exc:
        raise click.ClickException(str(exc) if isinstance(exc, ChainNotFound)
                                   else "no such store or region") from None


def _hours(text: str | None) -> dict[str, Any] | None:
    """``--hours`` is JSON, or @FILE holding JSON."""
    if text is None:
        return None
    if text.startswith("@"):
        try:
            with open(text[1:], "rb") as f:
                text = f.read(MAX_DOCUMENT_BYTES + 1).decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise click.BadParameter(f"cannot read {text[1:]!r}: {exc}",
                                     param_hint="--hours") from None
    try:
        value = json.loads(text)
    except ValueError:
        raise click.BadParameter('not JSON, e.g. \'{"mon": ["09:00-21:00"]}\'',
                                 param_hint="--hours") from None
    if not isinstance(value, dict):
        raise click.BadParameter("must be a JSON object of weekdays and holidays",
                                 param_hint="--hours")
    return value


def _show_store(s: dict[str, Any]) -> None:
    click.echo(f"{s['store_id']}  {s['name']}")
    click.echo(f"  region   {s['region'] or '-'}")
    click.echo(f"  status   {s['status']}")
    click.echo(f"  address  {s['address'] or '-'}")
    click.echo(f"  phone    {s['phone'] or '-'}")
    click.echo(f"  hours    {json.dumps(s['opening_hours'], ensure_ascii=False)}")
    click.echo(f"  version  {s['version']}")
    for t in s.get("terminals", []):
        click.echo(f"  terminal {t['device_id']} ({t['role']}, {t['status']})")


def _now() -> int:
    from hq_server.clock import system_clock

    return system_clock()


# --- regions -----------------------------------------------------------------------------

@click.group("region")
def hq_region() -> None:
    """Regions (大区): groups of stores a region manager looks after."""


@hq_region.command("add")
@db_option
@actor_option
@click.argument("region_id")
@click.option("--name", required=True, help="The region's name, e.g. 华东.")
def region_add(db: str, actor, region_id: str, name: str) -> None:
    """Add a region."""
    from hq_server.chain.stores import create_region
    from hq_server.db.engine import open_engine

    r = _refusals(lambda: create_region(open_engine(db), actor, region_id, name,
                                        _now()))
    click.echo(f"region {r['region_id']} added (version {r['version']})")


@hq_region.command("edit")
@db_option
@actor_option
@click.argument("region_id")
@click.option("--version", type=VERSION, required=True,
              help="The version you are editing (from `hq region list`).")
@click.option("--name", default=None)
def region_edit(db: str, actor, region_id: str, version: int, name: str | None) -> None:
    """Rename a region."""
    from hq_server.chain.stores import edit_region
    from hq_server.db.engine import open_engine

    r = _refusals(lambda: edit_region(open_engine(db), actor, region_id,
                                      version=version, name=name, now_ms=_now()))
    click.echo(f"region {r['region_id']} is now version {r['version']}")


@hq_region.command("close")
@db_option
@actor_option
@click.argument("region_id")
@click.option("--version", type=VERSION, required=True)
def region_close(db: str, actor, region_id: str, version: int) -> None:
    """Close a region (its stores must be closed or moved first)."""
    from hq_server.chain.stores import edit_region
    from hq_server.db.engine import open_engine

    _refusals(lambda: edit_region(open_engine(db), actor, region_id,
                                  version=version, status="closed", now_ms=_now()))
    click.echo(f"region {region_id} closed")


@hq_region.command("list")
@db_option
@actor_option
def region_list(db: str, actor) -> None:
    """The regions you may see."""
    from hq_server.chain.stores import list_regions
    from hq_server.db.engine import open_engine

    found = _refusals(lambda: list_regions(open_engine(db), actor))
    for r in found:
        click.echo(f"{r['region_id']:<16} {r['status']:<7} v{r['version']:<4} {r['name']}")
    click.echo(f"{len(found)} regions")


# --- stores ------------------------------------------------------------------------------

@click.group("store")
def hq_store() -> None:
    """Stores (单店, venues): name, region, address, phone, opening hours, terminals."""


@hq_store.command("add")
@db_option
@actor_option
@click.argument("store_id")
@click.option("--name", required=True)
@click.option("--region", default=None, help="The region it belongs to.")
@click.option("--address", default="")
@click.option("--phone", default="")
@click.option("--hours", default=None,
              help='Opening hours as JSON or @FILE: {"mon": ["09:00-21:00"], ..., '
                   '"holidays": {"2026-10-01": []}}.')
def store_add(db: str, actor, store_id: str, name: str, region: str | None,
              address: str, phone: str, hours: str | None) -> None:
    """Add a store, so terminals can be registered and enrolled for it."""
    from hq_server.chain.stores import create_store
    from hq_server.db.engine import open_engine

    opening = _hours(hours)
    s = _refusals(lambda: create_store(open_engine(db), actor, store_id, name,
                                       region=region, address=address, phone=phone,
                                       opening_hours=opening, now_ms=_now()))
    click.echo(f"store {s['store_id']} added (version {s['version']})")


@hq_store.command("edit")
@db_option
@actor_option
@click.argument("store_id")
@click.option("--version", type=VERSION, required=True,
              help="The version you are editing (from `hq store show`).")
@click.option("--name", default=None)
@click.option("--region", default=None)
@click.option("--address", default=None)
@click.option("--phone", default=None)
@click.option("--hours", default=None, help="Opening hours as JSON or @FILE.")
def store_edit(db: str, actor, store_id: str, version: int, name: str | None,
               region: str | None, address: str | None, phone: str | None,
               hours: str | None) -> None:
    """Change a store; refused when someone changed it since VERSION."""
    from hq_server.chain.stores import edit_store
    from hq_server.db.engine import open_engine

    changes: dict[str, Any] = {k: v for k, v in (("name", name), ("region", region),
                                                 ("address", address), ("phone", phone))
                               if v is not None}
    if hours is not None:
        changes["opening_hours"] = _hours(hours)
    if not changes:
        raise click.UsageError("nothing to change: give --name, --region, --address, "
                               "--phone or --hours")
    s = _refusals(lambda: edit_store(open_engine(db), actor, store_id, changes,
                                     version=version, now_ms=_now()))
    click.echo(f"store {s['store_id']} is now version {s['version']}")


@hq_store.command("close")
@db_option
@actor_option
@click.argument("store_id")
@click.option("--version", type=VERSION, required=True)
def store_close(db: str, actor, store_id: str, version: int) -> None:
    """Close a store (闭店): no new terminals; its records and cards stay."""
    from hq_server.chain.stores import close_store
    from hq_server.db.engine import open_engine

    _refusals(lambda: close_store(open_engine(db), actor, store_id,
                                  version=version, now_ms=_now()))
    click.echo(f"store {store_id} closed")


@hq_store.command("list")
@db_option
@actor_option
@click.option("--region", default=None)
@click.option("--status", type=click.Choice(["active", "closed"]), default=None)
def store_list(db: str, actor, region: str | None, status: str | None) -> None:
    """The stores you may see."""
    from hq_server.chain.stores import list_stores
    from hq_server.db.engine import open_engine

    engine, count = open_engine(db), 0
    pages = each_page(lambda cursor, n: _refusals(lambda: list_stores(
        engine, actor, region=region, status=status, cursor=cursor, limit=n)))
    for s in pages:
        click.echo(f"{s['store_id']:<16} {s['region'] or '-':<12} {s['status']:<7} "
                   f"v{s['version']:<4} {s['name']}")
        count += 1
    click.echo(f"{count} stores")


@hq_store.command("show")
@db_option
@actor_option
@click.argument("store_id")
def store_show(db: str, actor, store_id: str) -> None:
    """One store with its terminals."""
    from hq_server.chain.stores import get_store
    from hq_server.db.engine import open_engine

    _show_store(_refusals(lambda: get_store(open_engine(db), actor, store_id)))


COMMANDS = [hq_region, hq_store]
