"""Import and export of members: dry run, bad rows, all-or-nothing, re-import, XLSX."""

from __future__ import annotations

import csv
import io

import pytest
from openpyxl import load_workbook
from sqlalchemy import func, select

from hq_server.db.tables import audit_log, members
from hq_server.members.errors import ImportRefused
from hq_server.members.service import MemberQuery, create_member
from hq_server.members.transfer import (
    export_members,
    import_members,
    write_csv,
    write_xlsx,
)
from tests.hq_server.members.helpers import ADMIN, CASHIER_S1, INJECTIONS, MANAGER_S1, NOW

GOOD_AND_BAD = (
    "姓名,手机,birthday,store_id,remark1\n"
    "张三,138 0013 8000,1990-05-17,S1,first\n"  # row 2: create
    "李四,12345,,S1,\n"  # row 3: not a mobile
    "王五,13900139000,2031-01-01,S1,\n"  # row 4: birthday in the future
    "赵六,+86 13800138000,,S1,\n"  # row 5: the same mobile as row 2
    "钱七,13700137000,,S9,\n"  # row 6: no such store
    f"{'x' * 101},13600136000,,S1,\n"  # row 7: name too long
).encode()


def count(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(members)).scalar_one()


def test_a_dry_run_reports_row_by_row_and_writes_nothing(engine):
    report = import_members(ADMIN, engine, GOOD_AND_BAD, "list.csv", NOW, dry_run=True)
    outcome = {r.row: (r.action, " ".join(r.reasons)) for r in report.rows}
    assert outcome[2] == ("create", "")
    assert outcome[3][0] == "refused" and "mobile" in outcome[3][1]
    assert outcome[4] == ("refused", "birthday: 2031-01-01 is in the future "
                                     "(today is 2026-11-30)")
    assert outcome[5] == ("refused", "duplicate mobile +8613800138000: also on row 2 of "
                                     "this file")
    assert "no store 'S9'" in outcome[6][1]
    assert outcome[7] == ("refused", "name: at most 100 characters (this has 101)")
    assert count(engine) == 0


def test_a_file_with_a_bad_row_is_not_applied_at_all(engine):
    with pytest.raises(ImportRefused) as refused:
        import_members(ADMIN, engine, GOOD_AND_BAD, "list.csv", NOW)
    assert refused.value.report.counts == {"create": 1, "update": 0, "unchanged": 0,
                                           "refused": 5}
    assert count(engine) == 0
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(audit_log)).scalar_one() == 0
    applied = import_members(ADMIN, engine, GOOD_AND_BAD, "list.csv", NOW, skip_refused=True)
    assert applied.applied and applied.counts["create"] == 1 and count(engine) == 1


def test_reimport_is_idempotent_and_dedupes_by_mobile(engine):
    existing = create_member(CASHIER_S1, engine, {"name": "张三", "mobile": "13800138000"}, NOW)
    data = ("name,mobile,email\n张三,+8613800138000,zs@example.com\n"
            "李四,13900139000,\n").encode()
    first = import_members(MANAGER_S1, engine, data, "a.csv", NOW)
    assert [(r.action, r.member_id, r.changed) for r in first.rows] == [
        ("update", existing["member_id"], ["email"]), ("create", first.rows[1].member_id, [])]
    again = import_members(MANAGER_S1, engine, data, "a.csv", NOW + 1)
    assert [r.action for r in again.rows] == ["unchanged", "unchanged"] and count(engine) == 2


def test_export_round_trips_through_csv_and_xlsx_and_guards_formulas(engine):
    for i, evil in enumerate(INJECTIONS):
        create_member(ADMIN, engine, {"name": f"n{i}", "store_id": "S1", "remark1": evil,
                                      "mobile": f"1380013800{i}"}, NOW)
    columns, rows = export_members(ADMIN, engine, MemberQuery(), NOW)
    rows = list(rows)
    as_csv = write_csv(columns, rows)
    cells = [c for row in csv.reader(io.StringIO(as_csv.decode("utf-8-sig"))) for c in row]
    assert "'=HYPERLINK(\"http://evil\")" in cells and "=HYPERLINK(\"http://evil\")" not in cells
    as_xlsx = write_xlsx(columns, rows)
    sheet = load_workbook(io.BytesIO(as_xlsx)).worksheets[0]
    remarks = [row[columns.index("remark1")] for row in sheet.iter_rows(min_row=2,
                                                                       values_only=True)]
    assert sorted(remarks) == sorted(INJECTIONS)  # as text, never a formula
    for data, name in ((as_csv, "m.csv"), (as_xlsx, "m.xlsx")):
        report = import_members(ADMIN, engine, data, name, NOW + 1)
        assert report.counts == {"create": 0, "update": 0, "unchanged": len(INJECTIONS),
                                 "refused": 0}


def test_unreadable_files_and_unknown_columns_are_refused(engine):
    with pytest.raises(ImportRefused, match="unknown column 'nmae'"):
        import_members(ADMIN, engine, b"nmae,mobile\nx,13800138000\n", "a.csv", NOW)
    with pytest.raises(ImportRefused, match="XLSX"):
        import_members(ADMIN, engine, b"PK\x03\x04garbage", "a.xlsx", NOW)
    with pytest.raises(ImportRefused, match="empty"):
        import_members(ADMIN, engine, b"", "a.csv", NOW)
