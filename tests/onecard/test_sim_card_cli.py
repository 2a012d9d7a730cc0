"""``onecard sim card --issue``: an issued card image a terminal of the chain accepts."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys

from click.testing import CliRunner

from hq_server.devices.card_keys import keys_to_json
from onecard.cli import main
from protocol.card_ops import read_balance
from simulators.mifare_classic import MifareClassic1K
from terminal_fw.readers.pn532 import Pn532
from tests.card_tx import make_runner, tap
from tests.card_world import KEYS
from tests.runtime_world import config_doc


def _bench_files(tmp_path):
    keys, config = tmp_path / "card-keys.json", tmp_path / "config.json"
    keys.write_text(json.dumps(keys_to_json(KEYS)))
    config.write_text(json.dumps(config_doc()))
    return keys, config


def _issue(tmp_path, *extra: str):
    keys, config = _bench_files(tmp_path)
    out = tmp_path / "card.mfd"
    result = CliRunner().invoke(main, ["sim", "card", "--issue", "--card-id", "M00042",
                                       "--product", "gold", "--keys", str(keys),
                                       "--config", str(config), "--out", str(out), *extra])
    return result, out


def test_issued_image_reads_back_with_the_chain_keys(tmp_path):
    result, out = _issue(tmp_path, "--uid", "0A0B0C0D", "--opening-fen", "50000",
                         "--visits", "swim:2")
    assert result.exit_code == 0, result.output
    said = json.loads(result.output)
    assert said["purse_fen"] == 50000 + 2500  # the catalogue's bonus tier applied
    assert len(out.read_bytes()) == 1024
    card = MifareClassic1K.from_mfd(out.read_bytes())
    assert card.uid() == bytes.fromhex("0A0B0C0D")
    read = make_runner(None).run(card, read_balance)
    assert read.ok, read.reason
    assert (read.state.card_id, read.state.card_product) == ("M00042", "gold")
    assert read.state.purse_fen == 52500 and read.state.visits == {"swim": 20}
    assert read.state.account_open


def test_the_gate_lets_the_issued_card_in(tmp_path):
    result, out = _issue(tmp_path, "--visits", "swim")
    assert result.exit_code == 0, result.output
    card = MifareClassic1K.from_mfd(out.read_bytes())
    assert tap(make_runner(None), card).ok
    assert make_runner(None).run(card, read_balance).state.visits == {"swim": 9}


def test_refusals_say_why_and_write_nothing(tmp_path):
    result, out = _issue(tmp_path, "--product", "platinum")
    assert result.exit_code != 0 and "platinum" in result.output
    assert not out.exists()
    result, out = _issue(tmp_path, "--visits", "swim:0")
    assert result.exit_code != 0 and "PRODUCT[:PACKAGES]" in result.output
    assert not out.exists()
    keys, config = _bench_files(tmp_path)
    keys.write_text('{"chain_id": 7}')
    result = CliRunner().invoke(main, ["sim", "card", "--issue", "--card-id", "M1",
                                       "--product", "gold", "--keys", str(keys), "--config",
                                       str(config), "--out", str(out)])
    assert result.exit_code != 0 and "card keys" in result.output and not out.exists()


def test_the_image_loads_in_sim_pn532(tmp_path):
    result, out = _issue(tmp_path, "--opening-fen", "1000")
    assert result.exit_code == 0, result.output
    proc = subprocess.Popen([sys.executable, "-m", "onecard.cli", "sim", "pn532", "--card",
                             str(out)], stderr=subprocess.PIPE, text=True)
    try:
        match = re.search(r"stable link (\S+)\)", proc.stderr.readline())
        assert match
        with Pn532(match.group(1), ack_timeout=2.0) as chip:
            link = chip.wait_for_card(5.0)
            assert link is not None
            read = make_runner(None).run(link, read_balance)
        assert read.ok and read.state.card_id == "M00042" and read.state.purse_fen == 1000
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)


def test_the_guides_bench_card_command_works_with_the_guides_example_config(tmp_path):
    """docs/deploy-terminal.md's `sim card --issue` line, run as written against its own
    example config: the card it makes is let in by that config's gate."""
    import re as regex
    import shlex
    from pathlib import Path

    from protocol.terminal_config import parse_config
    from terminal_fw.tap import IntentJournal, TapRunner

    guide = (Path(__file__).parents[2] / "docs" / "deploy-terminal.md").read_text()
    example = regex.search(r"```json\n(\{\"version\".*?)```", guide, regex.S).group(1)
    line = regex.search(r"^onecard sim card --issue .*$", guide, regex.M).group(0)
    (tmp_path / "config.json").write_text(example)
    (tmp_path / "site" / "hq").mkdir(parents=True)
    (tmp_path / "site" / "hq" / "card-keys.json").write_text(json.dumps(keys_to_json(KEYS)))
    args = [a.replace("site/", f"{tmp_path}/site/").replace("config.json",
                                                           str(tmp_path / "config.json"))
            .replace("card.mfd", str(tmp_path / "card.mfd")) for a in shlex.split(line)[1:]]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    card = MifareClassic1K.from_mfd((tmp_path / "card.mfd").read_bytes())
    gate = make_runner(None)
    config = parse_config(json.loads(example))
    from datetime import datetime, timedelta, timezone

    beijing = timezone(timedelta(hours=8))  # tomorrow 10:00, when the example is open
    day = datetime.now(beijing).date() + timedelta(days=1)
    at = datetime(day.year, day.month, day.day, 10, tzinfo=beijing).timestamp()
    gate = TapRunner(gate.identity, gate.outbox, IntentJournal(gate.outbox, clock=lambda: at),
                     KEYS, config=lambda: config, denylist=frozenset, offline=lambda: False,
                     clock=lambda: at)
    assert tap(gate, card).ok
