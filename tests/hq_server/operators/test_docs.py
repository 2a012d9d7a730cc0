"""docs/operators.md's table of roles says what ROLE_PERMISSIONS does."""

from __future__ import annotations

import re
from pathlib import Path

from hq_server.operators.access import PERMISSIONS, ROLE_PERMISSIONS

DOC = Path(__file__).resolve().parents[3] / "docs" / "operators.md"
COLUMNS = ["cashier", "auditor", "store_manager", "region_manager", "hq_admin"]


def documented() -> dict[str, dict[str, bool]]:
    table: dict[str, dict[str, bool]] = {}
    for line in DOC.read_text().splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        names = re.findall(r"`([a-z_.]+)`", cells[0])
        if len(cells) != 6 or not all(n in PERMISSIONS for n in names):
            continue
        for role, cell in zip(COLUMNS, cells[1:], strict=True):
            marks = [m.strip() for m in cell.split("/")]
            if len(marks) == 1:
                marks *= len(names)
            for name, mark in zip(names, marks, strict=True):
                table.setdefault(name, {})[role] = mark == "✓"
    return table


def test_the_roles_table_matches_the_code():
    table = documented()
    assert set(table) == set(PERMISSIONS)
    for permission, roles in table.items():
        for role in COLUMNS:
            assert roles[role] == (permission in ROLE_PERMISSIONS[role]), (permission, role)


def test_the_guide_links_the_audit_and_backup_guide():
    assert "(audit-and-backup.md)" in DOC.read_text()
