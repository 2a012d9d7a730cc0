"""An import's audit rows appended in bulk are the rows record_action writes one by one."""

from __future__ import annotations

from sqlalchemy import select

from hq_server.audit.log import record_action, record_actions
from hq_server.db.tables import audit_log
from tests.hq_server.members.helpers import ADMIN, INJECTIONS


def test_bulk_and_one_by_one_make_the_same_chain(engine, sqlite_url):
    from hq_server.db.engine import open_engine

    actions = [("member.create", "member", f"M{i}", None, {"name": evil, "version": 1})
               for i, evil in enumerate(INJECTIONS)]
    with engine.begin() as conn:
        record_action(conn, ADMIN, "member.update", "member", "M0", {"a": 1}, {"a": 2}, 5)
        last = record_actions(conn, ADMIN, actions, 7)
    other = open_engine(sqlite_url.replace("hq.db", "other.db"))
    with other.begin() as conn:
        record_action(conn, ADMIN, "member.update", "member", "M0", {"a": 1}, {"a": 2}, 5)
        for action in actions:
            record_action(conn, ADMIN, *action, 7)
    rows = []
    for e in (engine, other):
        with e.connect() as conn:
            rows.append([tuple(r) for r in conn.execute(
                select(audit_log).order_by(audit_log.c.seq))])
    assert last == len(INJECTIONS) + 1 and rows[0] == rows[1]
