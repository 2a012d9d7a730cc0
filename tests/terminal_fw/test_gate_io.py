"""Gate I/O through gpiozero's mock pins with the turnstile model on the same pins."""

from __future__ import annotations

import threading

import pytest
from gpiozero.pins.mock import MockFactory

from simulators.turnstile import TurnstileModel
from terminal_fw.gate_io import GateIO


@pytest.fixture
def rig():
    factory = MockFactory()
    gate = GateIO(pin_factory=factory, admit_timeout=2.0)
    turnstile = TurnstileModel(factory)
    yield gate, turnstile
    gate.close()


def test_locked_until_admitted_and_one_passage_per_admission(rig):
    gate, turnstile = rig
    assert not turnstile.walk_through()
    result: list[bool] = []
    t = threading.Thread(target=lambda: result.append(gate.admit()))
    t.start()
    assert turnstile.walk_through(wait=2.0)
    t.join(5)
    assert result == [True]
    assert not turnstile.released and not gate.green.is_lit
    assert not turnstile.walk_through()  # the next person is stopped
    assert (turnstile.passages, turnstile.blocked, gate.passages) == (1, 2, 1)


def test_admission_times_out_and_closes_when_nobody_walks(rig):
    gate, turnstile = rig
    assert gate.admit(timeout=0.1) is False
    assert not turnstile.released
    assert gate.passages == 0


def test_refusal_keeps_the_arm_locked_and_signals(rig):
    gate, turnstile = rig
    gate.refuse()
    assert not turnstile.walk_through(wait=0.2)
    assert any(state for _, state in gate.red.pin.states)  # the red LED blinked
    assert any(state for _, state in gate.buzzer.pin.states)  # and the buzzer beeped
    assert not any(state for _, state in gate.relay.pin.states)  # the relay never moved
