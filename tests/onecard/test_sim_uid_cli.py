"""``onecard sim idcard`` / ``sim qr``: serial UID readers on a pty, fed from stdin or a timer,
read by the terminal's own serial reader driver."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import pytest

from terminal_fw.readers.serial_uid import SerialUidReader


def _start(*args: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "onecard.cli", "sim", *args],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    match = re.search(r" on (/dev/[^\s;()]+)", proc.stderr.readline())
    assert match, "no pty path printed"
    proc.stderr.readline()  # the how-to line
    return proc, match.group(1)


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=10)


def _read(reader: SerialUidReader) -> str:
    read = reader.read(5.0)
    assert read is not None, "nothing arrived"
    return read.value


@pytest.mark.parametrize("framing", ["line", "rdm6300"])
def test_idcard_presents_each_stdin_line(framing):
    proc, path = _start("idcard", "--tag", "0012345678", "--framing", framing)
    try:
        with SerialUidReader(path, "em4100") as reader:
            proc.stdin.write("1a2b3c4d5e\n")
            proc.stdin.flush()
            assert _read(reader) == "1A2B3C4D5E"
            assert proc.stderr.readline().strip() == "presented 1A2B3C4D5E"
            proc.stdin.write("not a card\n\n")  # skipped with a reason, then the default
            proc.stdin.flush()
            assert "not presented" in proc.stderr.readline()
            assert _read(reader) == "0012345678"
    finally:
        _stop(proc)


def test_qr_scans_on_a_timer_and_from_stdin():
    proc, path = _start("qr", "--text", "TICKET-2026-0007", "--every", "0.1")
    try:
        with SerialUidReader(path, "qr") as reader:
            assert _read(reader) == "TICKET-2026-0007"
            assert _read(reader) == "TICKET-2026-0007"
            proc.stdin.write("会员-42\n")
            proc.stdin.flush()
            seen = {_read(reader) for _ in range(6)}
            assert "会员-42" in seen
    finally:
        _stop(proc)


def test_every_needs_a_credential():
    from click.testing import CliRunner

    from onecard.cli import main

    result = CliRunner().invoke(main, ["sim", "qr", "--every", "1"])
    assert result.exit_code == 2 and "--text" in result.output
