"""``onecard terminal``: a key roll waits until HQ has acknowledged every record."""

from __future__ import annotations

from click.testing import CliRunner

from onecard.cli import main
from protocol.record import GENESIS_HASH, Operation, TransactionRecord
from terminal_fw.identity import load_or_create
from terminal_fw.outbox import Outbox


def test_roll_keys_refuses_while_records_wait_for_hq_and_touches_nothing(tmp_path):
    secrets = tmp_path / "secrets"
    ident = load_or_create(secrets, "gate-01", "store-01")
    outbox = Outbox(tmp_path / "terminal.db")
    outbox.append(TransactionRecord("gate-01", 0, GENESIS_HASH, 1, "M00001",
                                    Operation.TAKE_VISIT, "store-01", product="swim",
                                    visits_before=3, visits_after=2), ident.signing_key)
    before = {p.name: p.read_bytes() for p in secrets.iterdir()}

    result = CliRunner().invoke(main, ["terminal", "roll-keys", "--hq", "https://127.0.0.1:1",
                                       "--secrets", str(secrets),
                                       "--store-db", str(tmp_path / "terminal.db")])

    assert result.exit_code == 1, result.output
    assert "1 records still wait for HQ's ack" in result.output
    assert {p.name: p.read_bytes() for p in secrets.iterdir()} == before  # no new key made
    assert outbox.backlog() == 1
