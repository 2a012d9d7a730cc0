"""The gate I/O board end to end: the real firmware running in MicroPython's unix port on
a pty, the terminal's driver (pyserial) on the other end, and faults on the cable between.

Every test checks the three promises: no passage counted twice or lost, the door never
left open after the timeout, and the safe state when the terminal stops talking.
"""

from __future__ import annotations

import time

import pytest

from protocol import ioboard_frames as frames
from simulators.ioboard import BOARD_TO_PI, PI_TO_BOARD, BoardRig
from terminal_fw.passage import Passage
from tests.terminal_fw.ioboard_world import Driver, wait_for

pytestmark = pytest.mark.subprocess
REF = "0123456789abcdef"
RED = 17


@pytest.fixture
def rig():
    with BoardRig(link_timeout_ms=2500, stuck_ms=800) as board:
        yield board


@pytest.fixture
def driver(rig):
    d = Driver(rig.port)
    wait_for(lambda: d.board.boot is not None, what="the board's HELLO")
    yield d
    d.close()


def test_one_opening_lets_exactly_one_person_through_and_is_reported(rig, driver):
    assert not rig.walk_through()  # locked before anything is asked
    result = driver.open_in_background(REF)
    assert rig.walk_through(wait=5)
    assert not rig.walk_through(wait=0.3), "the next person is stopped"
    [report] = wait_for(lambda: result, what="the passage report")
    assert report.outcome is Passage.COMPLETED and report.ref == REF
    assert (rig.passages, rig.blocked, driver.board.passages) == (1, 2, 1)
    assert driver.board.status()["passages"] == 1


def test_a_passage_not_taken_locks_at_the_timeout(rig, driver):
    started = time.monotonic()
    result = driver.open_in_background(REF, timeout=1.0)
    assert rig.wait_released(5)
    [report] = wait_for(lambda: result, what="the report")
    assert report.outcome is Passage.NOT_TAKEN
    assert not rig.released and time.monotonic() - started >= 1.0
    assert not rig.walk_through()


def test_garbled_frames_both_ways_are_dropped_and_repeated(rig, driver):
    rig.garble(PI_TO_BOARD, 2)
    rig.garble(BOARD_TO_PI, 2)
    result = driver.open_in_background(REF)
    assert rig.walk_through(wait=5)
    [report] = wait_for(lambda: result, what="the report")
    assert report.outcome is Passage.COMPLETED
    assert driver.board.link.errors >= 1, "the driver saw garbage and dropped it"
    assert (rig.passages, driver.board.passages) == (1, 1) and not driver.late


def test_lost_acknowledgements_neither_reopen_the_door_nor_count_twice(rig, driver):
    rig.drop_acks(BOARD_TO_PI, 2, of=frames.OPEN)  # the terminal repeats OPEN
    rig.drop_acks(PI_TO_BOARD, 3, of=frames.PASSAGE)  # the board repeats PASSAGE
    result = driver.open_in_background(REF)
    assert rig.walk_through(wait=5)
    [report] = wait_for(lambda: result, what="the report")
    assert report.outcome is Passage.COMPLETED
    wait_for(lambda: rig.cable[BOARD_TO_PI].lost == 2 and rig.cable[PI_TO_BOARD].lost == 3,
             what="the acknowledgements lost")
    assert not rig.walk_through(wait=1.0), "the repeated OPEN did not open again"
    assert driver.board.passages == 1 and not driver.late
    assert driver.board.status()["passages"] == 1


def test_a_board_reset_mid_passage_locks_the_door_and_reports_it_interrupted(rig, driver):
    result = driver.open_in_background(REF, timeout=5)
    assert rig.wait_released(5)
    rig.reset_board()
    assert not rig.released, "the relay dropped with the power"
    [report] = wait_for(lambda: result, what="the report")
    assert report.outcome is Passage.INTERRUPTED
    assert "board_reset" in driver.event_names()
    assert not rig.walk_through(wait=0.5)
    again = driver.open_in_background("00000000000000aa")
    assert rig.walk_through(wait=5)
    assert wait_for(lambda: again)[0].outcome is Passage.COMPLETED


def test_the_terminal_restarting_while_the_door_is_open_loses_no_passage(rig, driver):
    result = driver.open_in_background(REF, timeout=4)
    assert rig.wait_released(5)
    driver.close()  # the Pi reboots with the door open
    assert wait_for(lambda: result)[0].outcome is Passage.UNKNOWN
    assert rig.walk_through(wait=1), "the member who paid still gets through"
    assert not rig.released
    restarted = Driver(rig.port)
    try:
        [late] = wait_for(lambda: restarted.late, what="the report the Pi missed")
        assert (late.ref, late.outcome, late.late) == (REF, Passage.COMPLETED, True)
        time.sleep(0.5)
        assert len(restarted.late) == 1 and rig.passages == 1
    finally:
        restarted.close()


def test_the_door_closes_at_its_timeout_though_the_terminal_is_gone(rig, driver):
    driver.open_in_background(REF, timeout=1.0)
    assert rig.wait_released(5)
    driver.close()
    assert rig.wait_output(15, 0, 5), "locked at the timeout"
    assert wait_for(lambda: rig.output(RED) == 1, what="the safe state (locked, red)")
    assert not rig.walk_through(wait=0.5)
    back = Driver(rig.port)
    try:
        [late] = wait_for(lambda: back.late, what="the late report")
        assert late.outcome is Passage.NOT_TAKEN
        assert wait_for(lambda: rig.output(RED) == 0, what="out of the safe state")
    finally:
        back.close()


def test_a_stuck_sensor_is_reported_and_the_door_is_not_opened(rig, driver):
    rig.stick_passage_sensor()
    wait_for(lambda: "sensor_stuck" in driver.event_names(), what="the sensor report")
    result = driver.open_in_background(REF)
    [report] = wait_for(lambda: result, what="the refusal")
    assert (report.outcome, report.reason) == (Passage.NOT_OPENED, "sensor_fault")
    assert not any(gpio == 15 and value for _, gpio, value in rig.output_log)
    assert driver.board.passages == 0
    rig.stick_passage_sensor(False)
    wait_for(lambda: "sensor_ok" in driver.event_names(), what="the sensor working again")
    result = driver.open_in_background("00000000000000bb")
    assert rig.walk_through(wait=5)
    assert wait_for(lambda: result)[0].outcome is Passage.COMPLETED


def test_an_unplugged_cable_never_opens_and_then_locks_the_board_safe(rig, driver):
    rig.unplug()
    report = driver.board.pass_one(REF)
    assert report.outcome is Passage.UNKNOWN, "the OPEN went out: it may have arrived"
    assert not any(gpio == 15 and value for _, gpio, value in rig.output_log)
    assert wait_for(lambda: rig.output(RED) == 1, what="the safe state")
    assert not rig.released
    rig.plug()
    assert wait_for(lambda: rig.output(RED) == 0, what="the link back")
    # the board's first STATE after the cable is back settles it: it never opened
    [late] = wait_for(lambda: driver.late, what="the late answer")
    assert (late.ref, late.outcome, late.late) == (REF, Passage.NOT_OPENED, True)
    result = driver.open_in_background("00000000000000cc")
    assert rig.walk_through(wait=5)
    assert wait_for(lambda: result)[0].outcome is Passage.COMPLETED


def test_a_cable_pulled_mid_passage_is_reported_once_it_is_back(rig, driver):
    result = driver.open_in_background(REF, timeout=1.0)
    assert rig.wait_released(5)
    rig.unplug()
    assert rig.walk_through(wait=1)
    assert wait_for(lambda: result)[0].outcome is Passage.UNKNOWN
    assert not rig.released
    rig.plug()
    [late] = wait_for(lambda: driver.late, what="the late report")
    assert (late.ref, late.outcome) == (REF, Passage.COMPLETED)
    time.sleep(0.5)
    assert len(driver.late) == 1 and driver.board.passages == 1 == rig.passages


def test_a_fire_exit_board_frees_the_door_while_the_terminal_is_silent():
    with BoardRig(link_timeout_ms=1000, safe_state=frames.SAFE_FREE) as rig:
        d = Driver(rig.port)
        wait_for(lambda: d.board.boot is not None, what="HELLO")
        assert not rig.released
        d.close()  # the terminal stops talking
        assert rig.wait_released(5), "free passage for everyone"
        assert rig.walk_through() and rig.walk_through()
        back = Driver(rig.port)
        try:
            assert rig.wait_output(15, 0, 5), "locked again when the terminal is back"
        finally:
            back.close()
