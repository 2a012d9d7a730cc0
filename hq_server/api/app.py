"""The FastAPI application: one router per domain, composed over HQ's parts.

Operators authenticate with a browser session (cookie + CSRF token), a bearer API token
or session, or HTTP Basic over TLS (:mod:`hq_server.api.dependencies`); every route
declares the permission it needs. Every error is problem details (RFC 9457, :mod:`hq_server.api.problems`,
the one place that maps domain errors to HTTP; ``docs/api.md``) with a status a client
can act on; nothing secret (tokens, keys, passwords) is ever logged or echoed.
"""

from __future__ import annotations

import secrets

from fastapi import FastAPI
from sqlalchemy.engine import Engine

from hq_server.api import problems
from hq_server.api.dependencies import HqParts
from hq_server.api.routers import (
    audit,
    cards,
    chain,
    devices,
    enrolment,
    health,
    members,
    operators,
    reports,
)
from hq_server.devices.card_keys import CardKeyring
from hq_server.devices.enrolment import BrokerAddress, DeviceAuthority

#: The routers, in the order their routes appear in the OpenAPI document.
ROUTERS = (health.router, enrolment.router, devices.router, operators.router, chain.router,
           cards.router, members.router, reports.router, audit.router)


def create_app(engine: Engine, authority: DeviceAuthority, broker: BrokerAddress,
               card_keys: CardKeyring | None = None) -> FastAPI:
    app = FastAPI(title="OneCard HQ", version="1",
                  description="HQ's API for terminals (enrolment) and operators.")
    problems.install(app)
    app.state.hq = HqParts(engine, authority, broker, card_keys)
    for router in ROUTERS:
        app.include_router(router)
    app.state.instance = secrets.token_hex(4)
    return app
