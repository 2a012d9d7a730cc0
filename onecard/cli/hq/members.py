"""Members (会员资料) from the command line: ``onecard hq member add|show|find|edit|delete|
restore|merge|import|export`` and ``onecard hq member-field add|list|retire``.

Each command acts as the signed-in operator (``onecard hq login``) and calls the same library
functions as the API (:mod:`hq_server.members.service`, :mod:`hq_server.members.transfer`),
so it is authorised and audited the same way.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from onecard.cli.options import current_actor, db_option

#: The profile fields as options (--name, --mobile, --home-address, ...).
_PROFILE = [
    ("category", "会员类别"), ("name", "姓名"), ("name_on_card", "卡面姓名"),
    ("gender", "male, female or other (男/女)"), ("nationality", "国籍"),
    ("birthday", "YYYY-MM-DD"), ("id_number", "证件号码"),
    ("mobile", "mainland (13800138000) or +country code"), ("home_phone", "住宅电话"),
    ("home_address", "住宅地址"), ("home_postcode", "住宅邮编"),
    ("billing_address", "账单地址"), ("billing_postcode", "账单邮编"), ("email", "电子邮件"),
    ("company", "公司"), ("title", "职务"), ("company_phone", "公司电话"),
    ("company_address", "公司地址"), ("join_date", "入会日期 YYYY-MM-DD (default today)"),
    ("referrer_id", "推荐人: the referring member's number"),
    ("vip_name", "最重要的人"), ("vip_birthday", "最重要的人生日"), ("vip_address", "最重要的人地址"),
    ("wedding_anniversary", "结婚纪念日"), ("habits", "消费习性"), ("remark1", "备注一"),
    ("remark2", "备注二"), ("remark3", "备注三"),
    ("store_id", "登记门店: the registering store (default: yours)"),
]


def _profile_options(func):
    for name, hint in reversed(_PROFILE):
        func = click.option(f"--{name.replace('_', '-')}", name, default=None, help=hint)(func)
    return click.option("--custom", "custom", multiple=True, metavar="KEY=VALUE",
                        help="A custom field's value; repeat for several.")(func)


def _custom(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair[:40]!r} is not KEY=VALUE", param_hint="--custom")
        out[key.strip()] = value
    return out


@contextmanager
def _refusals():
    """Every refusal of the members domain as a one-line (or per-field) error."""
    from hq_server.api.common import EditConflict
    from hq_server.members.errors import (
        DuplicateMobile,
        FieldDefinitionInvalid,
        ImportRefused,
        MemberInvalid,
        MemberStateConflict,
        MergeRefused,
    )
    from hq_server.operators.access import Forbidden, NotVisible

    try:
        yield
    except MemberInvalid as exc:
        raise click.ClickException("refused:\n" + "\n".join(
            f"  {e.field}: {e.reason}" for e in exc.errors)) from None
    except NotVisible:
        raise click.ClickException("no such member") from None
    except EditConflict as exc:
        raise click.ClickException(
            f"changed by someone else meanwhile ({', '.join(exc.changed)}); it is now "
            f"version {exc.current.get('version')}: look again with `show`") from None
    except ImportRefused as exc:
        if exc.report is not None:
            _print_report(exc.report.as_dict())
        raise click.ClickException(str(exc)) from None
    except (DuplicateMobile, MemberStateConflict, MergeRefused, FieldDefinitionInvalid,
            Forbidden) as exc:
        raise click.ClickException(str(exc)) from None


def _open(db: str):
    """The database and the signed-in operator (``onecard hq login`` or ONECARD_TOKEN)."""
    from hq_server.db.engine import open_engine

    engine = open_engine(db)
    return engine, current_actor(db, engine)


def _now() -> int:
    from hq_server.clock import system_clock

    return system_clock()


def _show(member: dict[str, Any]) -> None:
    for key, value in member.items():
        if key in ("cards", "transactions", "activity", "custom"):
            continue
        if value not in (None, ""):
            click.echo(f"{key:<20} {value}")
    for key, value in (member.get("custom") or {}).items():
        click.echo(f"{'custom.' + key:<20} {value}")
    if "activity" in member:
        a = member["activity"]
        click.echo(f"{'visits':<20} {a['visits']}   spend {a['spend_fen'] / 100:.2f}   "
                   f"average {a['average_spend_fen'] / 100:.2f}   last visit "
                   f"{a['last_visit_ms'] or '-'}")
    for card in member.get("cards") or []:
        click.echo(f"card {card['card_id']:<16} {card['state'] or '':<9} "
                   f"{card['product'] or '':<16} {card['store_id'] or ''}")
    for t in member.get("transactions") or []:
        click.echo(f"  {t['posted_at_ms']} {t['kind']:<11} {t['card_id']:<16} "
                   f"purse {t['purse_fen']:+d} spend {t['spend_fen']:+d} at {t['store_id']}")


@click.group("member")
def hq_member() -> None:
    """Members (会员资料): register, find (by phone, card, name, pinyin), edit, delete and
    restore, merge, import and export."""


@hq_member.command("add")
@db_option
@click.option("--member-id", default=None, help="The member number (default: the next M…).")
@_profile_options
def member_add(db: str, member_id: str | None, custom: tuple[str, ...],
               **profile: str | None) -> None:
    """Register a member; prints the member as stored."""
    from hq_server.members.service import create_member

    data: dict[str, Any] = {k: v for k, v in profile.items() if v is not None}
    data["custom"] = _custom(custom)
    if member_id:
        data["member_id"] = member_id
    engine, actor = _open(db)
    with _refusals():
        _show(create_member(actor, engine, data, _now()))


@hq_member.command("show")
@db_option
@click.argument("member_id")
@click.option("--json", "as_json", is_flag=True, help="Print the member page as JSON.")
def member_show(db: str, member_id: str, as_json: bool) -> None:
    """The member page: profile, cards, visits and spend, last 20 transactions."""
    from hq_server.members.service import get_member

    engine, actor = _open(db)
    with _refusals():
        member = get_member(actor, engine, member_id)
    if as_json:
        click.echo(json.dumps(member, ensure_ascii=False, indent=2))
    else:
        _show(member)


@hq_member.command("find")
@db_option
@click.argument("text", required=False)
@click.option("--mobile", default=None, help="Phone instead of card: mobile or its prefix.")
@click.option("--card", default=None, help="Card number.")
@click.option("--name", default=None, help="Name, or its pinyin or initials (zs: 张三).")
@click.option("--id-number", default=None)
@click.option("--store", "store_id", default=None)
@click.option("--category", default=None)
@click.option("--status", type=click.Choice(["active", "deleted", "merged", "any"]),
              default="active", show_default=True)
@click.option("--joined-from", default=None, help="YYYY-MM-DD")
@click.option("--joined-to", default=None, help="YYYY-MM-DD")
@click.option("--birth-month", type=click.IntRange(1, 12), default=None)
@click.option("--spend-min", "spend_min_fen", type=click.IntRange(0, 2**62), default=None,
              help="fen")
@click.option("--spend-max", "spend_max_fen", type=click.IntRange(0, 2**62), default=None,
              help="fen")
@click.option("--visits-min", type=click.IntRange(0, 2**31 - 1), default=None)
@click.option("--visits-max", type=click.IntRange(0, 2**31 - 1), default=None)
@click.option("--limit", type=click.IntRange(1, 200), default=50, show_default=True)
def member_find(db: str, text: str | None, card: str | None,
                limit: int, **filters: Any) -> None:
    """Find members: TEXT is a card number, mobile (prefix), name, pinyin initials, ID
    or member number; options narrow it (segments by spend, visits, join date, birthday
    month)."""
    from hq_server.members.service import MemberQuery, find_members

    engine, actor = _open(db)
    with _refusals():
        page = find_members(actor, engine, MemberQuery(text=text, card_id=card, **filters),
                            limit=limit)
    for m in page["items"]:
        cards = ",".join(c["card_id"] for c in m["cards"]) or "-"
        click.echo(f"{m['member_id']:<12} {m['name']:<16} {m['mobile'] or '-':<16} "
                   f"{m['store_id'] or 'HQ':<8} {m['status']:<8} cards {cards}")
    click.echo(f"{len(page['items'])} members" + (" (more: narrow the search)"
                                                  if page["next_cursor"] else ""))


@hq_member.command("edit")
@db_option
@click.argument("member_id")
@click.option("--version", type=click.IntRange(1, 2**31 - 1), default=None,
              help="The version you looked at (from show); refused if it changed since. "
                   "Without it the edit applies to the member as it is now.")
@_profile_options
def member_edit(db: str, member_id: str, version: int | None,
                custom: tuple[str, ...], **profile: str | None) -> None:
    """Change the fields given (an empty value clears a field)."""
    from hq_server.members.service import get_member, update_member

    changes: dict[str, Any] = {k: v for k, v in profile.items() if v is not None}
    if custom:
        changes["custom"] = _custom(custom)
    engine, actor = _open(db)
    with _refusals():
        if version is None:
            version = get_member(actor, engine, member_id, transactions=0)["version"]
        _show(update_member(actor, engine, member_id, changes, version, _now()))


@hq_member.command("delete")
@db_option
@click.argument("member_id")
def member_delete(db: str, member_id: str) -> None:
    """Move a member to the recycle bin (数据回收站); `restore` brings it back."""
    from hq_server.members.service import delete_member

    engine, actor = _open(db)
    with _refusals():
        delete_member(actor, engine, member_id, _now())
    click.echo(f"member {member_id} deleted (in the recycle bin)")


@hq_member.command("restore")
@db_option
@click.argument("member_id")
def member_restore(db: str, member_id: str) -> None:
    """Bring a deleted member back from the recycle bin."""
    from hq_server.members.service import restore_member

    engine, actor = _open(db)
    with _refusals():
        restore_member(actor, engine, member_id, _now())
    click.echo(f"member {member_id} restored")


@hq_member.command("merge")
@db_option
@click.argument("survivor")
@click.argument("merged")
def member_merge(db: str, survivor: str, merged: str) -> None:
    """Merge MERGED into SURVIVOR: cards and history move, MERGED stays as a pointer."""
    from hq_server.members.service import merge_members

    engine, actor = _open(db)
    with _refusals():
        _show(merge_members(actor, engine, survivor, merged, _now()))
    click.echo(f"member {merged} merged into {survivor}")


def _print_report(report: dict[str, Any]) -> None:
    for row in report["rows"]:
        if row["action"] == "refused":
            click.echo(f"row {row['row']}: refused: {'; '.join(row['reasons'])}")
        elif row["action"] != "unchanged":
            changed = f" ({', '.join(row['changed'])})" if row["changed"] else ""
            click.echo(f"row {row['row']}: {row['action']} {row['member_id'] or ''}{changed}")
    c = report["counts"]
    click.echo(f"{c['create']} to create, {c['update']} to update, {c['unchanged']} "
               f"unchanged, {c['refused']} refused")


@hq_member.command("import")
@db_option
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Report row by row what would happen; write "
                                              "nothing.")
@click.option("--skip-refused", is_flag=True,
              help="Apply the good rows and report the refused ones (default: a file with a "
                   "refused row is not applied at all).")
def member_import(db: str, path: Path, dry_run: bool,
                  skip_refused: bool) -> None:
    """Import members from a CSV or XLSX file (dedupe by mobile; re-importing changes
    nothing)."""
    from hq_server.members.transfer import MAX_IMPORT_BYTES, import_members

    if path.stat().st_size > MAX_IMPORT_BYTES:
        raise click.ClickException(f"{path} is larger than {MAX_IMPORT_BYTES // 2**20} MB")
    engine, actor = _open(db)
    with _refusals():
        report = import_members(actor, engine, path.read_bytes(), path.name, _now(),
                                dry_run=dry_run, skip_refused=skip_refused)
    _print_report(report.as_dict())
    click.echo("dry run: nothing written" if dry_run else "imported")


@hq_member.command("export")
@db_option
@click.argument("path", type=click.Path(dir_okay=False, writable=True, path_type=Path))
@click.option("--store", "store_id", default=None)
@click.option("--status", type=click.Choice(["active", "deleted", "merged", "any"]),
              default="active", show_default=True)
def member_export(db: str, path: Path, store_id: str | None,
                  status: str) -> None:
    """Export members to PATH (.csv or .xlsx), in the columns import reads."""
    from hq_server.members.service import MemberQuery
    from hq_server.members.transfer import export_members, write_csv, write_xlsx

    engine, actor = _open(db)
    with _refusals():
        columns, rows = export_members(actor, engine, MemberQuery(store_id=store_id,
                                                                  status=status), _now())
        rows = list(rows)
    writer = write_xlsx if path.suffix.lower() == ".xlsx" else write_csv
    path.write_bytes(writer(columns, rows))
    click.echo(f"{len(rows)} members written to {path}")


@click.group("member-field")
def hq_member_field() -> None:
    """Custom member fields (自定义字段): define, list, retire (chain-wide operators)."""


@hq_member_field.command("add")
@db_option
@click.argument("key")
@click.option("--label", required=True)
@click.option("--type", "type_", required=True,
              type=click.Choice(["text", "integer", "decimal", "date", "choice", "yes_no"]))
@click.option("--max-length", type=click.IntRange(1, 2000), default=200, show_default=True)
@click.option("--choice", "choices", multiple=True, help="A choice (type choice); repeat.")
@click.option("--default", default=None)
@click.option("--required", is_flag=True)
def field_add(db: str, key: str, label: str, type_: str, max_length: int,
              choices: tuple[str, ...], default: str | None, required: bool) -> None:
    """Define custom field KEY for every member."""
    from hq_server.members.custom_fields import FieldDefinition
    from hq_server.members.service import define_field

    engine, actor = _open(db)
    with _refusals():
        out = define_field(actor, engine, FieldDefinition(key, label, type_, max_length,
                                                          choices, default, required), _now())
    click.echo(f"custom field {out['key']} ({out['type']}) defined")


@hq_member_field.command("list")
@db_option
def field_list(db: str) -> None:
    """The custom fields, in order."""
    from hq_server.members.service import list_fields

    engine, actor = _open(db)
    with _refusals():
        for f in list_fields(actor, engine):
            extra = f" choices {', '.join(f['choices'])}" if f["choices"] else ""
            click.echo(f"{f['key']:<20} {f['type']:<8} {f['label']:<20} {f['status']}"
                       f"{' required' if f['required'] else ''}"
                       f"{'' if f['default'] is None else ' default ' + str(f['default'])}"
                       f"{extra}")


@hq_member_field.command("retire")
@db_option
@click.argument("key")
def field_retire(db: str, key: str) -> None:
    """Stop asking for a custom field (members keep their values)."""
    from hq_server.members.service import retire_field

    engine, actor = _open(db)
    with _refusals():
        retire_field(actor, engine, key, _now())
    click.echo(f"custom field {key} retired")


COMMANDS = [hq_member, hq_member_field]
