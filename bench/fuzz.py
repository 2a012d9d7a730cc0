"""Long fuzz runs: every parser target under atheris for a while, executions per second.

    python -m bench.fuzz [--seconds 60] [--target NAME ...] [--grow]

Each target runs in its own process (libFuzzer owns the process) for ``--seconds``,
starting from its seed corpus in tests/fuzz/corpus/<target>/. Each line is JSON with
``what``: the executions per second of a target (``figure``), with the executions run,
the new inputs found and the crashes. A crash leaves ``crash-<sha1>`` in ``--artifacts``
(the current folder by default) and is replayed with
``python -m tests.fuzz.run <target> crash-<sha1>``; docs/testing.md says how it becomes a
regression test. ``--grow`` keeps the inputs found in tests/fuzz/corpus/<target>/ (minimise
and review them before committing: the corpus stays a few KB).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.fuzz.targets import CORPUS, TARGETS

_STAT = re.compile(r"^stat::(\w+):\s+(\d+)", re.M)


def run_target(name: str, seconds: int, artifacts: Path, work: Path) -> dict[str, object]:
    """Fuzz one target for ``seconds``; its figures from libFuzzer's final statistics."""
    before = set(artifacts.glob("crash-*"))
    done = subprocess.run(
        [sys.executable, "-m", "tests.fuzz.run", name, "--seconds", str(seconds),
         "--work", str(work), "--artifacts", str(artifacts)],
        capture_output=True, text=True)
    stats = {k: int(v) for k, v in _STAT.findall(done.stderr)}
    crashes = sorted(str(p) for p in set(artifacts.glob("crash-*")) - before)
    executions = stats.get("number_of_executed_units", 0)
    return {"what": f"fuzz executions per second: {name}",
            "figure": round(executions / max(seconds, 1)),
            "executions": executions, "new_inputs": stats.get("new_units_added", 0),
            "crashes": len(crashes) or int(done.returncode != 0), "crash_files": crashes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=60, help="per target")
    parser.add_argument("--target", action="append", choices=sorted(TARGETS),
                        help="only these targets (repeatable; default all)")
    parser.add_argument("--artifacts", default=".", help="folder for crash files")
    parser.add_argument("--grow", action="store_true",
                        help="keep new inputs in the repository's corpus")
    args = parser.parse_args(argv)
    artifacts = Path(args.artifacts)
    artifacts.mkdir(parents=True, exist_ok=True)
    total_crashes = 0
    for name in args.target or sorted(TARGETS):
        work = CORPUS / name if args.grow else Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-"))
        line = run_target(name, args.seconds, artifacts, work)
        total_crashes += int(line["crashes"])  # type: ignore[call-overload]
        print(json.dumps(line), flush=True)
    print(json.dumps({"what": "fuzz crashes", "figure": total_crashes}))
    return 1 if total_crashes else 0


if __name__ == "__main__":
    sys.exit(main())
