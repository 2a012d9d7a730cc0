"""The dependency rule and the pure modules of docs/architecture.md, checked on every import.

The rules are read from the document itself (the package table and the list of pure
modules), so the documentation and the check cannot drift apart.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
DOC = ROOT / "docs" / "architecture.md"

#: What a pure module may not import: clocks, threads, sockets, processes, databases,
#: MQTT and serial/PC-SC clients.
IMPURE_IMPORTS = {"time", "threading", "socket", "select", "selectors", "asyncio",
                  "subprocess", "multiprocessing", "sqlite3", "sqlite_utils", "sqlalchemy",
                  "psycopg", "paho", "serial", "smartcard", "httpx", "requests", "urllib",
                  "uvicorn", "fastapi", "concurrent"}
#: Calls that read the clock (datetime itself is fine for date arithmetic).
CLOCK_CALLS = re.compile(r"\b(datetime\.now|datetime\.utcnow|date\.today|datetime\.today)\(")


def dependency_table() -> dict[str, set[str] | None]:
    """package → packages of ours it may import (None: anything) from the doc's table."""
    text = DOC.read_text()
    section = text.split("## Packages and the dependency rule", 1)[1].split("\n## ", 1)[0]
    table: dict[str, set[str] | None] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        names = re.findall(r"`([a-z_]+)/`", cells[0])
        allowed_cell = cells[-1]
        allowed = None if allowed_cell.startswith("anything") else set(
            re.findall(r"`([a-z_]+)`", allowed_cell))
        for name in names:
            if (ROOT / name / "__init__.py").exists():
                table[name] = allowed
    return table


def pure_modules() -> list[Path]:
    text = DOC.read_text()
    para = text.split("**Pure modules**", 1)[1].split("\n\n", 1)[0]
    paths: list[Path] = []
    for name in re.findall(r"`([a-z_/]+(?:\.py)?)`", para.split(":", 1)[1]):
        target = ROOT / name
        paths.extend(sorted(target.rglob("*.py")) if target.is_dir() else [target])
    return paths


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_the_documented_table_names_every_package():
    table = dependency_table()
    ours = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists() and p.name != "tests"}
    assert ours <= set(table), f"packages missing from docs/architecture.md: {ours - set(table)}"
    assert table["protocol"] == set()
    assert table["onecard"] is None


def test_every_package_imports_only_what_it_may():
    table = dependency_table()
    ours = set(table)
    violations = []
    checked = 0
    for package, allowed in table.items():
        if allowed is None:
            continue
        for path in (ROOT / package).rglob("*.py"):
            checked += 1
            for imported in (imports_of(path) & ours) - allowed - {package}:
                violations.append(f"{path.relative_to(ROOT)} imports {imported}")
    assert checked > 10
    assert not violations, "\n".join(violations)


def test_nothing_imports_the_composition_root():
    table = dependency_table()
    for package in [p for p, allowed in table.items() if allowed is not None]:
        for path in (ROOT / package).rglob("*.py"):
            assert "onecard" not in imports_of(path), path


def test_pure_modules_hold_no_clock_thread_socket_or_client():
    modules = pure_modules()
    assert len(modules) > 10 and all(m.exists() for m in modules), modules
    violations = []
    for path in modules:
        for imported in imports_of(path) & IMPURE_IMPORTS:
            violations.append(f"{path.relative_to(ROOT)} imports {imported}")
        if CLOCK_CALLS.search(path.read_text()):
            violations.append(f"{path.relative_to(ROOT)} reads the clock")
    assert not violations, "\n".join(violations)
