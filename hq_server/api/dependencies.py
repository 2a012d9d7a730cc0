"""What every router asks of HQ: its parts (:class:`HqParts`) and the operator calling.

``create_app`` puts the parts on ``app.state``; a route gets them through
:func:`hq_parts` and the authenticated operator through :data:`CurrentActor`, which
accepts, in this order:

1. ``Authorization: Bearer oct_...`` — an API token (:mod:`hq_server.operators.api_tokens`);
2. ``Authorization: Bearer ocs_...`` — a CLI or staff-card session;
3. ``Authorization: Basic ...`` — name and password (over TLS), with back-off and lock-out;
4. the browser session cookie ``__Host-onecard-session``; a request that changes data
   (not GET/HEAD/OPTIONS) must also carry the session's ``X-CSRF-Token`` header.

Every route declares what it needs: ``Annotated[Actor, requires("members.read")]`` (the
permission, checked here; services check scope), ``requires(SIGNED_IN)`` (any operator),
or ``dependencies=[PUBLIC]`` (terminals, health, signing in). :func:`route_permissions`
reads the declarations back from the app, for the authorisation matrix test and the docs.
Refusals are domain errors that :mod:`hq_server.api.problems` turns into problems.
"""

# No "from __future__ import annotations": FastAPI resolves these annotations at runtime.
import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy.engine import Engine

from hq_server.clock import system_clock
from hq_server.devices.card_keys import CardKeyring
from hq_server.devices.enrolment import BrokerAddress, DeviceAuthority
from hq_server.operators.access import Actor, authorise
from hq_server.operators.accounts import Operator
from hq_server.operators.api_tokens import PREFIX as API_TOKEN_PREFIX
from hq_server.operators.api_tokens import actor_of_token
from hq_server.operators.errors import AuthenticationFailed
from hq_server.operators.sessions import COOKIE, CSRF_HEADER, TIMEOUTS, resume_session
from hq_server.operators.signin import sign_in

REALM = "OneCard HQ"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: The declared "permission" of routes open to every signed-in operator (their own
#: session, their own API tokens).
SIGNED_IN = "signed-in"


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


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def now_ms(request: Request) -> int:
    """The clock of this app (tests give one through ``app.state.clock``)."""
    clock = getattr(request.app.state, "clock", None)
    return int(clock()) if clock is not None else system_clock()


def set_session_cookie(response: Response, token: str, max_age_s: int) -> None:
    """The browser session cookie: HttpOnly, Secure, SameSite=Strict, host-only."""
    response.set_cookie(COOKIE, token, max_age=max_age_s, path="/", secure=True,
                        httponly=True, samesite="strict")


def current_actor(request: Request, response: Response) -> Actor:
    """The operator of this request as an Actor, ``origin`` naming the client address."""
    engine = hq_parts(request).engine
    address = client_address(request)
    origin = f"api {address}"
    now = now_ms(request)
    scheme, _, credential = request.headers.get("authorization", "").partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        credential = credential.strip()
        if credential.startswith(API_TOKEN_PREFIX):
            return actor_of_token(engine, credential, origin, now)
        actor, _ = resume_session(engine, credential, ("cli", "staff_card"), origin, now)
        return actor
    if scheme == "basic":
        try:
            name, sep, password = base64.b64decode(credential, validate=True).decode(
                ).partition(":")
        except (binascii.Error, UnicodeDecodeError):
            name, sep, password = "", "", ""
        if not sep:
            raise AuthenticationFailed("malformed Basic credentials")
        return sign_in(engine, name, password, address, now, origin)
    cookie = request.cookies.get(COOKIE)
    if cookie:
        actor, session = resume_session(
            engine, cookie, ("browser",), origin, now,
            csrf=request.headers.get(CSRF_HEADER),
            unsafe=request.method.upper() not in SAFE_METHODS)
        if session.token is not None:  # rotated
            set_session_cookie(response, session.token,
                               (session.expires_at_ms - now) // 1000)
        request.state.session = session
        return actor
    raise AuthenticationFailed("sign in first: a session, an API token or Basic credentials")


CurrentActor = Annotated[Actor, Depends(current_actor)]


def requires(permission: str) -> Any:
    """A route's declared permission, checked before the route runs (FastAPI ``Depends``).

    Use as ``who: Annotated[Actor, requires("members.read")]``. The route still checks
    the place of what it touches through its service (``authorise(actor, p, place)``)."""

    def check(actor: CurrentActor) -> Actor:
        if permission != SIGNED_IN:
            authorise(actor, permission)
        return actor

    check.permission = permission  # type: ignore[attr-defined]
    check.__name__ = f"requires_{permission.replace('.', '_').replace('-', '_')}"
    return Depends(check)


def public() -> None:
    """Declares a route open without signing in (terminals, health, sign-in itself)."""


public.public = True  # type: ignore[attr-defined]
PUBLIC = Depends(public)


def _declared(dependant: Any) -> list[str]:
    found: list[str] = []
    for sub in dependant.dependencies:
        call: Callable[..., Any] | None = sub.call
        if getattr(call, "public", False):
            found.append("public")
        elif getattr(call, "permission", None):
            found.append(call.permission)  # type: ignore[union-attr]
        found.extend(_declared(sub))
    return found


def route_permissions(app: FastAPI) -> dict[tuple[str, str], list[str]]:
    """Every (method, path) of ``app`` → the permissions its route declares (``public``,
    ``signed-in`` or a permission); an empty list means the route declares nothing."""
    out: dict[tuple[str, str], list[str]] = {}
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute):
            continue  # the OpenAPI document and its viewers
        # the route as included: its own and its routers' dependencies
        declared = _declared(getattr(route, "dependant", route.original_route.dependant))
        for method in sorted(route.methods or ()):
            out[(method, str(route.path))] = declared
    return out


# --- kept for routers written before roles and scopes ------------------------------------

def current_operator(actor: CurrentActor) -> Operator:
    """The signed-in operator (prefer :data:`CurrentActor`, which carries role and scope)."""
    return Operator(actor.operator, actor.role, actor.scope)


Parts = Annotated[HqParts, Depends(hq_parts)]
CurrentOperator = Annotated[Operator, Depends(current_operator)]
#: Roles of operators created before roles and scopes existed (``admin``) → today's.
LEGACY_ROLES = {"admin": "hq_admin"}


def actor_of(operator: Operator, origin: str) -> Actor:
    """The :class:`Actor` an authenticated operator acts as (role and scope)."""
    from hq_server.operators.access import Level, Scope

    role = LEGACY_ROLES.get(operator.role, operator.role)
    return Actor(operator.username, role, operator.scope or Scope(Level.CHAIN), origin)


__all__ = ["PUBLIC", "SIGNED_IN", "CurrentActor", "HqParts", "Parts", "TIMEOUTS",
           "current_actor", "requires", "route_permissions"]
