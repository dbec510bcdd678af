"""Authorization in a real Envoy with the example policy policies/orders.json: scopes, claim
conditions, object-level (owner) checks, API keys, unknown routes, path-normalisation bypass
attempts and the forwarded identity header."""
import json
import os
import sys
import time

import jwt
import pytest

from harness import ROOT, Envoy, orders_policy, raw_request

sys.path.insert(0, os.path.join(ROOT, "envoy", "demo"))
from tokens import DEMO_AUDIENCE as AUDIENCE, DEMO_ISSUER as ISSUER, DEMO_KID as KID  # noqa: E402

with open(os.path.join(ROOT, "envoy/demo/demo-signing-key.pem"), "rb") as f:
    DEMO_KEY = f.read()
# The plain demo keys whose SHA-256 hashes policies/orders.json holds (demo material only).
KEY_Q1 = "demo-key-reporting-2026q1"
KEY_Q2 = "demo-key-reporting-2026q2"
KEY_EXPIRED = "demo-key-legacy-import"
KEY_DISABLED = "demo-key-revoked-partner"


def token(sub="alice", scope="", **claims):
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 600, **claims}
    if scope:
        body["scope"] = scope
    return jwt.encode(body, DEMO_KEY, algorithm="ES256", headers={"kid": KID})


def bearer(t, **extra):
    return {"authorization": f"Bearer {t}", **extra}


@pytest.fixture(scope="module")
def envoy(upstream):
    e = Envoy(orders_policy(), upstream.port).wait_ready()
    yield e
    e.stop()


def code(resp):
    if resp.status == 200:
        return None
    return resp.json()["type"].rsplit(":", 1)[1]


# The decisions of the orders policy (scopes, claim conditions, owners, API keys, unknown
# routes, normalisation, limits) are one corpus, policies/orders.cases.yaml: the native tests,
# `make test-policies` and the real-Envoy parity test (test_cli_parity.py) all run it. The tests
# below check what a case file cannot express: bodies, headers and what the upstream sees.


def test_bola_user_a_cannot_read_user_b(envoy):
    alice = token("alice")
    assert envoy.get("/users/alice", bearer(alice)).status == 200
    resp = envoy.get("/users/bob", bearer(alice))
    assert resp.status == 403 and code(resp) == "forbidden"
    assert "bob" not in resp.body.decode() and "sub" not in resp.body.decode()
    assert envoy.get("/users/bob/keys/k1", bearer(alice), method="DELETE").status == 403
    assert envoy.get("/users/alice/keys/k1", bearer(alice), method="DELETE").status == 200
    # Administrators are allowed by the override scope.
    assert envoy.get("/users/bob", bearer(token("alice", scope="users:admin")), method="PUT").status == 200


def test_insufficient_scope_response(envoy):
    resp = envoy.get("/orders", bearer(token(scope="orders:read")), method="POST")
    assert resp.status == 403
    assert resp.header("content-type") == "application/problem+json"
    assert resp.header("www-authenticate") == 'Bearer realm="orders", error="insufficient_scope", scope="orders:write"'


@pytest.mark.parametrize(
    "key,want", [(KEY_Q1, 200), (KEY_Q2, 200), (KEY_EXPIRED, 401), (KEY_DISABLED, 401), ("guess", 401)]
)
def test_api_keys(envoy, key, want):
    resp = envoy.get("/orders", {"x-api-key": key})
    assert resp.status == want, resp.body
    if want == 401:
        # One generic answer for unknown, expired and disabled keys.
        assert resp.json() == {
            "type": "urn:tollgate:problem:api_key_invalid", "title": "Invalid API key", "status": 401,
            "detail": "The API key is not valid."}
        assert resp.header("www-authenticate") is None
    else:
        seen = resp.json()
        assert "x-api-key" not in seen["headers"], "the key never reaches the upstream"
        assert seen["headers"]["x-tollgate-principal"][0].startswith("api_key:reporting-2026q")


def test_identity_header_is_forwarded_and_not_forgeable(envoy):
    seen = envoy.get("/users/alice", bearer(token("alice"), **{"x-tollgate-principal": "api_key:root"})).json()
    assert seen["headers"]["x-tollgate-principal"] == ["jwt:corp:alice"]
    seen = envoy.get("/health", {"x-tollgate-principal": "jwt:corp:root"}).json()
    assert "x-tollgate-principal" not in seen["headers"]


def test_unknown_route_denied(envoy):
    for method, path in [("GET", "/internal/debug"), ("PATCH", "/orders"), ("GET", "/healthz")]:
        resp = envoy.get(path, method=method)
        assert resp.status == 404 and code(resp) == "route_not_found", (method, path)


@pytest.mark.parametrize(
    "path,want",
    [
        ("/%61dmin/stats", 401),  # reaches the admin route's checks, not a public one
        ("/public/../admin/stats", 401),
        ("/public/%2e%2e/admin/stats", 401),
        ("//admin//stats", 401),
        ("/public%2F..%2Fadmin/stats", 400),
        ("/public/..%5Cadmin", 400),
    ],
)
def test_normalisation_bypass_attempts_are_denied(envoy, path, want):
    status, raw = raw_request(envoy.port, [f"GET {path} HTTP/1.1", "host: api.example", "connection: close"])
    # Envoy's own normalisation may refuse some of these first (400); either way nothing passes.
    assert status in (want, 400), raw[:300]
    assert status != 200


def test_upstream_sees_the_normalised_path(envoy):
    status, raw = raw_request(envoy.port, ["GET /public/a/./b//c?x=1 HTTP/1.1", "host: api.example", "connection: close"])
    assert status == 200
    body = json.loads(raw.split(b"\r\n\r\n", 1)[1])
    assert body["path"] == "/public/a/b/c?x=1"


def test_unknown_route_allowed_by_default_block_is_logged(upstream):
    policy = orders_policy()
    policy["default"] = {"action": "allow"}
    e = Envoy(policy, upstream.port).wait_ready()
    try:
        resp = e.get("/internal/debug?secret=1", {"x-tollgate-principal": "forged"})
        assert resp.status == 200
        assert "x-tollgate-principal" not in resp.json()["headers"]
        logs = e.logs()
        assert "unknown endpoint allowed by `default.action`: GET /internal/debug" in logs
        assert "secret=1" not in logs
    finally:
        e.stop()
