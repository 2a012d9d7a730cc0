"""``onecard sim pn532 --card DUMP``: a PN532 host reaches the dumped card on the printed pty."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

from protocol.mifare import KeyType
from simulators.mifare_classic import MifareClassic1K
from terminal_fw.readers.pn532 import Pn532


def test_sim_pn532_serves_a_dump_and_saves_what_was_written(tmp_path):
    dump = tmp_path / "card.mfd"
    dump.write_bytes(MifareClassic1K.blank(bytes.fromhex("0A0B0C0D")).to_mfd())
    proc = subprocess.Popen([sys.executable, "-m", "onecard.cli", "sim", "pn532", "--card",
                             str(dump), "--save"], stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        match = re.search(r"stable link (\S+)\)", line)
        assert match, line
        with Pn532(match.group(1), ack_timeout=2.0) as chip:
            link = chip.wait_for_card(5.0)
            assert link is not None and link.uid() == bytes.fromhex("0A0B0C0D")
            link.authenticate(4, KeyType.A, b"\xff" * 6)
            link.write_block(6, b"dumped back!!!!!")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
    assert dump.read_bytes()[6 * 16:7 * 16] == b"dumped back!!!!!"
