"""Run one fuzz target under atheris (libFuzzer, coverage-guided).

    python -m tests.fuzz.run <target> --runs N       # N executions, then stop
    python -m tests.fuzz.run <target> --seconds S    # run for S seconds
    python -m tests.fuzz.run <target> FILE...        # replay inputs (a crash file)

The seed corpus in tests/fuzz/corpus/<target>/ is read but never written: inputs the
fuzzer finds go to ``--work`` (a temporary folder unless given). A crash prints the
traceback, writes the input to ``--artifacts`` as ``crash-<sha1>`` and exits non-zero.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import atheris

# Coverage comes from instrumenting the parsers' modules as they are imported.
with atheris.instrument_imports(include=["protocol", "terminal_fw.readers"]):
    from tests.fuzz.targets import CANARY, CORPUS, TARGETS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    runnable = {**TARGETS, CANARY.name: CANARY}
    parser.add_argument("target", choices=sorted(runnable))
    parser.add_argument("inputs", nargs="*", help="replay these files instead of fuzzing")
    parser.add_argument("--runs", type=int, default=0, help="executions (0: no limit)")
    parser.add_argument("--seconds", type=int, default=0, help="wall time (0: no limit)")
    parser.add_argument("--seed", type=int, default=1, help="libFuzzer's random seed")
    parser.add_argument("--work", help="folder for the inputs the fuzzer finds")
    parser.add_argument("--artifacts", default="./", help="folder for crash files")
    args = parser.parse_args(argv)
    target = runnable[args.target]
    flags = [f"-seed={args.seed}", f"-artifact_prefix={args.artifacts.rstrip('/')}/",
             "-max_len=4096", "-print_final_stats=1", "-rss_limit_mb=1024", "-timeout=10"]
    if args.inputs:
        atheris.Setup([sys.argv[0], *flags, *args.inputs], target)
        atheris.Fuzz()
        return 0
    if args.runs:
        flags.append(f"-runs={args.runs}")
    if args.seconds:
        flags.append(f"-max_total_time={args.seconds}")
    work = args.work or tempfile.mkdtemp(prefix=f"fuzz-{args.target}-")
    Path(work).mkdir(parents=True, exist_ok=True)
    seeds = CORPUS / args.target
    atheris.Setup([sys.argv[0], *flags, work, *([str(seeds)] if seeds.is_dir() else [])], target)
    atheris.Fuzz()  # exits the process: 0 when the runs are done, non-zero on a crash
    return 0


if __name__ == "__main__":
    sys.exit(main())
