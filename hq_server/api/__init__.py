"""HQ's HTTP API: FastAPI on uvicorn, TLS only, OpenAPI at ``/openapi.json``.

It starts with device enrolment and the operator endpoints around it; later parts of
HQ add their routers to :func:`hq_server.api.app.create_app`.

``create_app`` and ``ApiServer`` are imported on first use, so a domain module can use
:mod:`hq_server.api.common` (pagination, idempotency, edit conflicts) while the routers
import that domain module, without an import cycle.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ApiServer", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from hq_server.api.app import create_app

        return create_app
    if name == "ApiServer":
        from hq_server.api.server import ApiServer

        return ApiServer
    raise AttributeError(f"module 'hq_server.api' has no attribute {name!r}")
