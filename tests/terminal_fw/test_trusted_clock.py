"""A terminal without a real-time clock: HQ's time before serving, and a floor on disk
that refuses a clock that went backwards past the last time used."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from terminal_fw.runtime import Runtime
from terminal_fw.trusted_clock import FLOOR_STEP_S, ClockWentBack, TrustedClock
from tests.runtime_world import make_settings

T = 1_800_000_000.0  # a system time in 2027


class FakeSystem:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_hq_time_replaces_a_system_clock_that_booted_in_1970(tmp_path):
    system = FakeSystem(0.0)  # a Pi after a power cut, no RTC, no NTP
    clock = TrustedClock(tmp_path, system)
    clock.set_from_hq(int(T * 1000))
    assert clock.now() == pytest.approx(T)
    system.t = 5.0
    assert clock.check() == pytest.approx(T + 5.0)


def test_a_clock_behind_the_floor_is_refused_after_a_restart(tmp_path):
    system = FakeSystem(T)
    TrustedClock(tmp_path, system).check()  # records the floor at T
    system.t = T - 3600  # rebooted, the clock lost an hour; HQ not reachable
    again = TrustedClock(tmp_path, system)
    with pytest.raises(ClockWentBack, match="backwards"):
        again.check()
    again.set_from_hq(int((T + 10) * 1000))  # HQ answers: the time is right again
    assert again.check() == pytest.approx(T + 10)


def test_a_clock_ahead_of_the_floor_serves_offline(tmp_path):
    system = FakeSystem(T)
    TrustedClock(tmp_path, system).check()
    system.t = T + 60
    assert TrustedClock(tmp_path, system).check() == pytest.approx(T + 60)


def test_a_torn_floor_file_does_not_stop_the_terminal(tmp_path):
    (tmp_path / "clock.json").write_text('{"floor_s": ')
    assert TrustedClock(tmp_path, FakeSystem(T)).check() == pytest.approx(T)


@given(st.lists(st.floats(min_value=-1e6, max_value=1e6), min_size=1, max_size=20))
def test_check_never_returns_a_time_before_one_it_returned(tmp_path_factory, steps):
    folder = tmp_path_factory.mktemp("clock")
    system = FakeSystem(T)
    returned: list[float] = []
    for step in steps:
        system.t = T + step
        try:
            returned.append(TrustedClock(folder, system).check())
        except ClockWentBack:
            continue
    # The floor moves in steps of FLOOR_STEP_S: never more than that behind a time used.
    assert all(r >= max(returned[:i + 1]) - FLOOR_STEP_S for i, r in enumerate(returned))


def test_the_runtime_refuses_to_sign_on_a_clock_that_went_backwards(tmp_path):
    settings = make_settings(tmp_path)
    system = FakeSystem(T)
    rt = Runtime(settings, clock=system)
    assert rt.guard() is None
    rt.stop(clean=False)
    system.t = T - 86400
    rt = Runtime(settings, clock=system)
    try:
        assert "clock went backwards" in (rt.guard() or "")  # every tap asks the guard
        rt.apply_check_in({"hq_time_ms": int((T + 5) * 1000)})
        assert rt.guard() is None
    finally:
        rt.stop(clean=False)
