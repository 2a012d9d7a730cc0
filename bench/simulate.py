"""The simulator's long mode: run seeds until stopped (or ``--seconds``), print figures.

Each line is JSON with ``what``: seeds per second, steps per seed, faults injected by
kind, and any failing seed with the command that replays it.

    python -m bench.simulate --seeds 10000      # the issue's ten thousand, then figures
    python -m bench.simulate --start 100000 --seconds 60
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections import Counter

from tests.sim.world import replay_command, run_seed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--start", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=None, help="stop after (default: never)")
    parser.add_argument("--seeds", type=int, default=None, help="stop after this many seeds")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)
    faults: Counter[str] = Counter()
    seeds = steps = failed = 0
    began = last = time.perf_counter()
    seed = args.start
    try:
        while (args.seconds is None or time.perf_counter() - began < args.seconds) and \
                (args.seeds is None or seeds < args.seeds):
            try:
                report = run_seed(seed)
                steps += report.steps
                faults.update(report.faults)
            except AssertionError as exc:
                failed += 1
                print(json.dumps({"what": "failing seed", "seed": seed, "error": str(exc),
                                  "replay": replay_command(seed)}), flush=True)
            seeds += 1
            seed += 1
            if time.perf_counter() - last > 10:
                last = time.perf_counter()
                print(json.dumps({"what": "seeds per second",
                                  "figure": round(seeds / (last - began), 1)}), flush=True)
    except KeyboardInterrupt:
        pass
    elapsed = time.perf_counter() - began
    print(json.dumps({"what": "seeds per second", "figure": round(seeds / elapsed, 1)}))
    print(json.dumps({"what": "seeds run", "figure": seeds, "failed": failed}))
    print(json.dumps({"what": "steps per seed", "figure": round(steps / max(1, seeds), 1)}))
    for kind, n in sorted(faults.items()):
        print(json.dumps({"what": f"faults injected: {kind}", "figure": n}))


if __name__ == "__main__":
    main()
