"""Listing the audit log: filters, cursor pages, and scope (a store manager sees the
actions on their store's things, a region manager their region's, chain-level rows only
chain-wide readers), from the service, the API and the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from hq_server.api.app import create_app
from hq_server.api.common import BadCursor, encode_cursor
from hq_server.api.dependencies import current_actor
from hq_server.audit.log import record_action
from hq_server.audit.query import AuditFilter, BadAuditFilter, list_actions
from hq_server.operators.access import Forbidden
from onecard.cli.hq import group
from tests.cli_login import sign_in_cli
from tests.hq_records import STORES, store_engine, url_of
from tests.hq_server.audit.helpers import (
    ADMIN,
    AUDITOR,
    CASHIER_S1,
    MANAGER_S1,
    REGION_NORTH,
    make_chain,
    some_actions,
)


@pytest.fixture(params=STORES)
def engine(request):
    engine = store_engine(request)
    make_chain(engine)
    some_actions(engine, 6)  # seq 1..6: S1, S2, S3, S1, S2, S3
    with engine.begin() as conn:  # seq 7: a chain-level action
        record_action(conn, ADMIN, "product.create", "product", "swim", None,
                      {"name": "游泳"}, now_ms=7_000)
    return engine


def _seqs(items) -> list[int]:
    return [i["seq"] for i in items]


def test_newest_first_and_filters(engine):
    items, cursor = list_actions(engine, ADMIN, AuditFilter())
    assert _seqs(items) == [7, 6, 5, 4, 3, 2, 1] and cursor is None
    assert _seqs(list_actions(engine, ADMIN, AuditFilter(action="member.*"))[0]) == [
        6, 5, 4, 3, 2, 1]
    assert _seqs(list_actions(engine, ADMIN, AuditFilter(action="member.update"))[0]) == [
        6, 5, 4]
    assert _seqs(list_actions(engine, ADMIN, AuditFilter(target="member:M1"))[0]) == [5, 2]
    assert _seqs(list_actions(engine, ADMIN, AuditFilter(target="product"))[0]) == [7]
    assert _seqs(list_actions(engine, ADMIN, AuditFilter(since_ms=2_000,
                                                         until_ms=4_000))[0]) == [3, 2]
    assert list_actions(engine, ADMIN, AuditFilter(operator="nobody"))[0] == []
    assert list_actions(engine, ADMIN, AuditFilter(target="member:M0'; DROP TABLE x;--")
                        )[0] == []


def test_pages_follow_the_cursor_without_gaps_or_repeats(engine):
    seen, cursor = [], None
    while True:
        items, cursor = list_actions(engine, ADMIN, AuditFilter(), cursor, limit=3)
        seen += _seqs(items)
        if cursor is None:
            break
    assert seen == [7, 6, 5, 4, 3, 2, 1]
    for forged in ("not-a-cursor!!", encode_cursor((2**70,)), encode_cursor(("7",))):
        with pytest.raises(BadCursor):
            list_actions(engine, ADMIN, AuditFilter(), forged)


def test_scope_narrows_what_a_reader_sees(engine):
    assert _seqs(list_actions(engine, MANAGER_S1, AuditFilter())[0]) == [4, 1]
    assert _seqs(list_actions(engine, REGION_NORTH, AuditFilter())[0]) == [5, 4, 2, 1]
    assert _seqs(list_actions(engine, AUDITOR, AuditFilter())[0]) == [7, 6, 5, 4, 3, 2, 1]
    with pytest.raises(Forbidden):
        list_actions(engine, CASHIER_S1, AuditFilter())


def test_bad_filters_are_refused_with_a_reason():
    with pytest.raises(BadAuditFilter, match="prefix"):
        AuditFilter(action="member.%")
    with pytest.raises(BadAuditFilter, match="before its end"):
        AuditFilter(since_ms=5, until_ms=5)


def _client(engine, actor) -> TestClient:
    app = create_app(engine, None, None)
    app.dependency_overrides[current_actor] = lambda: actor
    return TestClient(app)


def test_api_lists_pages_and_scopes(engine):
    client = _client(engine, MANAGER_S1)
    page = client.get("/v1/audit", params={"limit": 1})
    assert page.status_code == 200
    assert [i["seq"] for i in page.json()["items"]] == [4]
    assert page.json()["items"][0]["store"] == "S1"
    nxt = client.get("/v1/audit", params={"limit": 1, "cursor": page.json()["next_cursor"]})
    assert [i["seq"] for i in nxt.json()["items"]] == [1] and nxt.json()["next_cursor"] is None
    huge = client.get("/v1/audit", params={"since_ms": 2**70})
    assert huge.status_code == 422 and huge.json()["code"] == "validation-error"
    bad = client.get("/v1/audit", params={"action": "member.%"})
    assert bad.status_code == 422 and bad.json()["code"] == "bad-filter"
    assert _client(engine, CASHIER_S1).get("/v1/audit").json()["code"] == "forbidden"


def test_api_needs_an_operator(engine):
    answer = TestClient(create_app(engine, None, None)).get("/v1/audit")
    assert answer.status_code == 401


def test_cli_lists_as_the_signed_in_operator(engine, monkeypatch):
    runner = CliRunner()
    monkeypatch.delenv("ONECARD_TOKEN", raising=False)
    monkeypatch.setenv("HOME", str(Path(url_of(engine).split("///", 1)[-1]).parent)
                       if url_of(engine).startswith("sqlite") else "/nonexistent-home")
    nobody = runner.invoke(group, ["audit", "--db", url_of(engine)])
    assert nobody.exit_code == 1 and "sign in first" in nobody.output
    sign_in_cli(url_of(engine), monkeypatch, "alice")
    out = runner.invoke(group, ["audit", "--db", url_of(engine), "--target", "member:M1"])
    assert out.exit_code == 0, out.output
    assert [line.split()[0] for line in out.output.splitlines()] == ["5", "2"]
