"""The dependency rule of docs/architecture.md, checked on every import in the tree."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parent.parent
OURS = {"protocol", "terminal_fw", "kiosk", "hq_server", "simulators", "broker_config", "onecard"}
ALLOWED = {
    "protocol": set(),
    "terminal_fw": {"protocol"},
    "kiosk": {"terminal_fw", "protocol"},
    "hq_server": {"protocol"},
    "simulators": {"protocol"},
    "broker_config": set(),
    "onecard": OURS,
}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & OURS


def test_every_package_imports_only_what_it_may():
    violations = []
    checked = 0
    for package, allowed in ALLOWED.items():
        for path in (ROOT / package).rglob("*.py"):
            checked += 1
            for imported in imports_of(path) - allowed - {package}:
                violations.append(f"{path.relative_to(ROOT)} imports {imported}")
    assert checked > 10
    assert not violations, "\n".join(violations)


def test_nothing_imports_the_composition_root():
    for package in OURS - {"onecard"}:
        for path in (ROOT / package).rglob("*.py"):
            assert "onecard" not in imports_of(path), path
