"""Where ``onecard hq login`` keeps its session: a file only its user may read.

``$ONECARD_CONFIG_DIR/session.json`` (default ``$XDG_CONFIG_HOME/onecard`` or
``~/.config/onecard``), folder mode 0700, file mode 0600, one session per HQ database
(keyed by its URL without password). ``ONECARD_TOKEN`` (a session or API token) takes
precedence, for scripts and integrations. The file holds a session id, never a password.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def config_dir() -> Path:
    if os.environ.get("ONECARD_CONFIG_DIR"):
        return Path(os.environ["ONECARD_CONFIG_DIR"])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "onecard"


def session_path() -> Path:
    return config_dir() / "session.json"


def database_key(db_url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(db_url).render_as_string(hide_password=True)


def _read() -> dict[str, Any]:
    try:
        data = json.loads(session_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(data: dict[str, Any]) -> None:
    folder = config_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = session_path()
    temp = path.with_suffix(".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(data, out, indent=2)
    os.chmod(temp, 0o600)
    os.replace(temp, path)


def stored_token(db_url: str) -> str | None:
    entry = _read().get("sessions", {}).get(database_key(db_url))
    return entry.get("token") if isinstance(entry, dict) else None


def store_token(db_url: str, token: str, operator: str, expires_at_ms: int) -> Path:
    data = _read()
    data.setdefault("sessions", {})[database_key(db_url)] = {
        "token": token, "operator": operator, "expires_at_ms": expires_at_ms}
    _write(data)
    return session_path()


def forget_token(db_url: str) -> str | None:
    data = _read()
    entry = data.get("sessions", {}).pop(database_key(db_url), None)
    if entry is not None:
        _write(data)
    return entry.get("token") if isinstance(entry, dict) else None
