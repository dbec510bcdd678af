"""Operating Tollgate safely, in a real Envoy: per-route metrics by reason, the JSON audit log
(with no secrets in it), dry-run mode (global and per route), security headers, 5xx masking, API
lifecycle (Deprecation/Sunset, 410), IP allow/deny lists and brute-force blocks."""
import hashlib
import json
import time

import pytest

from harness import Envoy, wait_until
from tokens import AUDIENCE, ISSUER, mint, public_jwk

API_KEY = "tgk_test-operations-key-0123456789abcdef"
CLIENT = "192.0.2.10"

ROUTES = [
    {"name": "items", "path": "/items", "providers": ["corp"], "api_keys": True},
    {"name": "public", "path": "/public", "public": True},
    {"name": "internal", "prefix": "/internal/", "public": True, "ip_access": {"allow": ["10.0.0.0/8", "fd00::/8"]}},
    {"name": "v1-orders", "prefix": "/v1/", "public": True,
     "lifecycle": {"deprecated": "2025-01-01T00:00:00Z", "sunset": "2099-01-01T00:00:00Z", "successor": "/v2/orders"}},
    {"name": "v0-orders", "prefix": "/v0/", "public": True, "lifecycle": {"retired": True, "successor": "/v2/orders"}},
    {"name": "trial", "path": "/trial", "providers": ["corp"], "mode": "dry-run"},
    {"name": "submit", "path": "/submit", "methods": ["POST"], "public": True,
     "request": {"body": {"type": "object", "required": ["id"]}}},
]


def policy(**extra):
    return {
        "providers": {"corp": {"issuer": ISSUER, "audiences": [AUDIENCE], "algorithms": ["RS256"],
                               "jwks": {"keys": [public_jwk("rsa-1")]}}},
        "api_keys": {"keys": [{"id": "batch", "sha256": hashlib.sha256(API_KEY.encode()).hexdigest()}]},
        # The test client plays a load balancer that appends the client's address; Envoy
        # (`use_remote_address: true`) appends the balancer's: two trusted entries.
        "rate_limit_options": {"trusted_hops": 2},
        "ip_access": {"deny": ["198.51.100.0/24", "2001:db8:bad::/48"]},
        "brute_force": {"max_failures": 3, "window_seconds": 60, "block_seconds": 2},
        "responses": {"mask_upstream_errors": True},
        "routes": ROUTES,
        **extra,
    }


@pytest.fixture(scope="module")
def envoy(upstream):
    e = Envoy(policy(), upstream.port, concurrency=1).wait_ready()
    yield e
    e.stop()


@pytest.fixture(scope="module")
def dry(upstream):
    e = Envoy(policy(mode="dry-run", dry_run_header="x-tollgate-dry-run"), upstream.port, concurrency=1).wait_ready()
    yield e
    e.stop()


def get(envoy, path, ip=CLIENT, headers=None, **kw):
    return envoy.get(path, {"x-forwarded-for": ip, **(headers or {})}, **kw)


def code(resp):
    return None if resp.status < 400 else resp.json()["type"].rsplit(":", 1)[1]


def audit_lines(envoy):
    out = []
    for line in envoy.logs().splitlines():
        if "tollgate.audit " in line:
            out.append(json.loads(line.split("tollgate.audit ", 1)[1]))
    return out


def test_metrics_by_route_and_reason(envoy):
    before = envoy.stats()
    good = mint()
    assert get(envoy, "/items", headers={"authorization": f"Bearer {good}"}).status == 200
    assert get(envoy, "/items", headers={"x-api-key": API_KEY}).status == 200
    assert code(get(envoy, "/items", ip="192.0.2.20")) == "token_missing"
    assert code(get(envoy, "/nowhere")) == "route_not_found"
    assert code(get(envoy, "/internal/x")) == "ip_denied"
    after = envoy.stats()

    def delta(name):
        return after.get(name, 0) - before.get(name, 0)

    assert delta("tollgate.route.items.allowed") == 2
    assert delta("tollgate.route.items.denied.authentication") == 1
    assert delta("tollgate.route._unmatched.denied.unknown_route") == 1
    assert delta("tollgate.route.internal.denied.authorization") == 1
    assert delta("tollgate.requests.denied.token_missing") == 1
    assert delta("tollgate.requests.allowed") == 2
    assert delta("tollgate.jwt.cache_miss") + delta("tollgate.jwt.cache_hit") == 1


def test_audit_lines_are_json_without_secrets(envoy):
    good = mint(sub="audit-user")
    rid = "audit-test-request-1"
    assert get(envoy, "/items?secret=query-value", headers={"authorization": f"Bearer {good}", "x-request-id": rid}).status == 200
    assert get(envoy, "/items", headers={"x-api-key": API_KEY, "x-request-id": "audit-test-request-2"}).status == 200
    bad = get(envoy, "/items", ip="192.0.2.30", headers={"authorization": f"Bearer {mint(signing_kid='rsa-2')}", "x-request-id": "audit-test-request-3"})
    assert code(bad) == "signature_invalid"
    lines = wait_until(lambda: [l for l in audit_lines(envoy) if (l["request_id"] or "").startswith("audit-test-")]
                       if len([l for l in audit_lines(envoy) if (l["request_id"] or "").startswith("audit-test-")]) == 3 else None,
                       what="three audit lines")
    by_id = {l["request_id"]: l for l in lines}
    first = by_id[rid]
    assert set(first) == {"time", "request_id", "client_ip", "method", "route", "path", "principal", "decision",
                          "reason", "reason_category", "status", "mode"}
    assert first["path"] == "/items" and first["client_ip"] == CLIENT and first["method"] == "GET"
    assert first["principal"] == "jwt:corp:audit-user" and first["decision"] == "allow" and first["status"] == 200
    assert first["mode"] == "enforce" and first["route"] == "items"
    assert by_id["audit-test-request-2"]["principal"] == "api_key:batch"
    third = by_id["audit-test-request-3"]
    assert (third["decision"], third["reason"], third["reason_category"], third["status"]) == (
        "deny", "signature_invalid", "authentication", 401)
    logs = envoy.logs()
    for secret in (good, good.split(".")[2], API_KEY, "query-value"):
        assert secret not in logs


def test_security_headers_and_removed_upstream_headers(envoy):
    public = get(envoy, "/public", headers={"x-echo-respond": "200"})
    assert public.status == 200
    assert public.header("strict-transport-security") == "max-age=31536000; includeSubDomains"
    assert public.header("x-content-type-options") == "nosniff"
    assert public.header("x-frame-options") == "DENY"
    assert "default-src 'none'" in public.header("content-security-policy")
    assert public.header("referrer-policy") == "no-referrer"
    assert public.header("server") is None and public.header("x-powered-by") is None
    assert public.header("cache-control") is None, "not authenticated"
    authed = get(envoy, "/items", headers={"x-api-key": API_KEY})
    assert authed.header("cache-control") == "no-store"
    denied = get(envoy, "/items")
    assert denied.header("x-content-type-options") == "nosniff" and denied.header("server") is None
    assert denied.header("content-type") == "application/problem+json"


def test_upstream_5xx_bodies_are_masked(envoy):
    resp = get(envoy, "/public", headers={"x-echo-respond": "500"}, method="POST",
               body=json.dumps({"trace": "Traceback: db password=hunter2"}).encode())
    assert resp.status == 500
    assert resp.header("content-type") == "application/problem+json"
    assert resp.json() == {"type": "urn:tollgate:problem:upstream_error", "title": "Upstream error", "status": 500,
                           "detail": "The service failed to handle the request."}
    assert b"hunter2" not in resp.body
    assert wait_until(lambda: "upstream answered 500 on route `public`" in envoy.logs(), what="masking log")
    assert envoy.stats()["tollgate.response.upstream_masked"] >= 1
    ok = get(envoy, "/public", headers={"x-echo-respond": "404"}, method="POST", body=b'{"detail": "nope"}')
    assert ok.status == 404 and ok.json() == {"detail": "nope"}, "only 5xx is masked"


def test_deprecated_and_retired_routes(envoy):
    old = get(envoy, "/v1/orders")
    assert old.status == 200
    assert old.header("deprecation") == "@1735689600"
    assert old.header("sunset") == "Thu, 01 Jan 2099 00:00:00 GMT"
    assert old.header("link") == '</v2/orders>; rel="successor-version"'
    gone = get(envoy, "/v0/orders")
    assert gone.status == 410 and code(gone) == "route_retired"
    assert gone.header("link") == '</v2/orders>; rel="successor-version"'
    assert get(envoy, "/public").header("deprecation") is None
    assert envoy.stats()["tollgate.lifecycle.deprecated_requests"] >= 1


@pytest.mark.parametrize("ip,path,want", [
    ("198.51.100.7", "/public", "ip_denied"),            # global deny list
    ("2001:db8:bad::1", "/public", "ip_denied"),         # IPv6 deny
    ("2001:db8:900d::1", "/public", None),
    (CLIENT, "/internal/metrics", "ip_denied"),          # route allow list
    ("10.20.30.40", "/internal/metrics", None),
    ("fd00::7", "/internal/metrics", None),
    ("::ffff:10.1.1.1", "/internal/metrics", None),      # IPv4-mapped
    ("not-an-ip", "/public", "ip_denied"),               # unparsable: fail closed
])
def test_ip_lists(envoy, ip, path, want):
    assert code(get(envoy, path, ip=ip)) == want


def test_brute_force_block_and_expiry(envoy):
    attacker, bystander = "203.0.113.7", "203.0.113.8"
    good = mint()
    for _ in range(3):
        assert code(get(envoy, "/items", ip=attacker, headers={"x-api-key": "tgk_guess"})) == "api_key_invalid"
    blocked = get(envoy, "/items", ip=attacker, headers={"authorization": f"Bearer {good}"})
    assert blocked.status == 429 and code(blocked) == "client_blocked"
    assert 1 <= int(blocked.header("retry-after")) <= 2
    assert get(envoy, "/items", ip=bystander, headers={"authorization": f"Bearer {good}"}).status == 200
    assert get(envoy, "/public", ip=attacker).status == 200, "public routes are not blocked"
    assert envoy.stats()["tollgate.brute_force.blocks"] >= 1
    time.sleep(2.2)
    assert get(envoy, "/items", ip=attacker, headers={"authorization": f"Bearer {good}"}).status == 200


def test_route_in_dry_run_passes_what_it_would_deny(envoy, upstream):
    before = envoy.stats().get("tollgate.route.trial.dry_run.authentication", 0)
    resp = get(envoy, "/trial")
    assert resp.status == 200
    assert envoy.stats()["tollgate.route.trial.dry_run.authentication"] == before + 1
    assert code(get(envoy, "/items")) == "token_missing", "other routes still enforce"


def test_global_dry_run(dry, envoy):
    cases = [("/items", {}, "token_missing"), ("/nowhere", {}, "route_not_found"),
             ("/v0/orders", {}, "route_retired"), ("/internal/x", {}, "ip_denied")]
    for path, headers, want in cases:
        assert code(get(envoy, path, headers=headers)) == want
        resp = get(dry, path, headers=headers)
        assert resp.status == 200, path
        seen = resp.json()["headers"]
        assert seen.get("x-tollgate-dry-run") == [want]
    body = {"headers": {"content-type": "application/json"}, "method": "POST", "body": b'{"name": "no id"}'}
    assert code(get(envoy, "/submit", **body)) == "request_invalid"
    passed = get(dry, "/submit", **body)
    assert passed.status == 200 and passed.json()["body"] == '{"name": "no id"}'
    assert passed.json()["headers"].get("x-tollgate-dry-run") == ["request_invalid"], "told after the body check"
    forged = get(dry, "/items", headers={"x-tollgate-principal": "jwt:corp:admin"})
    assert "x-tollgate-principal" not in forged.json()["headers"], "forged identity still removed"
    stats = dry.stats()
    assert stats["tollgate.requests.dry_run.token_missing"] >= 2
    assert stats.get("tollgate.requests.denied.token_missing", 0) == 0
    lines = wait_until(lambda: [l for l in audit_lines(dry) if l["decision"] == "would_deny"] or None, what="dry-run audit")
    assert {l["reason"] for l in lines} >= {"token_missing", "route_not_found", "request_invalid"}
    assert stats["tollgate.route.submit.dry_run.request_schema"] == 1
    assert all(l["mode"] == "dry-run" and l["status"] == 200 for l in lines)
