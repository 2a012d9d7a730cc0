"""Operators (操作员) and signing in: sessions, staff cards, API tokens.

* ``/v1/auth/login`` (password → browser session cookie + CSRF token), ``/v1/auth/logout``,
  ``/v1/auth/session`` (who am I, my CSRF token), ``/v1/auth/staff-card`` (card + PIN →
  a short bearer session for a handheld);
* ``/v1/operators``: list (cursor), get, create, edit (If-Match), disable, unlock,
  password reset, staff cards;
* ``/v1/api-tokens``: the signed-in operator's own tokens (the secret is shown once).
"""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import BaseModel, Field

from hq_server.api.common import StoredAnswer, run_idempotent
from hq_server.api.dependencies import (
    PUBLIC,
    SIGNED_IN,
    Parts,
    client_address,
    now_ms,
    requires,
    set_session_cookie,
)
from hq_server.operators import accounts, api_tokens, staff_cards
from hq_server.operators.access import ROLES, Actor, Scope
from hq_server.operators.errors import OperatorError
from hq_server.operators.sessions import COOKIE, close_session, open_session
from hq_server.operators.signin import security_event, sign_in, verify_staff_card

router = APIRouter(tags=["operators"])

SCOPE_TEXT = r"^(chain|region:[A-Za-z0-9_.:-]{1,64}|store:[A-Za-z0-9_.:-]{1,64})$"
RoleName = Literal["cashier", "auditor", "store_manager", "region_manager", "hq_admin"]
assert set(RoleName.__args__) == set(ROLES)  # type: ignore[attr-defined]


def _scope(text: str | None) -> Scope | None:
    if text is None:
        return None
    try:
        return Scope.parse(text)
    except ValueError as exc:
        raise OperatorError(str(exc)) from None


class Login(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)

    model_config = {"json_schema_extra": {"examples": [
        {"username": "li.na", "password": "correct horse battery"}]}}


class SessionOut(BaseModel):
    operator: str
    role: str
    scope: str
    permissions: list[str]
    kind: str | None = Field(None, description="browser, cli, staff_card; None: token/Basic")
    csrf_token: str | None = Field(None, description="Send as X-CSRF-Token on every "
                                   "request that changes data (browser sessions)")
    expires_at_ms: int | None = None


class StaffCardLogin(BaseModel):
    card_id: str = Field(min_length=1, max_length=64)
    pin: str = Field(min_length=1, max_length=64)


class StaffCardSession(SessionOut):
    token: str = Field(description="Bearer token for this handheld session; shown once")


def _session_out(actor: Actor, kind: str | None = None, csrf: str | None = None,
                 expires: int | None = None) -> dict[str, Any]:
    from hq_server.operators.access import PERMISSIONS

    return {"operator": actor.operator, "role": actor.role, "scope": str(actor.scope),
            "permissions": [p for p in PERMISSIONS if actor.can(p)], "kind": kind,
            "csrf_token": csrf, "expires_at_ms": expires}


@router.post("/v1/auth/login", response_model=SessionOut, dependencies=[PUBLIC])
def login(body: Login, request: Request, response: Response, hq: Parts) -> dict[str, Any]:
    """Sign in with name and password: a new browser session (cookie ``__Host-onecard-
    session``: HttpOnly, Secure, SameSite=Strict) and its CSRF token."""
    now = now_ms(request)
    actor = sign_in(hq.engine, body.username, body.password, client_address(request), now)
    session = open_session(hq.engine, actor, "browser", now)
    assert session.token is not None
    set_session_cookie(response, session.token, (session.expires_at_ms - now) // 1000)
    return _session_out(actor, "browser", session.csrf_token, session.expires_at_ms)


@router.post("/v1/auth/logout", status_code=204)
def logout(request: Request, response: Response, hq: Parts,
           who: Annotated[Actor, requires(SIGNED_IN)]) -> Response:
    """End this session (cookie or bearer session) and clear the cookie."""
    token = request.cookies.get(COOKIE) or request.headers.get(
        "authorization", "").partition(" ")[2].strip()
    if token:
        close_session(hq.engine, token)
    with hq.engine.begin() as conn:
        security_event(conn, "logout", f"operator:{who.operator}", client_address(request),
                       now_ms(request))
    out = Response(status_code=204)
    out.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return out


@router.get("/v1/auth/session", response_model=SessionOut)
def session(request: Request, who: Annotated[Actor, requires(SIGNED_IN)]) -> dict[str, Any]:
    """Who is signed in, with which rights; a browser session's CSRF token."""
    live = getattr(request.state, "session", None)
    if live is None:
        return _session_out(who)
    return _session_out(who, live.kind, live.csrf_token, live.expires_at_ms)


@router.post("/v1/auth/staff-card", response_model=StaffCardSession, dependencies=[PUBLIC])
def staff_card_login(body: StaffCardLogin, request: Request, hq: Parts) -> dict[str, Any]:
    """Sign in on a handheld with a staff card and PIN: a short bearer session
    (10 minutes idle, 8 hours at most)."""
    now = now_ms(request)
    actor = verify_staff_card(hq.engine, body.card_id, body.pin, client_address(request), now)
    live = open_session(hq.engine, actor, "staff_card", now)
    return {**_session_out(actor, "staff_card", None, live.expires_at_ms), "token": live.token}


# --- operators -------------------------------------------------------------------------

class OperatorOut(BaseModel):
    username: str
    role: str
    scope: str
    status: str
    display_name: str
    version: int
    created_at_ms: int
    updated_at_ms: int | None
    last_login_at_ms: int | None
    locked_until_ms: int | None


class OperatorPage(BaseModel):
    items: list[OperatorOut]
    next_cursor: str | None


class NewOperator(BaseModel):
    username: str = Field(min_length=2, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]{1,63}$")
    password: str = Field(min_length=accounts.MIN_PASSWORD, max_length=accounts.MAX_PASSWORD)
    role: RoleName
    scope: str = Field(pattern=SCOPE_TEXT, examples=["store:S1"])
    display_name: str = Field("", max_length=200)

    model_config = {"json_schema_extra": {"examples": [
        {"username": "wang.fang", "password": "a long pass phrase", "role": "cashier",
         "scope": "store:S1", "display_name": "王芳"}]}}


class OperatorEdit(BaseModel):
    role: RoleName | None = None
    scope: str | None = Field(None, pattern=SCOPE_TEXT)
    display_name: str | None = Field(None, max_length=200)
    status: Literal["active", "disabled"] | None = None
    version: int | None = Field(None, description="The version edited (or If-Match)")


class PasswordReset(BaseModel):
    password: str = Field(min_length=accounts.MIN_PASSWORD, max_length=accounts.MAX_PASSWORD)


class StaffCardAssign(BaseModel):
    card_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    pin: str = Field(pattern=r"^[0-9]{6,12}$")


def _if_match(value: str | None) -> int | None:
    if value is None:
        return None
    text = value.strip().removeprefix("W/").strip('"')
    return int(text) if text.isdigit() else -1


@router.get("/v1/operators", response_model=OperatorPage)
def list_operators(request: Request, hq: Parts,
                   who: Annotated[Actor, requires("operators.read")],
                   cursor: Annotated[str | None, Query(max_length=512)] = None,
                   limit: Annotated[int | None, Query(ge=1, le=200)] = None,
                   status: Literal["active", "disabled"] | None = None,
                   role: RoleName | None = None) -> dict[str, Any]:
    """The operators inside your scope, by name."""
    items, next_cursor = accounts.list_operators(who, hq.engine, cursor=cursor, limit=limit,
                                                 status=status, role=role,
                                                 now_ms=now_ms(request))
    return {"items": [o.to_json() for o in items], "next_cursor": next_cursor}


@router.get("/v1/operators/{username}", response_model=OperatorOut)
def get_operator(username: str, request: Request, response: Response, hq: Parts,
                 who: Annotated[Actor, requires("operators.read")]) -> dict[str, Any]:
    found = accounts.get_operator(who, hq.engine, username, now_ms=now_ms(request))
    response.headers["ETag"] = f'"{found.version}"'
    return found.to_json()


@router.post("/v1/operators", response_model=OperatorOut, status_code=201)
def create_operator(body: NewOperator, request: Request, hq: Parts,
                    who: Annotated[Actor, requires("operators.write")],
                    idempotency_key: Annotated[str | None, Header()] = None) -> Any:
    """Create an operator below your rank, inside your scope (``Idempotency-Key``)."""
    now = now_ms(request)

    def run() -> StoredAnswer:
        made = accounts.add_operator(who, hq.engine, body.username, body.password, body.role,
                                     _scope(body.scope) or Scope.parse("chain"),
                                     display_name=body.display_name, now_ms=now)
        return StoredAnswer(201, made.to_json())

    # The password is left out of what identifies the request: its hash is stored.
    fingerprint = body.model_dump_json(exclude={"password"}).encode()
    answer = run_idempotent(hq.engine, who.operator, idempotency_key, "POST",
                            "/v1/operators", fingerprint, run, now)
    return _answer(answer)


def _answer(answer: StoredAnswer) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse(answer.body, status_code=answer.status)


@router.patch("/v1/operators/{username}", response_model=OperatorOut)
def edit_operator(username: str, body: OperatorEdit, request: Request, hq: Parts,
                  who: Annotated[Actor, requires("operators.write")],
                  if_match: Annotated[str | None, Header()] = None) -> dict[str, Any]:
    """Change role, scope, display name or status; send ``If-Match: "<version>"``."""
    expected = _if_match(if_match) if if_match is not None else body.version
    return accounts.update_operator(
        who, hq.engine, username, expected, role=body.role, scope=_scope(body.scope),
        display_name=body.display_name, status=body.status, now_ms=now_ms(request)).to_json()


@router.post("/v1/operators/{username}/disable", response_model=OperatorOut)
def disable_operator(username: str, request: Request, hq: Parts,
                     who: Annotated[Actor, requires("operators.write")],
                     if_match: Annotated[str | None, Header()] = None) -> dict[str, Any]:
    """Disable an operator: no more sign-ins; their sessions and API tokens end."""
    return accounts.disable_operator(who, hq.engine, username, _if_match(if_match),
                                     now_ms=now_ms(request)).to_json()


@router.post("/v1/operators/{username}/unlock", response_model=OperatorOut)
def unlock_operator(username: str, request: Request, hq: Parts,
                    who: Annotated[Actor, requires("operators.write")]) -> dict[str, Any]:
    """End a lock-out after failed sign-ins (and of the operator's staff cards)."""
    return accounts.unlock_operator(who, hq.engine, username,
                                    now_ms=now_ms(request)).to_json()


@router.post("/v1/operators/{username}/password", response_model=OperatorOut)
def reset_password(username: str, body: PasswordReset, request: Request, hq: Parts,
                   who: Annotated[Actor, requires("operators.write")]) -> dict[str, Any]:
    """Set a new password; the operator's sessions and API tokens end."""
    return accounts.reset_password(who, hq.engine, username, body.password,
                                   now_ms=now_ms(request)).to_json()


@router.put("/v1/operators/{username}/staff-card", status_code=204)
def assign_staff_card(username: str, body: StaffCardAssign, request: Request, hq: Parts,
                      who: Annotated[Actor, requires("operators.write")]) -> Response:
    """Give the operator a staff card and PIN for handhelds (replacing that card's PIN)."""
    staff_cards.assign_staff_card(who, hq.engine, body.card_id, username, body.pin,
                                  now_ms(request))
    return Response(status_code=204)


@router.delete("/v1/staff-cards/{card_id}", status_code=204)
def revoke_staff_card(card_id: str, request: Request, hq: Parts,
                      who: Annotated[Actor, requires("operators.write")]) -> Response:
    staff_cards.revoke_staff_card(who, hq.engine, card_id, now_ms(request))
    return Response(status_code=204)


# --- API tokens ------------------------------------------------------------------------

class NewApiToken(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    scope: str | None = Field(None, pattern=SCOPE_TEXT, description="Default: yours")
    permissions: list[str] | None = Field(None, max_length=64,
                                          description="Default: all of your role's")
    expires_at_ms: int | None = Field(None, ge=0)

    model_config = {"json_schema_extra": {"examples": [
        {"name": "crm sync", "scope": "region:north", "permissions": ["members.read"]}]}}


class ApiTokenOut(BaseModel):
    token_id: str
    operator: str
    name: str
    scope: str
    permissions: list[str] | None
    created_at_ms: int
    expires_at_ms: int | None
    last_used_at_ms: int | None
    revoked_at_ms: int | None


class ApiTokenCreated(ApiTokenOut):
    token: str = Field(description="The secret, shown this once; HQ keeps only its hash")


class ApiTokenList(BaseModel):
    items: list[ApiTokenOut]


@router.get("/v1/api-tokens", response_model=ApiTokenList)
def list_api_tokens(hq: Parts, who: Annotated[Actor, requires(SIGNED_IN)]) -> dict[str, Any]:
    """Your API tokens (never their secrets), with when each was last used."""
    return {"items": [t.to_json() for t in api_tokens.list_api_tokens(who, hq.engine)]}


@router.post("/v1/api-tokens", response_model=ApiTokenCreated, status_code=201)
def create_api_token(body: NewApiToken, request: Request, hq: Parts,
                     who: Annotated[Actor, requires(SIGNED_IN)]) -> dict[str, Any]:
    """A token for an integration, as wide as your rights or narrower. No
    Idempotency-Key: a stored answer would keep the secret; retry by name instead."""
    secret, made = api_tokens.create_api_token(
        who, hq.engine, body.name, now_ms(request), scope=_scope(body.scope),
        permissions=body.permissions, expires_at_ms=body.expires_at_ms)
    return {**made.to_json(), "token": secret}


@router.delete("/v1/api-tokens/{token_id}", response_model=ApiTokenOut)
def revoke_api_token(token_id: str, request: Request, hq: Parts,
                     who: Annotated[Actor, requires(SIGNED_IN)]) -> dict[str, Any]:
    return api_tokens.revoke_api_token(who, hq.engine, token_id, now_ms(request)).to_json()
