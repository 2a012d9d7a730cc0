"""``onecard hq member`` as an operator uses it: acting as the signed-in operator,
refusals in words, injection strings shown verbatim."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from onecard.cli import main
from tests.cli_login import sign_in_cli
from tests.hq_records import url_of
from tests.hq_server.members.helpers import INJECTIONS


@pytest.fixture
def hq(engine, monkeypatch):
    monkeypatch.setenv("ONECARD_HQ_DB", url_of(engine))
    sign_in_cli(url_of(engine), monkeypatch, "alice")
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(main, ["hq", *args], catch_exceptions=False)

    return run


def test_register_find_edit_and_show_from_the_command_line(hq, tmp_path):
    added = hq("member", "add", "--name", "张三", "--mobile", "138 0013 8000", "--store-id", "S1")
    assert added.exit_code == 0, added.output
    assert "+8613800138000" in added.output
    found = hq("member", "find", "zs")
    assert "M00000001" in found.output and "1 members" in found.output
    assert "M00000001" in hq("member", "find", "--mobile", "13800").output
    edited = hq("member", "edit", "M00000001", "--remark1", "VIP", "--version", "1")
    assert edited.exit_code == 0 and "VIP" in edited.output
    stale = hq("member", "edit", "M00000001", "--remark1", "again", "--version", "1")
    assert stale.exit_code == 1 and "remark1" in stale.output and "version 2" in stale.output
    path = tmp_path / "members.xlsx"
    assert hq("member", "export", str(path)).exit_code == 0
    again = hq("member", "import", str(path), "--dry-run")
    assert "0 to create, 0 to update, 1 unchanged, 0 refused" in again.output


def test_refusals_say_what_to_fix_and_change_nothing(hq, tmp_path, engine, monkeypatch):
    bad = hq("member", "add", "--name", "x", "--mobile", "12345", "--birthday", "2999-01-01")
    assert bad.exit_code == 1
    assert "mobile: mobile '12345' is not a mainland China mobile" in bad.output
    assert "birthday: 2999-01-01 is in the future" in bad.output
    assert "0 members" in hq("member", "find", "x").output
    signed_in = os.environ["ONECARD_TOKEN"]
    monkeypatch.setenv("ONECARD_TOKEN", "ocs_not-a-session")
    assert "onecard hq login" in hq("member", "find", "x").output
    monkeypatch.setenv("ONECARD_TOKEN", signed_in)
    assert hq("member", "show", "M404").output.strip() == "Error: no such member"
    rows = tmp_path / "bad.csv"
    rows.write_text("姓名,手机\n张三,13800138000\n李四,13800138000\n", encoding="utf-8")
    refused = hq("member", "import", str(rows))
    assert refused.exit_code == 1
    assert "row 3: refused: duplicate mobile +8613800138000: also on row 2" in refused.output
    assert "nothing was imported" in refused.output


def test_injection_strings_are_shown_verbatim(hq):
    for evil in INJECTIONS:
        out = hq("member", "add", "--name", evil, "--remark1", evil, "--store-id", "S1")
        assert out.exit_code == 0, out.output
        assert f"name                 {evil}" in out.output
    shown = hq("member", "show", "M00000001")
    assert f"remark1              {INJECTIONS[0]}" in shown.output
