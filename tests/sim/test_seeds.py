"""Ten thousand seeded schedules of the whole site, every invariant checked at every step.

Each seed runs the real terminal tap path, uplink and HQ ingest under faults the seed
chooses (tests/sim/world.py). A failure names its seed and the one command that replays
it. ``ONECARD_SIM_SEEDS`` changes how many seeds run (default 10,000, in ten parts).
"""

from __future__ import annotations

import logging
import os

import pytest

from tests.sim.world import REPORT_AFTER_S, replay_command, run_seed

SEEDS = int(os.environ.get("ONECARD_SIM_SEEDS", "10000"))
PARTS = 10


@pytest.mark.parametrize("part", range(PARTS))
def test_every_invariant_holds_under_seeded_faults(part, caplog):
    caplog.set_level(logging.CRITICAL)
    per_part = -(-SEEDS // PARTS)
    failures = []
    for seed in range(part * per_part, min(SEEDS, (part + 1) * per_part)):
        try:
            run_seed(seed)
        except AssertionError as exc:
            failures.append(f"{exc}\n  replay: {replay_command(seed)}")
            if len(failures) >= 3:
                break
    assert not failures, "\n".join(failures)


def test_a_seed_replays_the_same_schedule():
    first, again = run_seed(12345), run_seed(12345)
    assert (first.steps, first.taps, first.faults, first.records_ledgered) == \
        (again.steps, again.taps, again.faults, again.records_ledgered)
    assert REPORT_AFTER_S > 0
