"""The command line never shows a traceback for bad input, and bad input changes nothing.

Each refusal is one clear line and a non-zero exit: 2 for a bad argument (click's usage
error), 1 for an operational failure (database, broker or file not usable).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from onecard.cli import main
from tests.cli_login import sign_in_cli

HUGE = "9" * 24


def walk(group: click.Group, path: tuple[str, ...] = ()):
    for name, cmd in group.commands.items():
        yield (*path, name), cmd
        if isinstance(cmd, click.Group):
            yield from walk(cmd, (*path, name))


def run(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, list(args), env=env)


def refused(result, code: int, *words: str) -> str:
    """The command failed cleanly with ``code``: a message, no Python exception."""
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    for word in words:
        assert word in result.output, result.output
    return result.output


@pytest.fixture
def db(tmp_path, monkeypatch) -> str:
    url = f"sqlite:///{tmp_path / 'hq.db'}"
    assert run("hq", "migrate", "--db", url).exit_code == 0
    sign_in_cli(url, monkeypatch)  # commands that change data act as an operator
    return url


# --- the cases ---------------------------------------------------------------


def test_uid_credential_amount_beyond_any_store_is_a_usage_error(db):
    for amount in (HUGE, "-1", "12.5", "1e3"):
        refused(run("hq", "uid-credential", "add", "--db", db, "em4100", "0012345678",
                    "--holder", "M3", "--max-amount-fen", amount), 2, "--max-amount-fen")
    listed = run("hq", "uid-credential", "list", "--db", db)
    assert "0 credentials" in listed.output


@pytest.mark.parametrize("when", [HUGE, "١٢٣٤", "-5", "2026-13-45", "", "99999-01-01"])
def test_dates_out_of_range_are_usage_errors_and_change_nothing(db, when):
    refused(run("hq", "denylist", "add", "M3", "--db", db, "--since", when), 2, "--since")
    refused(run("hq", "uid-credential", "add", "--db", db, "qr", "M3-QR", "--holder", "M3",
                "--valid-from", when), 2, "--valid-from")
    refused(run("hq", "settlement", "--db", db, "--from", when, "--to", "2026-01-01"), 2,
            "--from")
    assert "0 cards" in run("hq", "denylist", "show", "--db", db).output
    assert "0 credentials" in run("hq", "uid-credential", "list", "--db", db).output


def test_a_good_date_still_works(db):
    assert run("hq", "store", "add", "S1", "--db", db, "--name", "S1").exit_code == 0
    assert run("hq", "card", "add", "M3", "--db", db, "--store", "S1").exit_code == 0
    ok = run("hq", "denylist", "add", "M3", "--db", db, "--since", "2026-11-01T08:00:00+08:00",
             "--reason", "lost")
    assert ok.exit_code == 0, ok.output
    assert "M3" in run("hq", "denylist", "show", "--db", db).output


@pytest.mark.parametrize("size", [0, 100, 1023, 1025, 4096])
@pytest.mark.parametrize("sim", ["pcsc", "pn532"])
def test_sim_refuses_a_dump_that_is_not_1k(tmp_path, sim, size):
    dump = tmp_path / "card.mfd"
    dump.write_bytes(bytes(size))
    refused(run("sim", sim, "--card", str(dump)), 2, "1024 bytes")
    assert dump.read_bytes() == bytes(size)


def test_sim_refuses_a_directory_as_dump(tmp_path):
    refused(run("sim", "pcsc", "--card", str(tmp_path)), 2, "--card")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def site():
    """A site made by `onecard broker init`, whose broker is NOT running."""
    top = tempfile.mkdtemp(prefix="onecard-cli-site-", dir="/tmp")
    os.chmod(top, 0o755)  # the mosquitto user must be able to reach the broker folder
    root = Path(top) / "site"
    made = run("broker", "init", str(root), "--hostname", "127.0.0.1", "--device-port",
               str(free_port()), "--service-port", str(free_port()))
    assert made.exit_code == 0, made.output
    yield str(root)
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def gate_db(db) -> str:
    """An HQ database that knows terminal gate-01 (commands to it are authorised)."""
    from hq_server.db.engine import open_engine
    from hq_server.devices.registry import add_device
    from tests.hq_records import known_store

    engine = open_engine(db)
    add_device(engine, "gate-01", "ab" * 32, known_store(engine, "store-1"), "gate")
    return db


def test_hq_command_when_the_broker_is_down(site, gate_db):
    out = refused(run("hq", "command", "--db", gate_db, "--site", site, "--device", "gate-01",
                      "--wait", "1", "sync_now"), 1, "broker")
    assert len(out.strip().splitlines()) == 1


def test_push_config_refuses_deep_or_huge_documents_before_the_broker(site, tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    refused(run("hq", "push-config", "--site", site, "--device", "gate-01", str(deep)), 1,
            "nested")
    big = tmp_path / "big.json"
    big.write_text('{"x": "' + "a" * (2 * 1024 * 1024) + '"}')
    refused(run("hq", "push-config", "--site", site, "--device", "gate-01", str(big)), 1,
            "too large")
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    refused(run("hq", "push-config", "--site", site, "--device", "gate-01", str(binary)), 1,
            "not JSON")


def test_a_site_folder_that_is_not_one(tmp_path, gate_db):
    refused(run("hq", "command", "--db", gate_db, "--site", str(tmp_path), "--device",
                "gate-01", "sync_now"), 1, "site")


def test_commands_that_change_data_need_a_signed_in_operator(gate_db, site, monkeypatch):
    monkeypatch.delenv("ONECARD_TOKEN")
    for args in (["denylist", "add", "M3"], ["uid-credential", "revoke", "qr", "X"],
                 ["reverse", "txn", "--reason", "x"], ["rules", "release", "gate-01",
                                                       "--reason", "x"],
                 ["enrolment-token", "--store", "s", "--role", "gate"],
                 ["command", "--site", site, "--device", "gate-01", "sync_now"]):
        refused(run("hq", *args, "--db", gate_db), 1, "sign in first")


# --- databases, ids and files ----------------------------------------------------------


@pytest.mark.parametrize("url", ["nonsense", "mysql://x/y", "sqlite:////no/such/dir/hq.db"])
def test_unusable_database_url_is_a_usage_error(url):
    refused(run("hq", "list-devices", "--db", url), 2, "--db")


def test_unreachable_database_is_one_line():
    out = refused(run("hq", "list-devices", "--db", "postgresql+psycopg://nobody@127.0.0.1:1/x"),
                  1, "database")
    assert len(out.strip().splitlines()) == 1


def test_unknown_ids_are_refused(db):
    refused(run("hq", "reverse", "--db", db, "no-such-txn", "--reason", "x"),
            1)
    refused(run("hq", "denylist", "remove", "NOPE", "--db", db), 1)
    # HQ does not know these cards: refused with the reason, never "0 anomalies"
    ghost = refused(run("hq", "denylist", "add", "GHOST-CARD", "--db", db, "--reason", "lost"),
                    1, "no card 'GHOST-CARD' at HQ")
    assert "0 cards" in run("hq", "denylist", "show", "--db", db).output, ghost
    refused(run("hq", "reconcile", "--db", db, "--card", "NOSUCH"), 1, "no card 'NOSUCH' at HQ")
    refused(run("hq", "card", "show", "NOSUCH", "--db", db), 1, "no card 'NOSUCH'")
    refused(run("hq", "uid-credential", "revoke", "--db", db, "qr", "never-added"), 1)


def test_terminal_files_that_are_not_what_they_should_be(tmp_path):
    junk = tmp_path / "outbox.db"
    junk.write_bytes(b"this is not a database" * 100)
    refused(run("terminal", "outbox", "--store-db", str(junk)), 1)
    toml = tmp_path / "terminal.toml"
    toml.write_text("[terminal\nbroken = ")
    refused(run("terminal", "run", "--settings", str(toml)), 1, "settings")
    refused(run("terminal", "run", "--secrets", str(tmp_path), "--data", str(tmp_path),
                "--uid-reader", "no-kind-given"), 2, "--uid-reader")
    refused(run("terminal", "run", "--secrets", str(tmp_path), "--data", str(tmp_path),
                "--uid-reader", "/dev/ttyUSB0:barcode"), 2, "--uid-reader")


# --- every numeric option is bounded -----------------------------------------------------

HOSTILE_NUMBERS = [HUGE, "-" + HUGE, "nan", "inf", "-inf", "1e400"]


def numeric_options():
    for path, cmd in walk(main):
        for param in cmd.params:
            base = getattr(param.type, "name", "")
            if base in ("integer", "float", "integer range", "float range", "seconds"):
                yield pytest.param(path, param, id=f"{' '.join(path)} {param.name}")


@pytest.mark.parametrize(("path", "param"), list(numeric_options()))
def test_every_numeric_option_refuses_absurd_values(path, param):
    ctx = click.Context(main)
    for value in HOSTILE_NUMBERS:
        with pytest.raises(click.BadParameter):
            param.type.convert(value, param, ctx)


@pytest.mark.parametrize("args", [
    ["hq", "run", "--broker-port", "70000", "--password", "x"],
    ["sim", "pcsc", "--card", "x.mfd", "--port", "0"],
    ["broker", "init", "/tmp/never", "--hostname", "h", "--device-port", HUGE],
    ["hq", "enrolment-token", "--db", "sqlite:////nowhere/hq.db", "--store", "s", "--role",
     "gate", "--ttl-hours", "1e308"],
    ["hq", "enrolment-token", "--db", "sqlite:////nowhere/hq.db", "--store", "s", "--role",
     "gate", "--ttl-hours", "-1"],
    ["demo", "--gates", HUGE],
    ["demo", "--tap-rate", "nan"],
    ["hq", "command", "--site", "/tmp", "--device", "g", "--wait", "nan", "sync_now"],
])
def test_out_of_range_numbers_are_usage_errors(args):
    refused(run(*args), 2, "Invalid value")


# --- real processes ----------------------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "onecard.cli", *args], capture_output=True,
                          text=True, timeout=60)


def test_real_processes_print_no_traceback(tmp_path):
    db = f"sqlite:///{tmp_path / 'hq.db'}"
    dump = tmp_path / "short.mfd"
    dump.write_bytes(bytes(100))
    for args, code in [
        (["hq", "uid-credential", "add", "--db", db, "em4100", "0012345678", "--holder", "M3",
          "--max-amount-fen", "999999999999999999999999"], 2),
        (["hq", "denylist", "add", "M3", "--db", db, "--since", "99999999999999999999999"], 2),
        (["sim", "pcsc", "--card", str(dump)], 2),
        (["hq", "list-devices", "--db", "postgresql+psycopg://nobody@127.0.0.1:1/none"], 1),
    ]:
        done = cli(*args)
        assert done.returncode == code, (args, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        assert done.stderr.strip().splitlines()[-1].startswith("Error: "), done.stderr


def test_verbose_keeps_the_traceback_for_operational_errors():
    done = cli("-v", "hq", "list-devices", "--db", "postgresql+psycopg://nobody@127.0.0.1:1/x")
    assert done.returncode == 1 and "Traceback" in done.stderr
