"""The ``onecard`` command reads well: every command and subcommand has its own help."""

from __future__ import annotations

import click
from click.testing import CliRunner

from onecard.cli import main


def walk(group: click.Group, path: tuple[str, ...] = ()):
    for name, cmd in group.commands.items():
        yield (*path, name), cmd
        if isinstance(cmd, click.Group):
            yield from walk(cmd, (*path, name))


def test_every_command_has_help():
    runner = CliRunner()
    top = runner.invoke(main, ["--help"])
    assert top.exit_code == 0 and "OneCard" in top.output
    for path, cmd in walk(main):
        result = runner.invoke(main, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert cmd.help, f"{' '.join(path)} has no help text"
        assert "Usage: " in result.output


def test_register_device_and_refusals(tmp_path, monkeypatch):
    from tests.cli_login import sign_in_cli

    runner = CliRunner()
    db = f"sqlite:///{tmp_path / 'hq.db'}"
    sign_in_cli(db, monkeypatch)
    key = "ab" * 32
    unknown = runner.invoke(main, ["hq", "add-device", "--db", db, "--device-id", "gate-01",
                                   "--public-key", key, "--store", "s1"])
    assert unknown.exit_code == 1 and "store 's1' is not known at HQ" in unknown.output
    added = runner.invoke(main, ["hq", "store", "add", "s1", "--db", db, "--name", "东区店"])
    assert added.exit_code == 0, added.output
    ok = runner.invoke(main, ["hq", "add-device", "--db", db, "--device-id", "gate-01",
                              "--public-key", key, "--store", "s1"])
    assert ok.exit_code == 0, ok.output
    again = runner.invoke(main, ["hq", "add-device", "--db", db, "--device-id", "gate-01",
                                 "--public-key", key, "--store", "s1"])
    assert again.exit_code != 0 and "already registered" in again.output
    bad = runner.invoke(main, ["hq", "add-device", "--db", db, "--device-id", "x'; DROP TABLE devices;--",
                               "--public-key", key, "--store", "s1"])
    assert bad.exit_code != 0 and "not a device id" in bad.output
    badkey = runner.invoke(main, ["hq", "add-device", "--db", db, "--device-id", "gate-02",
                                  "--public-key", "zz", "--store", "s1"])
    assert badkey.exit_code != 0 and "hex" in badkey.output
    listed = runner.invoke(main, ["hq", "list-devices", "--db", db])
    assert "gate-01" in listed.output and "gate-02" not in listed.output
    verify = runner.invoke(main, ["hq", "verify-ledger", "--db", db])
    assert verify.exit_code == 0 and "balanced" in verify.output
