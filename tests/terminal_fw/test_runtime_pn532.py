"""``onecard terminal run --pn532-entry``: a terminal takes a tap on a PN532 board, here the
emulated one of ``onecard sim pn532`` holding a card made by ``onecard sim card --issue``."""

from __future__ import annotations

import json
import re
import selectors
import signal
import subprocess
import sys
import time

from click.testing import CliRunner

from hq_server.devices.card_keys import keys_to_json
from onecard.cli import main
from protocol.card_ops import read_balance
from simulators.mifare_classic import MifareClassic1K
from terminal_fw.runtime import RuntimeSettings
from tests.card_tx import make_runner
from tests.card_world import KEYS
from tests.runtime_world import config_doc, make_runtime

CONFIG = config_doc(1, gate={"group": 0, "accepts": ["swim"]})


def _issued_image(tmp_path):
    keys, config, out = tmp_path / "keys.json", tmp_path / "config.json", tmp_path / "card.mfd"
    keys.write_text(json.dumps(keys_to_json(KEYS)))
    config.write_text(json.dumps(CONFIG))
    result = CliRunner().invoke(main, ["sim", "card", "--issue", "--card-id", "M00042",
                                       "--product", "gold", "--keys", str(keys), "--config",
                                       str(config), "--visits", "swim", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def _line(proc: subprocess.Popen, timeout: float) -> str | None:
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    return proc.stdout.readline() if sel.select(timeout) else None


def test_terminal_run_takes_a_tap_on_sim_pn532(tmp_path):
    image = _issued_image(tmp_path)
    root = tmp_path / "gate-01"
    rt = make_runtime(root)  # identity, card keys, and the store's config in the local store
    rt.config.offer(CONFIG)
    rt.stop(clean=False)
    sim = subprocess.Popen([sys.executable, "-m", "onecard.cli", "sim", "pn532", "--card",
                            str(image), "--save"], stderr=subprocess.PIPE, text=True)
    terminal = None
    try:
        match = re.search(r"stable link (\S+)\)", sim.stderr.readline())
        assert match
        terminal = subprocess.Popen(
            [sys.executable, "-m", "onecard.cli", "terminal", "run", "--secrets",
             str(root / "secrets"), "--data", str(root / "data"), "--role", "gate",
             "--broker-port", "1", "--broker-password", "x", "--pn532-entry", match.group(1),
             "--mock-gpio", "--admit-timeout", "0.05", "--events"],
            stdout=subprocess.PIPE, text=True)
        deadline, opened = time.monotonic() + 30, None
        while opened is None and time.monotonic() < deadline:
            line = _line(terminal, deadline - time.monotonic())
            assert line, "the terminal stopped or said nothing"
            event = json.loads(line)
            assert event["event"] != "refused", event
            if event["event"] == "gate_open":
                opened = event
        assert opened is not None and opened["card"] == "M00042"
    finally:
        if terminal is not None:
            terminal.send_signal(signal.SIGTERM)
            terminal.wait(timeout=20)
        sim.send_signal(signal.SIGINT)
        sim.wait(timeout=10)
    card = MifareClassic1K.from_mfd(image.read_bytes())
    assert make_runner(None).run(card, read_balance).state.visits == {"swim": 9}


def test_settings_file_names_pn532_readers(tmp_path):
    path = tmp_path / "terminal.toml"
    path.write_text('[terminal]\nsecrets = "/s"\ndata = "/d"\n[readers]\n'
                    'pn532_entry = "/dev/serial0"\npn532_exit = "/dev/ttyUSB1"\n')
    settings = RuntimeSettings.from_toml(path)
    assert (settings.pn532_entry, settings.pn532_exit) == ("/dev/serial0", "/dev/ttyUSB1")
    assert RuntimeSettings.from_toml(path, pn532_entry="/dev/x").pn532_entry == "/dev/x"
