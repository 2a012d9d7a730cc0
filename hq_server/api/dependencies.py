"""What every router asks of HQ: its parts (:class:`HqParts`) and the operator calling.

``create_app`` puts the parts on ``app.state``; a route gets them through
:func:`hq_parts` and the authenticated operator through :func:`current_operator`, whose
refusal (:class:`~hq_server.operators.accounts.AuthenticationFailed`) becomes a 401
problem in :mod:`hq_server.api.problems`, like every other domain error.
"""

# No "from __future__ import annotations": FastAPI resolves these annotations at runtime.
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from sqlalchemy.engine import Engine

from hq_server.devices.card_keys import CardKeyring
from hq_server.devices.enrolment import BrokerAddress, DeviceAuthority
from hq_server.operators.access import Actor, Level, Scope
from hq_server.operators.accounts import AuthenticationFailed, Operator, authenticate

REALM = "OneCard HQ"
basic = HTTPBasic(auto_error=False, realm=REALM)


@dataclass(frozen=True)
class HqParts:
    """The parts of HQ the API works with."""

    engine: Engine
    authority: DeviceAuthority
    broker: BrokerAddress
    #: The chain's card masters handed to terminals (None: HQ holds none).
    card_keys: CardKeyring | None = None


def hq_parts(request: Request) -> HqParts:
    return request.app.state.hq


def current_operator(request: Request,
                     creds: Annotated[HTTPBasicCredentials | None, Depends(basic)]) -> Operator:
    """The operator named by HTTP Basic credentials (over TLS), or AuthenticationFailed."""
    if creds is None:
        raise AuthenticationFailed("operator name and password required")
    return authenticate(hq_parts(request).engine, creds.username, creds.password)


Parts = Annotated[HqParts, Depends(hq_parts)]
CurrentOperator = Annotated[Operator, Depends(current_operator)]


#: Roles of operators created before roles and scopes existed (``admin``) → today's.
LEGACY_ROLES = {"admin": "hq_admin"}


def actor_of(operator: Operator, origin: str) -> Actor:
    """The :class:`Actor` an authenticated operator acts as (role and scope)."""
    role = LEGACY_ROLES.get(operator.role, operator.role)
    scope = getattr(operator, "scope", None) or Scope(Level.CHAIN)
    return Actor(operator.username, role, scope, origin)


def current_actor(request: Request, operator: CurrentOperator) -> Actor:
    """The operator of this request as an Actor, ``origin`` naming the client address."""
    client = request.client.host if request.client else "unknown"
    return actor_of(operator, f"api {client}")


CurrentActor = Annotated[Actor, Depends(current_actor)]
