"""Import and export of members as CSV and XLSX (会员导入导出).

**Import** reads a file whose first row names the columns (field names such as
``mobile``, their Chinese labels such as 手机, ``member_id``/会员编号, ``custom.<key>``
or a custom field's label) and decides for every row: *create* a member, *update* the
member with the same member number or, failing that, the same mobile (dedupe by
mobile), leave it *unchanged* (re-importing a file changes nothing the second time), or
*refuse* it with the reason. A dry run reports exactly that and writes nothing.

A file is applied **all or nothing**: if any row is refused, no row is applied, and the
report lists every refusal so the operator fixes the file and imports it again. A file
is the unit an operator reasons about ("did the March list go in?"); half a file in the
database would leave them to find out which half. ``skip_refused=True`` is the explicit
alternative: the good rows are applied, each whole, the refused ones reported — never
part of a row.

**Export** writes the members a search finds, every profile field and custom field,
in the same columns import reads, so an export can be edited and imported back. A cell
starting with ``= + - @`` is written so that spreadsheet programs show it as text and
never run it as a formula (CSV: a leading ``'``, which import removes again; XLSX: a
string cell).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Connection, Engine

from hq_server.audit.log import record_action, record_actions
from hq_server.chain.places import place_of_store
from hq_server.db.bulk import bulk_execute
from hq_server.db.tables import counters, members
from hq_server.members.custom_fields import FieldDefinition, clean_custom
from hq_server.members.errors import FieldError, ImportRefused
from hq_server.members.normalise import NotAMobile, normalise_mobile
from hq_server.members.profile import PROFILE_FIELDS, clean_profile, member_id_problem
from hq_server.members.service import (
    PROFILE_NAMES,
    MemberQuery,
    _check_referrer,
    field_definitions,
    member_out,
    query_conditions,
    search_columns,
    today_of,
)
from hq_server.operators.access import Actor, Level, NotVisible, Place, authorise

#: The most rows one import takes (a chain's whole membership fits; a runaway file not).
MAX_IMPORT_ROWS = 200_000
#: The largest import file read.
MAX_IMPORT_BYTES = 100 * 1024 * 1024
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
#: Columns export writes that import reads past (a member's status is not imported).
IGNORED = "__ignored__"


# --- reading files -------------------------------------------------------------------------

def header_aliases(defs: dict[str, FieldDefinition]) -> dict[str, str]:
    """Column titles import understands → the field each fills."""
    aliases = {"member_id": "member_id", "会员编号": "member_id", "会员号": "member_id",
               "status": IGNORED, "状态": IGNORED}
    for f in PROFILE_FIELDS:
        aliases[f.name] = f.name
        aliases[f.label_zh] = f.name
    for d in defs.values():
        aliases[f"custom.{d.key}"] = f"custom.{d.key}"
        aliases.setdefault(d.label, f"custom.{d.key}")
    return aliases


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == datetime.min.time() else \
            value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _unquote(text: str) -> str:
    """Undo export's formula guard: ``'=1+1`` → ``=1+1``."""
    return text[1:] if len(text) > 1 and text[0] == "'" and text[1] in _FORMULA_START else text


def read_table(data: bytes, filename: str) -> list[list[str]]:
    """The rows of a CSV (UTF-8, with or without BOM, or GB18030) or XLSX file, the
    header first. :class:`ImportRefused` when it is neither or too large."""
    if len(data) > MAX_IMPORT_BYTES:
        raise ImportRefused(f"the file is larger than {MAX_IMPORT_BYTES // 2**20} MB")
    if filename.lower().endswith(".xlsx") or data[:2] == b"PK":
        from openpyxl import load_workbook

        try:
            book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
        except Exception as exc:  # openpyxl raises many kinds for a damaged file
            raise ImportRefused(f"not a readable XLSX workbook ({type(exc).__name__})") from None
        try:
            sheet = book.worksheets[0]
            rows = []
            for row in sheet.iter_rows(values_only=True):
                rows.append([_cell_text(v) for v in row])
                if len(rows) > MAX_IMPORT_ROWS + 1:
                    break
        finally:
            book.close()
    else:
        for encoding in ("utf-8-sig", "gb18030"):
            try:
                text = data.decode(encoding)
                break
            except UnicodeDecodeError:
                continue
        else:
            raise ImportRefused("the file is neither UTF-8 nor GB18030 text")
        try:
            rows = []
            for row in csv.reader(io.StringIO(text, newline="")):
                rows.append(row)
                if len(rows) > MAX_IMPORT_ROWS + 1:
                    break
        except csv.Error as exc:
            raise ImportRefused(f"not a readable CSV file: {exc}") from None
    while rows and not any(c.strip() for c in rows[-1]):
        rows.pop()
    if not rows:
        raise ImportRefused("the file is empty: the first row must name the columns")
    if len(rows) > MAX_IMPORT_ROWS + 1:
        raise ImportRefused(f"at most {MAX_IMPORT_ROWS} members per file")
    return rows


def rows_as_records(table: list[list[str]], defs: dict[str, FieldDefinition]
                    ) -> list[dict[str, Any]]:
    """Each data row as {field: text}, ``custom`` values under ``custom``; the header's
    unknown or repeated columns are refused (a typo must not drop a column silently)."""
    aliases = header_aliases(defs)
    header = [h.strip() for h in table[0]]
    fields: list[str] = []
    problems = []
    for title in header:
        name = aliases.get(title) or aliases.get(title.lower())
        if name is None:
            problems.append(f"unknown column {title[:40]!r}")
        elif name in fields:
            problems.append(f"column {title[:40]!r} appears twice")
        fields.append(name or "")
    if problems:
        raise ImportRefused("; ".join(problems[:10]))
    out = []
    for row in table[1:]:
        record: dict[str, Any] = {}
        custom: dict[str, Any] = {}
        for name, cell in zip(fields, row, strict=False):
            value = _unquote(cell)
            if name == IGNORED:
                continue
            if name.startswith("custom."):
                if value.strip():
                    custom[name[7:]] = value
            else:
                record[name] = value
        if len(row) > len(fields) and any(c.strip() for c in row[len(fields):]):
            record["__extra__"] = True
        record["custom"] = custom
        out.append(record)
    return out


# --- deciding and applying -----------------------------------------------------------------

@dataclass
class RowOutcome:
    """What import does (or would do) with one row: ``row`` is its line in the file
    (the header is line 1)."""

    row: int
    action: str  # create / update / unchanged / refused
    member_id: str | None = None
    reasons: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row, "action": self.action, "member_id": self.member_id,
                "reasons": self.reasons, "changed": self.changed}


@dataclass
class ImportReport:
    dry_run: bool
    applied: bool
    rows: list[RowOutcome]
    file_sha256: str = ""

    @property
    def counts(self) -> dict[str, int]:
        out = {"create": 0, "update": 0, "unchanged": 0, "refused": 0}
        for r in self.rows:
            out[r.action] += 1
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "applied": self.applied, "counts": self.counts,
                "file_sha256": self.file_sha256, "rows": [r.as_dict() for r in self.rows]}


def _existing(conn: Connection, column: Any, keys: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    wanted = sorted(set(keys))
    for i in range(0, len(wanted), 500):
        for r in conn.execute(select(members).where(column.in_(wanted[i:i + 500]))).mappings():
            out[r[column.name]] = r
    return out


def _allocate_numbers(conn: Connection, how_many: int, taken: set[str]) -> list[str]:
    row = conn.execute(select(counters.c.value).where(counters.c.name == "member_number")
                       .with_for_update()).first()
    value = 0 if row is None else int(row[0])
    out: list[str] = []
    while len(out) < how_many:
        batch = [f"M{value + i:08d}" for i in range(1, how_many - len(out) + 1)]
        value += len(batch)
        exists = set(_existing(conn, members.c.member_id, batch)) | taken
        out.extend(b for b in batch if b not in exists)
    if row is None:
        conn.execute(insert(counters).values(name="member_number", value=value))
    else:
        conn.execute(update(counters).where(counters.c.name == "member_number")
                     .values(value=value))
    return out


def import_members(actor: Actor, engine: Engine, data: bytes, filename: str, now_ms: int, *,
                   dry_run: bool = False, skip_refused: bool = False) -> ImportReport:
    """Import members from a CSV or XLSX file; the row-by-row report.

    Raises :class:`ImportRefused` (with the report) when a row is refused and
    ``skip_refused`` is not set: then nothing at all was applied. A dry run never
    writes. Re-importing the same file reports every row ``unchanged``.
    """
    authorise(actor, "members.import")
    digest = hashlib.sha256(data).hexdigest()
    table = read_table(data, filename)
    today = today_of(now_ms)
    with engine.begin() as conn:
        defs = field_definitions(conn)
        records = rows_as_records(table, defs)
        report = ImportReport(dry_run, False, [], digest)
        plans = _plan(conn, actor, records, defs, today, report)
        refused = report.counts["refused"]
        if dry_run:
            return report
        if refused and not skip_refused:
            raise ImportRefused(f"{refused} of {len(report.rows)} rows refused; nothing was "
                                "imported (fix them and import again, or skip them)", report)
        _apply(conn, actor, plans, now_ms, report)
        report.applied = True
        record_action(conn, actor, "member.import", "member_import", digest[:32], None,
                      {"file": filename[:200], "sha256": digest, **report.counts}, now_ms)
    return report


@dataclass
class _Plan:
    outcome: RowOutcome
    values: dict[str, Any]
    before: dict[str, Any] | None = None
    version: int | None = None


def _plan(conn: Connection, actor: Actor, records: list[dict[str, Any]],
          defs: dict[str, FieldDefinition], today: date, report: ImportReport) -> list[_Plan]:
    mobiles: dict[int, str] = {}
    for i, rec in enumerate(records):
        try:
            if (rec.get("mobile") or "").strip():
                mobiles[i] = normalise_mobile(rec["mobile"]).e164
        except NotAMobile:
            pass
    by_mobile = _existing(conn, members.c.mobile, list(mobiles.values()))
    by_id = _existing(conn, members.c.member_id,
                      [r["member_id"].strip() for r in records
                       if isinstance(r.get("member_id"), str) and r["member_id"].strip()])
    places: dict[str | None, Place | None] = {}
    seen_mobile: dict[str, int] = {}
    seen_id: dict[str, int] = {}
    default_store = actor.scope.id if actor.scope.level is Level.STORE else None
    plans: list[_Plan] = []

    def place(store_id: str | None) -> Place | None:
        if store_id not in places:
            places[store_id] = place_of_store(conn, store_id)
        return places[store_id]

    def writable(store_id: str | None) -> bool:
        p = place(store_id)
        if p is None:
            return False
        try:
            authorise(actor, "members.write", p)
            return True
        except (NotVisible, PermissionError):
            return False

    for i, rec in enumerate(records):
        line = i + 2
        outcome = RowOutcome(line, "refused")
        report.rows.append(outcome)
        rec = dict(rec)
        if rec.pop("__extra__", False):
            outcome.reasons.append("the row has more cells than the header has columns")
            continue
        member_id = (rec.pop("member_id", "") or "").strip() or None
        custom_in = rec.pop("custom", {})
        existing = None
        if member_id is not None:
            problem = member_id_problem(member_id)
            if problem:
                outcome.reasons.append(f"member_id: {problem}")
                continue
            if member_id in seen_id:
                outcome.reasons.append(f"member_id {member_id} is also on row {seen_id[member_id]}")
                continue
            seen_id[member_id] = line
            existing = by_id.get(member_id)
        mobile = mobiles.get(i)
        if mobile is not None:
            if mobile in seen_mobile:
                outcome.reasons.append(f"duplicate mobile {mobile}: also on row "
                                       f"{seen_mobile[mobile]} of this file")
                continue
            seen_mobile[mobile] = line
            holder = by_mobile.get(mobile)
            if existing is None and holder is not None and member_id is None:
                existing = holder
            elif holder is not None and existing is not None and \
                    holder["member_id"] != existing["member_id"]:
                outcome.reasons.append(f"mobile {mobile} belongs to another member "
                                       f"than {member_id}")
                continue
            elif holder is not None and existing is None:
                outcome.reasons.append(f"mobile {mobile} belongs to another member")
                continue
        if existing is not None:
            if not writable(existing["store_id"]):
                outcome.reasons.append("the member with this number or mobile is outside "
                                       "what you may change")
                continue
            if existing["status"] != "active":
                outcome.reasons.append(f"member {existing['member_id']} is "
                                       f"{existing['status']}")
                continue
            given = {k: v for k, v in rec.items() if k in PROFILE_NAMES}
            cleaned, errors = clean_profile(given, today, partial=True)
            before = member_out(existing)
            custom, custom_errors = clean_custom(custom_in, defs, before["custom"])
            errors += custom_errors
            if "store_id" in cleaned and cleaned["store_id"] != existing["store_id"] and \
                    not writable(cleaned["store_id"]):
                errors.append(FieldError("store_id", f"no store {cleaned['store_id']!r}"))
            if "referrer_id" in cleaned and cleaned["referrer_id"] != existing["referrer_id"]:
                _check_referrer(conn, actor, existing["member_id"], cleaned["referrer_id"],
                                errors)
            if errors:
                outcome.reasons.extend(str(e) for e in errors)
                continue
            after = {**before, **cleaned, "custom": custom}
            outcome.member_id = existing["member_id"]
            changed = sorted(k for k in after if after[k] != before[k])
            if not changed:
                outcome.action = "unchanged"
                continue
            outcome.action, outcome.changed = "update", changed
            plans.append(_Plan(outcome, {"cleaned": cleaned, "custom": custom, "after": after},
                               before, int(existing["version"])))
            continue
        if "store_id" not in rec or not (rec.get("store_id") or "").strip():
            rec["store_id"] = default_store
        profile, errors = clean_profile(rec, today)
        custom, custom_errors = clean_custom(custom_in, defs)
        errors += custom_errors
        if not errors and not writable(profile["store_id"]):
            errors.append(FieldError("store_id", f"no store {profile['store_id']!r} in the "
                                     "chain" if profile["store_id"] else
                                     "give the store that registers the member"))
        if profile.get("referrer_id"):
            _check_referrer(conn, actor, member_id, profile["referrer_id"], errors)
        if errors:
            outcome.reasons.extend(str(e) for e in errors)
            continue
        if profile.get("join_date") is None:
            profile["join_date"] = today.isoformat()
        outcome.action, outcome.member_id = "create", member_id
        plans.append(_Plan(outcome, {"profile": profile, "custom": custom}))
    return plans


def _apply(conn: Connection, actor: Actor, plans: list[_Plan], now_ms: int,
           report: ImportReport) -> None:
    creates = [p for p in plans if p.outcome.action == "create"]
    given = {p.outcome.member_id for p in creates if p.outcome.member_id}
    numbers = iter(_allocate_numbers(conn, sum(1 for p in creates if not p.outcome.member_id),
                                     given))
    rows = []
    for p in creates:
        if not p.outcome.member_id:
            p.outcome.member_id = next(numbers)
        profile = p.values["profile"]
        rows.append({**profile, **search_columns(profile), "member_id": p.outcome.member_id,
                     "custom_json": json.dumps(p.values["custom"], ensure_ascii=False,
                                               sort_keys=True),
                     "status": "active", "merged_into": None, "version": 1,
                     "created_at_ms": now_ms, "updated_at_ms": now_ms})
    # referrers first: a row may name a member created by an earlier row of the file
    rows.sort(key=lambda r: r["referrer_id"] is not None)
    if rows:
        columns = list(rows[0])
        for i in range(0, len(rows), 2000):
            bulk_execute(conn, "members.import.insert",
                         lambda: insert(members).values({c: bindparam(c) for c in columns}),
                         rows[i:i + 2000])
    record_actions(conn, actor, [("member.create", "member", r["member_id"], None,
                                  member_out(r)) for r in rows], now_ms)
    for p in plans:
        if p.outcome.action != "update":
            continue
        cleaned, after = p.values["cleaned"], p.values["after"]
        profile = {k: after[k] for k in PROFILE_NAMES}
        done = conn.execute(update(members).where(
            (members.c.member_id == p.outcome.member_id) & (members.c.version == p.version))
            .values(**cleaned, **search_columns(profile),
                    custom_json=json.dumps(p.values["custom"], ensure_ascii=False,
                                           sort_keys=True),
                    version=p.version + 1, updated_at_ms=now_ms)).rowcount
        if done != 1:
            raise ImportRefused(f"member {p.outcome.member_id} was changed by someone else "
                                "during the import; nothing was imported, try again")
        before = p.before or {}
        record_action(conn, actor, "member.update", "member", p.outcome.member_id,
                      {**{k: before.get(k) for k in p.outcome.changed}, "version": p.version},
                      {**{k: after.get(k) for k in p.outcome.changed},
                       "version": p.version + 1}, now_ms)


# --- export --------------------------------------------------------------------------------

def export_columns(defs: dict[str, FieldDefinition]) -> list[str]:
    return ["member_id", *PROFILE_NAMES, *(f"custom.{k}" for k in defs), "status"]


def export_members(actor: Actor, engine: Engine, q: MemberQuery, now_ms: int
                   ) -> tuple[list[str], Iterator[list[Any]]]:
    """The columns and rows of the members ``q`` finds in the operator's scope; the
    export itself is an audited action (data leaving HQ)."""
    authorise(actor, "members.export")
    with engine.begin() as conn:
        defs = field_definitions(conn)
        where = query_conditions(conn, actor, q)
        count = conn.execute(select(members.c.member_id).where(*where)).fetchall()
        record_action(conn, actor, "member.export", "member_export", str(now_ms), None,
                      {"query": {k: v for k, v in q.__dict__.items() if v is not None},
                       "members": len(count)}, now_ms)
    columns = export_columns(defs)

    def rows() -> Iterator[list[Any]]:
        last = ""
        while True:
            with engine.connect() as conn:
                page = conn.execute(select(members).where(
                    *query_conditions(conn, actor, q), members.c.member_id > last)
                    .order_by(members.c.member_id).limit(2000)).mappings().all()
            if not page:
                return
            for r in page:
                m = member_out(r)
                yield [m["member_id"], *(m[k] for k in PROFILE_NAMES),
                       *(m["custom"].get(k) for k in defs), m["status"]]
            last = page[-1]["member_id"]

    return columns, rows()


def _guard(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def write_csv(columns: list[str], rows: Iterable[list[Any]]) -> bytes:
    """UTF-8 with a BOM (so spreadsheet programs read Chinese right), formulas guarded."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_guard(v) for v in row])
    return ("\ufeff" + out.getvalue()).encode("utf-8")


def write_xlsx(columns: list[str], rows: Iterable[list[Any]]) -> bytes:
    """One sheet, every cell a string cell (never a formula)."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell

    book = Workbook(write_only=True)
    sheet = book.create_sheet("members")
    sheet.append(columns)
    for row in rows:
        cells = []
        for value in row:
            if value is None:
                cells.append(None)
                continue
            cell = WriteOnlyCell(sheet, value="yes" if value is True else "no"
                                 if value is False else str(value))
            cell.data_type = "s"
            cells.append(cell)
        sheet.append(cells)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()
