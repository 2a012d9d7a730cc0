"""The fuzz targets in `make test`: the corpus replayed in-process, a short atheris run
per target, and proof that the harness catches a planted crash and replays it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.targets import CORPUS, TARGETS, corpus_inputs

ROOT = Path(__file__).resolve().parents[2]
#: Executions per target in `make test`: about a second each on one core; long runs are
#: `python -m bench.fuzz`.
SHORT_RUNS = 1000


def fuzz(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tests.fuzz.run", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_the_seed_corpus_replays_without_a_crash(name: str) -> None:
    inputs = corpus_inputs(name)
    assert len(inputs) >= 2, f"tests/fuzz/corpus/{name}/ needs seeds"
    accepted = 0
    for _path, data in inputs:
        try:
            TARGETS[name].run(data)
            accepted += 1
        except TARGETS[name].refusals:
            pass
    assert accepted >= 2, "the seeds must include valid inputs, or the fuzzer starts blind"


def test_every_corpus_folder_belongs_to_a_target() -> None:
    assert {p.name for p in CORPUS.iterdir() if p.is_dir()} == set(TARGETS)


@pytest.mark.subprocess
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_a_short_fuzz_run_finds_no_crash(name: str, tmp_path: Path) -> None:
    done = fuzz(name, "--runs", str(SHORT_RUNS), "--work", str(tmp_path / "work"),
                "--artifacts", str(tmp_path), cwd=tmp_path)
    crashes = sorted(p.name for p in tmp_path.glob("crash-*"))
    assert done.returncode == 0 and not crashes, (done.stdout + done.stderr)[-3000:]
    assert f"stat::number_of_executed_units: {SHORT_RUNS}" in done.stderr


@pytest.mark.subprocess
def test_a_planted_crash_is_found_saved_and_replayed(tmp_path: Path) -> None:
    found = fuzz("canary", "--runs", "200000", "--work", str(tmp_path / "work"),
                 "--artifacts", str(tmp_path), cwd=tmp_path)
    assert found.returncode != 0
    assert "the canary's planted bug" in found.stdout + found.stderr
    (crash,) = tmp_path.glob("crash-*")
    assert crash.read_bytes().startswith(b"!")
    replayed = fuzz("canary", str(crash), cwd=tmp_path)
    assert replayed.returncode != 0
    assert "the canary's planted bug" in replayed.stdout + replayed.stderr
