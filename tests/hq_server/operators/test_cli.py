"""The command line acts as a named operator: create-admin (bootstrap), login, whoami,
operator commands within rank and scope, logout."""

from __future__ import annotations

import json
import stat

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from hq_server.db.engine import open_engine
from hq_server.db.tables import audit_log
from onecard.cli import main
from tests.hq_server.operators.chain import PASSWORD, make_chain


@pytest.fixture
def db(tmp_path, monkeypatch) -> str:
    monkeypatch.setenv("ONECARD_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("ONECARD_TOKEN", raising=False)
    url = f"sqlite:///{tmp_path / 'hq.db'}"
    make_chain(open_engine(url))
    return url


def run(*args: str, env: dict | None = None, input: str | None = None):
    return CliRunner().invoke(main, list(args), env=env, input=input)


def test_bootstrap_login_whoami_and_operators_within_scope(db, tmp_path):
    first = run("hq", "create-admin", "--db", db, "--username", "boss", "--operator", "zhang",
                env={"ONECARD_ADMIN_PASSWORD": PASSWORD})
    assert first.exit_code == 0, first.output
    again = run("hq", "create-admin", "--db", db, "--username", "boss2",
                env={"ONECARD_ADMIN_PASSWORD": PASSWORD})
    assert again.exit_code == 1 and "sign in first" in again.output
    assert run("hq", "whoami", "--db", db).exit_code == 1

    signed = run("hq", "login", "--db", db, "--username", "boss", input=f"{PASSWORD}\n")
    assert signed.exit_code == 0, signed.output
    session_file = tmp_path / "config" / "session.json"
    assert stat.S_IMODE(session_file.stat().st_mode) == 0o600
    assert PASSWORD not in session_file.read_text()
    who = json.loads(run("hq", "whoami", "--db", db, "--json").output)
    assert (who["operator"], who["role"], who["scope"]) == ("boss", "hq_admin", "chain")

    made = run("hq", "operator", "create", "mgr", "--db", db, "--role", "store_manager",
               "--scope", "store:S1", env={"ONECARD_NEW_PASSWORD": PASSWORD})
    assert made.exit_code == 0, made.output
    assert run("hq", "logout", "--db", db).output.strip() == "signed out"
    assert run("hq", "operator", "list", "--db", db).exit_code == 1

    run("hq", "login", "--db", db, "--username", "mgr", input=f"{PASSWORD}\n")
    cross = run("hq", "operator", "create", "c3", "--db", db, "--role", "cashier", "--scope",
                "store:S3", env={"ONECARD_NEW_PASSWORD": PASSWORD})
    assert cross.exit_code == 1 and "within your scope" in cross.output
    ok = run("hq", "operator", "create", "c1", "--db", db, "--role", "cashier", "--scope",
             "store:S1", env={"ONECARD_NEW_PASSWORD": PASSWORD})
    assert ok.exit_code == 0, ok.output
    assert run("hq", "operator", "show", "boss", "--db", db).output.strip() == "Error: not found"
    listed = run("hq", "operator", "list", "--db", db).output
    assert "c1" in listed and "mgr" in listed and "boss" not in listed
    with open_engine(db).connect() as conn:
        trail = [tuple(r) for r in conn.execute(select(audit_log.c.operator, audit_log.c.action,
                                                       audit_log.c.target_id)
                                                .order_by(audit_log.c.seq))]
    assert trail == [("bootstrap:zhang", "operator.create", "boss"),
                     ("boss", "operator.create", "mgr"), ("mgr", "operator.create", "c1")]


def test_a_store_manager_cannot_change_the_chains_denylist(db, monkeypatch):
    from tests.cli_login import sign_in_cli

    sign_in_cli(db, monkeypatch, username="mgr", role="store_manager", scope="store:S1")
    denied = run("hq", "denylist", "add", "M1", "--db", db, "--reason", "lost")
    assert denied.exit_code == 1 and "chain" in denied.output
    assert "0 cards" in run("hq", "denylist", "show", "--db", db).output


def test_wrong_password_on_the_command_line_is_one_line(db):
    run("hq", "create-admin", "--db", db, "--username", "boss",
        env={"ONECARD_ADMIN_PASSWORD": PASSWORD})
    bad = run("hq", "login", "--db", db, "--username", "boss", input="not it at all\n")
    assert bad.exit_code == 1 and "wrong operator name or password" in bad.output
    assert "Traceback" not in bad.output
