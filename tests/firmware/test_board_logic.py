"""The firmware's rules, in CPython with fake pins and a hand-stepped clock (fast).

The same file runs on the RP2040 and, in tests/terminal_fw/test_ioboard.py, in real
MicroPython over a pty; here each rule is checked in milliseconds.
"""

from __future__ import annotations

from protocol import ioboard_frames as frames
from tests.firmware.board_world import Bench

REF = bytes.fromhex("0123456789abcdef")


def open_board(bench: Bench, ref: bytes = REF, timeout_ms: int = 1000) -> None:
    bench.send(frames.OPEN, frames.open_payload(ref, timeout_ms))
    bench.run(50)


def test_the_board_says_hello_and_starts_locked() -> None:
    bench = Bench()
    bench.run(50)
    [hello] = bench.messages(frames.HELLO)
    assert frames.parse_hello(hello) == (0x1234, frames.RESET_POWER_ON, frames.SAFE_LOCKED, 1)
    assert not bench.released


def test_one_passage_per_opening_and_the_door_locks_behind_it() -> None:
    bench = Bench()
    open_board(bench)
    assert bench.released and bench.pins["green"].level == 1
    bench.pulse("passage")
    assert not bench.released and bench.pins["green"].level == 0
    assert bench.passages() == [(REF, frames.COMPLETED, 1)]
    bench.pulse("passage")  # a second person pushes: the arm is locked, no report
    assert len(bench.passages()) == 1


def test_a_passage_not_taken_locks_at_the_timeout() -> None:
    bench = Bench()
    open_board(bench, timeout_ms=800)
    bench.run(700)
    assert bench.released
    bench.run(200)
    assert not bench.released and bench.passages() == [(REF, frames.NOT_TAKEN, 0)]


def test_the_timeout_is_capped_by_the_board() -> None:
    bench = Bench(MAX_OPEN_MS=2000)
    open_board(bench, timeout_ms=60000)
    bench.run(2100)
    assert not bench.released and bench.passages()[0][1] == frames.NOT_TAKEN


def test_an_open_repeated_after_its_answer_does_not_open_again() -> None:
    bench = Bench()
    open_board(bench)
    bench.pulse("passage")
    bench.board._handle(frames.OPEN, frames.open_payload(REF, 1000), bench.now)
    bench.run(50)
    assert not bench.released and len(bench.passages()) == 1


def test_a_second_opening_while_one_is_open_is_refused_as_busy() -> None:
    bench = Bench()
    open_board(bench)
    other = b"\x99" * 8
    open_board(bench, other)
    assert (other, frames.BUSY, 0) in bench.passages()
    bench.pulse("passage")
    assert (REF, frames.COMPLETED, 1) in bench.passages()


def test_a_stuck_passage_sensor_is_reported_and_keeps_the_door_shut() -> None:
    bench = Bench(STUCK_MS=500)
    bench.pins["passage"].level = 1
    bench.run(600)
    assert [p[1] for p in [m for m in bench.messages(frames.SENSOR)]] == [1]
    open_board(bench)
    assert not bench.released and bench.passages() == [(REF, frames.SENSOR_FAULT, 1)]
    bench.pins["passage"].level = 0
    bench.run(100)
    assert [m[1] for m in bench.messages(frames.SENSOR)] == [1, 0]


def test_a_forced_door_is_reported_with_an_alarm() -> None:
    bench = Bench()
    bench.pulse("forced")
    assert [frames.get_u32(m, 0) for m in bench.messages(frames.DOOR_FORCED)] == [1]
    assert 1 in bench.pins["buzzer"].history and 1 in bench.pins["red"].history


def test_silence_from_the_terminal_locks_the_door_by_default() -> None:
    bench = Bench(LINK_TIMEOUT_MS=1000)
    bench.run(50)
    bench.run(1100, talk=False)
    assert bench.board.mode == frames.MODE_SAFE_LOCKED and not bench.released
    assert bench.pins["red"].level == 1
    bench.send(frames.STATUS, frames.u16(77))
    bench.run(50)
    assert bench.board.mode == frames.MODE_LOCKED and bench.pins["red"].level == 0
    assert frames.parse_state(bench.messages(frames.STATE)[-1])[4] == 77, "answers that STATUS"


def test_a_fire_exit_board_frees_the_door_when_the_terminal_is_gone() -> None:
    bench = Bench(LINK_TIMEOUT_MS=1000, SAFE_STATE=frames.SAFE_FREE)
    bench.run(50)
    bench.run(1100, talk=False)
    assert bench.board.mode == frames.MODE_SAFE_FREE and bench.released
    bench.send(frames.STATUS)
    bench.run(50)
    assert not bench.released


def test_a_passage_open_when_the_terminal_goes_silent_still_ends_at_its_timeout() -> None:
    bench = Bench(LINK_TIMEOUT_MS=300)
    open_board(bench, timeout_ms=1500)
    bench.run(1000, talk=False)
    assert bench.released, "the member who paid still gets through"
    bench.run(600, talk=False)
    assert not bench.released and bench.board.mode == frames.MODE_SAFE_LOCKED
    bench.run(300)  # the terminal is back: the report it missed arrives
    assert bench.passages() == [(REF, frames.NOT_TAKEN, 0)]
