"""Signing the command line in as an operator, for tests of commands that change data.

Every such command acts as a signed-in operator (``onecard hq login``); tests sign in
through the same library functions and hand the session to the CLI as ONECARD_TOKEN.
"""

from __future__ import annotations

import pytest

from hq_server.clock import system_clock
from hq_server.db.engine import open_engine
from hq_server.operators.access import Actor, NotVisible, Scope
from hq_server.operators.accounts import add_operator, bootstrap_actor, get_operator
from hq_server.operators.sessions import open_session
from hq_server.operators.signin import sign_in

PASSWORD = "a long enough password"


def sign_in_cli(db_url: str, monkeypatch: pytest.MonkeyPatch, username: str = "ops",
                role: str = "hq_admin", scope: str = "chain") -> Actor:
    """Create ``username`` (if new) with ``role`` at ``scope`` and sign the CLI in as it."""
    engine = open_engine(db_url)
    try:
        get_operator(bootstrap_actor("tests"), engine, username)
    except NotVisible:
        add_operator(bootstrap_actor("tests"), engine, username, PASSWORD, role,
                     Scope.parse(scope))
    actor = sign_in(engine, username, PASSWORD, "tests", system_clock())
    session = open_session(engine, actor, "cli", system_clock())
    monkeypatch.setenv("ONECARD_TOKEN", session.token or "")
    engine.dispose()
    return actor
