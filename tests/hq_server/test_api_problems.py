"""Every error of HQ's API is problem details (RFC 9457), as its OpenAPI declares.

Hand-made hostile requests (unparseable, too large, too deep, wrong method, unknown
path, a bug) and schemathesis' generated ones, checked against the OpenAPI document.
"""

from __future__ import annotations

import json

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from broker_config.install import SiteDeviceCA
from hq_server.api import create_app
from hq_server.api.problems import MAX_BODY_BYTES, MAX_JSON_DEPTH, MEDIA_TYPE, TYPE_PREFIX
from hq_server.db.engine import open_engine
from hq_server.devices.enrolment import BrokerAddress
from tests.mtls_helpers import make_site, remove_site

PROBLEM_KEYS = {"type", "title", "status", "detail", "instance", "code"}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    site = make_site()
    engine = open_engine(f"sqlite:///{tmp_path_factory.mktemp('api') / 'hq.db'}")
    application = create_app(engine, SiteDeviceCA(site, "127.0.0.1"),
                             BrokerAddress("127.0.0.1", 8883))

    @application.get("/v1/test-bug", include_in_schema=False)
    def bug() -> dict[str, str]:
        raise RuntimeError("secret internals: /etc/onecard/hq.key")

    yield application
    remove_site(site)


@pytest.fixture
def client(app):
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def is_problem(r, status: int, code: str, path: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(MEDIA_TYPE), r.headers
    body = r.json()
    assert set(body) >= PROBLEM_KEYS, body
    assert body["status"] == status and body["type"] == TYPE_PREFIX + code
    assert body["code"] == code and body["instance"] == path
    assert body["title"] and body["detail"]
    return body


def test_validation_errors_are_problems_with_a_list(client):
    body = is_problem(client.post("/v1/enrol", json={"token": "", "public_key": "zz"}), 422,
                      "validation-error", "/v1/enrol")
    pointers = {(e["location"], e["pointer"]) for e in body["errors"]}
    assert {("body", "/token"), ("body", "/public_key"), ("body", "/csr")} <= pointers
    assert "zz" not in json.dumps(body)  # the input is never echoed


@pytest.mark.parametrize("raw", [b"{", b"\xff\xfe", b"[1,2", b'{"token": "x",}', b"nan"])
def test_unparseable_bodies_are_malformed_body(client, raw):
    r = client.post("/v1/enrol", content=raw, headers={"content-type": "application/json"})
    is_problem(r, 400, "malformed-body", "/v1/enrol")


def test_too_large_bodies_are_refused_before_parsing(client):
    big = b'{"token": "' + b"a" * (MAX_BODY_BYTES + 10) + b'"}'
    is_problem(client.post("/v1/enrol", content=big,
                           headers={"content-type": "application/json"}),
               413, "body-too-large", "/v1/enrol")

    def chunks():  # streamed with no Content-Length
        for _ in range(100):
            yield b"a" * 1024

    is_problem(client.post("/v1/enrol", content=chunks(),
                           headers={"content-type": "application/json"}),
               413, "body-too-large", "/v1/enrol")


def test_too_deep_bodies_are_refused_before_parsing(client):
    for depth in (MAX_JSON_DEPTH + 1, 5000):
        deep = b"[" * depth + b"]" * depth
        is_problem(client.post("/v1/enrol", content=deep,
                               headers={"content-type": "application/json"}),
                   400, "nesting-too-deep", "/v1/enrol")
    ok_depth = b'{"token": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", "public_key": "x"}'
    is_problem(client.post("/v1/enrol", content=ok_depth,
                           headers={"content-type": "application/json"}),
               422, "validation-error", "/v1/enrol")  # brackets in strings do not count


def test_unknown_paths_methods_and_bugs(client):
    is_problem(client.get("/v1/nothing-here"), 404, "not-found", "/v1/nothing-here")
    is_problem(client.delete("/v1/enrol"), 405, "method-not-allowed", "/v1/enrol")
    body = is_problem(client.get("/v1/test-bug"), 500, "internal-error", "/v1/test-bug")
    assert "secret" not in json.dumps(body) and "RuntimeError" not in json.dumps(body)


def test_refusals_are_problems(client):
    body = is_problem(client.post("/v1/enrolment-tokens", json={"store": "s1", "role": "gate"}),
                      401, "not-authenticated", "/v1/enrolment-tokens")
    assert body["detail"]
    assert "Basic" in client.post("/v1/enrolment-tokens", json={}).headers.get(
        "www-authenticate", "Basic")
    is_problem(client.post("/v1/enrol", json={"token": "nope", "public_key": "ab" * 32,
                                              "csr": "x"}),
               400, "bad-request", "/v1/enrol")  # the CSR is checked first


def test_openapi_declares_problems_on_every_route(client):
    doc = client.get("/openapi.json").json()
    assert "Problem" in doc["components"]["schemas"]
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            for status in ("400", "404", "413", "422", "500"):
                content = op["responses"][status]["content"]
                assert list(content) == [MEDIA_TYPE], (path, method, status)


@pytest.mark.slow  # schemathesis over every operation (about 30 s)
def test_schemathesis_finds_no_mismatch(app):
    """schemathesis generates requests from the OpenAPI (valid and invalid) for every
    operation; every answer must be documented, of the declared media type and match
    its schema, and none may be a 500."""
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [not_a_server_error, status_code_conformance, content_type_conformance,
              response_schema_conformance]
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 5
    negatives = 0
    for operation in operations:
        for mode in ("positive", "negative"):
            @given(case=operation.as_strategy(generation_mode=GenerationMode(mode)))
            @settings(max_examples=40, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            def conforms(case) -> None:
                # /health answers a documented 503 when a part of HQ is not alive (here
                # none runs): that is its message, not a server error.
                case.call_and_validate(checks=[c for c in checks if c is not not_a_server_error
                                               or case.operation.path != "/health"])

            try:
                conforms()
            except Unsatisfiable:
                assert mode == "negative"  # nothing to make invalid (no parameters, no body)
            else:
                negatives += mode == "negative"
    assert negatives >= 4
