"""One error shape for the whole HQ API: problem details (RFC 9457).

Every error, whoever raises it — our own refusals, FastAPI's validation, a body that is
not JSON, too large or nested too deep, an unknown path or method, a bug — is answered
as ``application/problem+json``::

    {"type": "urn:onecard:problem:validation-error", "title": "...", "status": 422,
     "detail": "...", "instance": "/v1/enrol", "code": "validation-error",
     "errors": [{"location": "body", "pointer": "/csr", "detail": "...",
                 "code": "missing"}]}

``code`` is the last segment of ``type``, for clients that switch on a short word.
Nothing internal is leaked: validation errors never echo the input (it may hold a
token), and an unexpected failure says only that it happened and under which incident
id it was logged. Limits are applied before the body is parsed. See ``docs/api.md``.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from hq_server.api.common import (
    BadCursor,
    EditConflict,
    IdempotencyInProgress,
    IdempotencyKeyReused,
)
from hq_server.audit.query import BadAuditFilter
from hq_server.cards.errors import CardError, CardNotFound
from hq_server.chain.errors import ChainError, ChainNotFound
from hq_server.devices.enrolment import EnrolmentError
from hq_server.members.errors import (
    DuplicateMobile,
    FieldDefinitionInvalid,
    ImportRefused,
    MemberInvalid,
    MemberStateConflict,
    MergeRefused,
)
from hq_server.operators.access import Forbidden, NotVisible
from hq_server.operators.errors import (
    AuthenticationFailed,
    CsrfRejected,
    OperatorError,
    SignInThrottled,
)
from hq_server.recycle.bin import CannotRestore, NotInBin, RetentionNotOver
from hq_server.reports.income import ReportError

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:onecard:problem:"
#: The largest request body HQ reads (an enrolment carries an 8 KB CSR).
MAX_BODY_BYTES = 64 * 1024
#: The deepest JSON nesting a request body may have (ours need 2).
MAX_JSON_DEPTH = 32

#: Problem types: code → (title, default status).
TYPES: dict[str, tuple[str, int]] = {
    "validation-error": ("The request does not match the API's schema", 422),
    "malformed-body": ("The request body is not valid JSON", 400),
    "body-too-large": ("The request body is too large", 413),
    "nesting-too-deep": ("The request body is nested too deeply", 400),
    "not-found": ("No such resource", 404),
    "method-not-allowed": ("Method not allowed on this resource", 405),
    "http-error": ("HTTP error", 400),
    "internal-error": ("Internal error", 500),
    # refusals of hq_server.devices.enrolment.EnrolmentError, by its code
    "bad-request": ("The request was refused", 400),
    "not-authenticated": ("Operator name and password required", 401),
    "unknown-token": ("Unknown enrolment token", 404),
    "unknown-store": ("The store is not known at HQ, or closed", 422),
    "token-used": ("Enrolment token already used", 409),
    "token-expired": ("Enrolment token expired", 410),
    "unknown-device": ("Unknown device", 404),
    "revoked": ("Device revoked", 403),
    "bad-signature": ("Signature does not verify", 403),
    "card-keys-missing": ("HQ holds no card keys to hand to terminals yet", 409),
    # operators, scopes and the common rules of API v1 (hq_server.api.common)
    "forbidden": ("The operator's role does not allow this", 403),
    "bad-cursor": ("The cursor was not made by this API", 400),
    "idempotency-key-reused": ("The Idempotency-Key was used for another request", 422),
    "idempotency-in-progress": ("The first request with this Idempotency-Key still runs", 409),
    "edit-conflict": ("Changed by someone else since the version you edited", 409),
    "invalid-input": ("A field of the request cannot be accepted", 422),
    # the audit log and the recycle bin (hq_server.audit, hq_server.recycle)
    "bad-filter": ("The filter cannot be applied", 422),
    "retention-not-over": ("The retention period of the recycle bin is not over", 409),
    "cannot-restore": ("The deleted thing cannot be restored", 409),
    # signing in and managing operators (hq_server/operators)
    "sign-in-throttled": ("Too many failed sign-ins", 429),
    "csrf-rejected": ("The request lacks the session's CSRF token", 403),
    "operator-refused": ("The operator, token or staff card was refused", 422),
    # members (hq_server.members.errors)
    "member-invalid": ("The member's data breaks a rule", 422),
    "duplicate-mobile": ("The mobile number belongs to another member", 409),
    "member-state-conflict": ("The member is deleted or merged", 409),
    "merge-refused": ("These members cannot be merged", 409),
    "field-definition-invalid": ("The custom field definition breaks a rule", 422),
    "import-refused": ("The import was not applied", 422),
}

#: Statuses every route may answer with a problem.
ERROR_STATUSES = (400, 401, 403, 404, 405, 409, 410, 413, 415, 422, 429, 500)


class ProblemError(BaseModel):
    """One thing wrong with the request (validation problems only)."""

    location: str = Field(description="body, query, path, header or cookie")
    pointer: str = Field(description="JSON Pointer (RFC 6901) into that part, e.g. /csr")
    detail: str
    code: str = Field(description="pydantic's error type, e.g. missing, string_too_long")


class Problem(BaseModel):
    """Problem details (RFC 9457), HQ's only error shape."""

    type: str = Field(description="URI naming the problem type; see docs/api.md")
    title: str
    status: int = Field(ge=400, le=599)
    detail: str
    instance: str = Field(description="The request path the problem occurred at")
    code: str = Field(description="The last segment of type, e.g. token-used")
    errors: list[ProblemError] | None = Field(
        default=None, description="Each thing wrong with the request (validation-error)")
    current: dict[str, Any] | None = Field(
        default=None, description="edit-conflict: the resource as it is now")
    changed: list[str] | None = Field(
        default=None, description="edit-conflict: the fields changed since your version")
    report: dict[str, Any] | None = Field(
        default=None, description="import-refused: the row-by-row import report")


def problem(code: str, detail: str, instance: str, *, status: int | None = None,
            title: str | None = None, errors: list[dict[str, str]] | None = None,
            headers: dict[str, str] | None = None,
            extra: dict[str, Any] | None = None) -> JSONResponse:
    """The problem response for ``code`` (a key of :data:`TYPES`)."""
    default_title, default_status = TYPES[code]
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + code, "title": title or default_title,
        "status": status or default_status, "detail": detail, "instance": instance,
        "code": code,
    }
    if errors is not None:
        body["errors"] = errors
    if extra:
        body.update(extra)
    return JSONResponse(body, status_code=body["status"], media_type=MEDIA_TYPE,
                        headers=headers)


def _pointer(loc: tuple[Any, ...]) -> tuple[str, str]:
    where = str(loc[0]) if loc else "body"
    parts = [str(p).replace("~", "~0").replace("/", "~1") for p in loc[1:]]
    return where, "/" + "/".join(parts) if parts else ""


def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return problem("malformed-body", "the body could not be parsed as JSON",
                       request.url.path)
    listed = []
    for e in errors:
        where, pointer = _pointer(tuple(e.get("loc", ())))
        listed.append({"location": where, "pointer": pointer,
                       "detail": str(e.get("msg", "invalid")), "code": str(e.get("type", ""))})
    summary = "; ".join(f"{x['location']}{x['pointer']}: {x['detail']}" for x in listed[:5])
    return problem("validation-error", summary or "invalid request", request.url.path,
                   errors=listed)


def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    status = exc.status_code
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    code = {404: "not-found", 405: "method-not-allowed"}.get(status, "http-error")
    detail = exc.detail if isinstance(exc.detail, str) else phrase
    return problem(code, detail, request.url.path, status=status,
                   title=None if code != "http-error" else phrase,
                   headers=getattr(exc, "headers", None))


def _not_authenticated(detail: str, instance: str) -> JSONResponse:
    return problem("not-authenticated", detail, instance,
                   headers={"WWW-Authenticate": 'Basic realm="OneCard HQ", Bearer'})


def _enrolment_refused(request: Request, exc: EnrolmentError) -> JSONResponse:
    if exc.code == "not_authenticated":
        return _not_authenticated(exc.message, request.url.path)
    code = exc.code.replace("_", "-")
    return problem(code if code in TYPES else "bad-request", exc.message, request.url.path)


def _authentication_failed(request: Request, exc: AuthenticationFailed) -> JSONResponse:
    return _not_authenticated(str(exc), request.url.path)


def _forbidden(request: Request, exc: Forbidden) -> JSONResponse:
    return problem("forbidden", str(exc), request.url.path)


def _not_visible(request: Request, exc: NotVisible) -> JSONResponse:
    # Exactly what an unknown id gets: out of scope must not reveal that it exists.
    return problem("not-found", "no such resource", request.url.path)


def _invalid(request: Request, exc: ValueError) -> JSONResponse:
    return problem("invalid-input", str(exc), request.url.path)


def _bad_cursor(request: Request, exc: BadCursor) -> JSONResponse:
    return problem("bad-cursor", str(exc), request.url.path)


def _key_reused(request: Request, exc: IdempotencyKeyReused) -> JSONResponse:
    return problem("idempotency-key-reused", str(exc), request.url.path)


def _key_in_progress(request: Request, exc: IdempotencyInProgress) -> JSONResponse:
    return problem("idempotency-in-progress", str(exc), request.url.path,
                   headers={"Retry-After": "1"})


def _edit_conflict(request: Request, exc: EditConflict) -> JSONResponse:
    return problem("edit-conflict", str(exc), request.url.path,
                   extra={"current": exc.current, "changed": exc.changed})


def _as(code: str) -> Callable[[Request, Exception], JSONResponse]:
    """A handler answering an error with problem ``code`` and the error's words."""
    return lambda request, exc: problem(code, str(exc), request.url.path)
def _throttled(request: Request, exc: SignInThrottled) -> JSONResponse:
    return problem("sign-in-throttled", str(exc), request.url.path,
                   headers={"Retry-After": str(exc.retry_after_s)})


def _csrf(request: Request, exc: CsrfRejected) -> JSONResponse:
    return problem("csrf-rejected", str(exc), request.url.path)


def _operator_refused(request: Request, exc: OperatorError) -> JSONResponse:
    return problem("operator-refused", str(exc), request.url.path)
def _member_invalid(request: Request, exc: MemberInvalid) -> JSONResponse:
    return problem("member-invalid", str(exc), request.url.path, errors=[
        {"location": "body", "pointer": "/" + e.field.replace(".", "/"), "detail": e.reason,
         "code": "invalid"} for e in exc.errors])


def _import_refused(request: Request, exc: ImportRefused) -> JSONResponse:
    report = getattr(exc.report, "as_dict", None)
    return problem("import-refused", str(exc), request.url.path,
                   extra={"report": report()} if report else None)


def _simple(code: str) -> Callable[[Request, Exception], JSONResponse]:
    return lambda request, exc: problem(code, str(exc), request.url.path)


#: The domain errors a route may raise, and the problem each becomes: the one place
#: where HQ's refusals turn into HTTP.
DOMAIN_ERRORS: dict[type[Exception], Callable[[Request, Any], JSONResponse]] = {
    EnrolmentError: _enrolment_refused,
    AuthenticationFailed: _authentication_failed,
    Forbidden: _forbidden,
    NotVisible: _not_visible,
    BadCursor: _bad_cursor,
    IdempotencyKeyReused: _key_reused,
    IdempotencyInProgress: _key_in_progress,
    EditConflict: _edit_conflict,
    ChainNotFound: _not_visible,
    ChainError: _invalid,
    CardNotFound: _not_visible,
    CardError: _invalid,
    ReportError: _invalid,
    BadAuditFilter: _as("bad-filter"),
    NotInBin: _not_visible,  # like out of scope: the same answer as an unknown id
    RetentionNotOver: _as("retention-not-over"),
    CannotRestore: _as("cannot-restore"),
    SignInThrottled: _throttled,
    CsrfRejected: _csrf,
    OperatorError: _operator_refused,
    MemberInvalid: _member_invalid,
    DuplicateMobile: _simple("duplicate-mobile"),
    MemberStateConflict: _simple("member-state-conflict"),
    MergeRefused: _simple("merge-refused"),
    FieldDefinitionInvalid: _simple("field-definition-invalid"),
    ImportRefused: _import_refused,
}


def _internal(request: Request, exc: Exception) -> JSONResponse:
    incident = secrets.token_hex(6)
    log.error("incident %s: unexpected %s on %s %s", incident, type(exc).__name__,
              request.method, request.url.path, exc_info=exc)
    return problem("internal-error", f"an unexpected error occurred; it was logged as "
                   f"incident {incident}", request.url.path)


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` as a problem and declare it in the OpenAPI."""
    app.add_exception_handler(RequestValidationError, _validation)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    for error, handler in DOMAIN_ERRORS.items():
        app.add_exception_handler(error, handler)
    app.add_exception_handler(Exception, _internal)
    app.add_middleware(BodyLimits)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _with_problems(get_openapi(
                title=app.title, version=app.version, description=app.description,
                routes=app.routes))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _with_problems(schema: dict[str, Any]) -> dict[str, Any]:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    defs = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(defs.pop("$defs", {}))
    components["Problem"] = defs
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    content = {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            responses = operation.setdefault("responses", {})
            for status in ERROR_STATUSES:
                responses[str(status)] = {
                    "description": HTTPStatus(status).phrase + " (problem details)",
                    "content": content}
    return schema


# --- limits applied before parsing -----------------------------------------------------

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def json_depth_exceeds(body: bytes, limit: int) -> bool:
    """True when ``body`` opens more than ``limit`` nested arrays/objects (strings skipped).

    A linear scan with no recursion, so a body of a million brackets costs one pass
    instead of a RecursionError in the JSON decoder."""
    depth, in_string, escaped = 0, False, False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return False


class BodyLimits:
    """ASGI middleware: a request body over :data:`MAX_BODY_BYTES` (declared or streamed)
    is answered 413 without being read further, and one nested deeper than
    :data:`MAX_JSON_DEPTH` is answered 400, both before any JSON parser sees it."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
            await self._refuse(scope, send, "body-too-large",
                               f"the body may have at most {MAX_BODY_BYTES} bytes", path)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                await self._refuse(scope, send, "body-too-large",
                                   f"the body may have at most {MAX_BODY_BYTES} bytes", path)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if json_depth_exceeds(body, MAX_JSON_DEPTH):
            await self._refuse(scope, send, "nesting-too-deep",
                               f"JSON may nest at most {MAX_JSON_DEPTH} levels", path)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(scope: Scope, send: Send, code: str, detail: str, path: str) -> None:
        response = problem(code, detail, path, headers={"Connection": "close"})
        await response(scope, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


__all__ = ["MAX_BODY_BYTES", "MAX_JSON_DEPTH", "Problem", "install", "problem"]
