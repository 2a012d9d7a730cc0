"""HQ's HTTP API: FastAPI on uvicorn, TLS only, OpenAPI at ``/openapi.json``.

It starts with device enrolment and the operator endpoints around it; later parts of
HQ add their routers to :func:`hq_server.api.app.create_app`.
"""

from hq_server.api.app import create_app
from hq_server.api.server import ApiServer

__all__ = ["ApiServer", "create_app"]
