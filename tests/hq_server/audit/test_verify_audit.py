"""verify-audit: a changed, deleted or inserted audit row is found and named by its seq,
on both stores, even when the attacker dropped the append-only triggers."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from sqlalchemy import select, text, update
from sqlalchemy.exc import DBAPIError

from hq_server.audit.log import entry_hash, record_action
from hq_server.audit.verify import Anchor, verify_audit
from hq_server.db.tables import audit_head, audit_log
from onecard.cli.hq import group
from tests.hq_records import STORES, store_engine, url_of
from tests.hq_server.audit.helpers import ADMIN, S1, drop_audit_triggers, some_actions


@pytest.fixture(params=STORES)
def engine(request):
    return store_engine(request)


def _kinds(check) -> list[tuple[int, str]]:
    return [(p.seq, p.kind) for p in check.problems]


def test_an_untouched_chain_verifies(engine):
    some_actions(engine, 6)
    check = verify_audit(engine)
    assert check.intact and check.rows == 6 and check.head_seq == 6


def test_an_empty_log_verifies(engine):
    assert verify_audit(engine).intact


def test_the_database_refuses_update_and_delete_while_the_triggers_stand(engine):
    some_actions(engine, 2)
    for statement in ("UPDATE audit_log SET after_json = '{}' WHERE seq = 1",
                      "DELETE FROM audit_log WHERE seq = 2"):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text(statement))
    assert verify_audit(engine).intact


def test_a_changed_row_is_reported_at_its_seq(engine):
    some_actions(engine, 6)
    drop_audit_triggers(engine)
    with engine.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == 3)
                     .values(after_json=json.dumps({"name": "mallory"})))
    assert _kinds(verify_audit(engine)) == [(3, "changed")]


def test_a_moved_store_is_a_change_too(engine):
    some_actions(engine, 3)
    drop_audit_triggers(engine)
    with engine.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == 1).values(store="S3"))
    assert _kinds(verify_audit(engine)) == [(1, "changed")]


def test_a_changed_row_with_its_hash_recomputed_breaks_the_next_link(engine):
    some_actions(engine, 5)
    drop_audit_triggers(engine)
    with engine.begin() as conn:
        row = conn.execute(select(audit_log).where(audit_log.c.seq == 2)).mappings().one()
        forged = entry_hash(row["prev_hash"], 2, row["at_ms"], "mallory", row["role"],
                            row["origin"], row["action"], row["target_kind"],
                            row["target_id"], None, json.loads(row["after_json"]),
                            row["store"])
        conn.execute(update(audit_log).where(audit_log.c.seq == 2)
                     .values(operator="mallory", hash=forged))
    assert _kinds(verify_audit(engine)) == [(2, "changed")]


def test_a_deleted_row_in_the_middle_is_reported(engine):
    some_actions(engine, 6)
    drop_audit_triggers(engine)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE seq = 4"))
    check = verify_audit(engine)
    assert _kinds(check) == [(4, "deleted")]
    assert "row 4 missing" in str(check.problems[0])


def test_deleted_rows_at_the_end_are_reported_from_the_head(engine):
    some_actions(engine, 6)
    drop_audit_triggers(engine)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE seq >= 5"))
    check = verify_audit(engine)
    assert _kinds(check) == [(5, "deleted")]
    assert "rows 5 to 6 missing at the end" in str(check.problems[0])


def test_a_row_inserted_behind_the_head_is_reported(engine):
    some_actions(engine, 3)
    drop_audit_triggers(engine)
    with engine.begin() as conn:
        last = conn.execute(select(audit_log).where(audit_log.c.seq == 3)).mappings().one()
        forged = entry_hash(last["hash"], 4, 9_000, "mallory", "hq_admin", "cli",
                            "member.update", "member", "M1", None, {"name": "x"})
        conn.execute(audit_log.insert().values(
            seq=4, at_ms=9_000, operator="mallory", role="hq_admin", origin="cli",
            action="member.update", target_kind="member", target_id="M1", before_json=None,
            after_json=json.dumps({"name": "x"}), prev_hash=last["hash"], hash=forged))
    assert _kinds(verify_audit(engine)) == [(4, "inserted")]


def test_a_row_inserted_in_the_middle_by_renumbering_is_reported(engine):
    some_actions(engine, 5)
    drop_audit_triggers(engine)
    with engine.begin() as conn:
        for seq in (5, 4, 3):  # make room for a row at 3
            conn.execute(update(audit_log).where(audit_log.c.seq == seq).values(seq=seq + 1))
        before = conn.execute(select(audit_log).where(audit_log.c.seq == 2)).mappings().one()
        forged = entry_hash(before["hash"], 3, 2_500, "mallory", "hq_admin", "cli",
                            "member.update", "member", "M1", None, {"name": "x"})
        conn.execute(audit_log.insert().values(
            seq=3, at_ms=2_500, operator="mallory", role="hq_admin", origin="cli",
            action="member.update", target_kind="member", target_id="M1", before_json=None,
            after_json=json.dumps({"name": "x"}), prev_hash=before["hash"], hash=forged))
        conn.execute(update(audit_head).values(seq=6))
    check = verify_audit(engine)
    assert (4, "inserted") in _kinds(check)
    assert "renumbered from 3" in str(next(p for p in check.problems if p.seq == 4))


def test_a_rewritten_chain_is_caught_by_a_backup_anchor(engine):
    some_actions(engine, 4)
    with engine.connect() as conn:
        row = conn.execute(select(audit_log).where(audit_log.c.seq == 4)).mappings().one()
    anchor = Anchor(4, row["hash"], "backup hq-1")
    drop_audit_triggers(engine)
    with engine.begin() as conn:  # rewrite the whole chain consistently, head included
        conn.execute(text("DELETE FROM audit_log"))
        conn.execute(text("DELETE FROM audit_head"))
    with engine.begin() as conn:
        for i in range(4):
            record_action(conn, ADMIN, "member.create", "member", f"X{i}", None, {"i": i},
                          now_ms=i + 1, place=S1)
    assert verify_audit(engine).intact  # without the anchor, a perfect forgery
    assert _kinds(verify_audit(engine, [anchor])) == [(4, "anchor")]


def test_verify_audit_command_names_the_row_and_exits_1(engine):
    some_actions(engine, 4)
    runner = CliRunner()
    ok = runner.invoke(group, ["verify-audit", "--db", url_of(engine)])
    assert ok.exit_code == 0, ok.output
    assert "audit log intact: 4 rows" in ok.output
    drop_audit_triggers(engine)
    with engine.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == 2).values(target_id="M9"))
    bad = runner.invoke(group, ["verify-audit", "--db", url_of(engine)])
    assert bad.exit_code == 1
    assert "row 2: changed" in bad.output
