"""Replay seeds of the deterministic simulator: ``python -m tests.sim --seed N``.

Prints the seed's figures (steps, faults injected by kind) or the broken invariant with
its traceback. ``--seeds A:B`` runs a range.
"""

from __future__ import annotations

import argparse
import sys
import traceback

from tests.sim.world import run_seed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.sim")
    parser.add_argument("--seed", type=int, help="one seed to replay")
    parser.add_argument("--seeds", help="a range START:STOP")
    args = parser.parse_args(argv)
    if args.seed is not None:
        seeds = range(args.seed, args.seed + 1)
    elif args.seeds:
        start, stop = (int(x) for x in args.seeds.split(":"))
        seeds = range(start, stop)
    else:
        parser.error("give --seed N or --seeds A:B")
    failed = 0
    for seed in seeds:
        try:
            report = run_seed(seed)
        except BaseException:  # noqa: BLE001 - print the seed's failure, go on
            failed += 1
            print(f"seed {seed}: FAILED")
            traceback.print_exc()
            continue
        faults = ", ".join(f"{k} {v}" for k, v in sorted(report.faults.items()))
        print(f"seed {seed}: ok, {report.steps} steps, {report.taps} taps, "
              f"{report.records_ledgered} records ledgered; faults: {faults or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
