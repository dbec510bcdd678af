"""Revocation lists in a real Envoy with two workers: a list served by a local HTTP server (the
stand-in for the team's list endpoint) is fetched through a cluster; a token id, a subject and an
API key added to it are refused within the refresh interval by every worker; a list-server
outage, a malformed list and an oversize list keep the last good copy; an empty list lifts the
entries. Also: requests wait (503) until the first fetch, and the policy's own entries."""
import hashlib
import json

import tokens
from harness import Envoy, JwksServer, wait_until
from rawclient import http2

API_KEY = "e2e-revocation-key-0001"
OTHER_KEY = "e2e-revocation-key-0002"


def policy(revocations):
    return {
        "realm": "e2e",
        "providers": {"idp": {
            "issuer": tokens.ISSUER, "audiences": [tokens.AUDIENCE], "algorithms": ["RS256"],
            "jwks": {"keys": [tokens.public_jwk("rsa-1")]},
        }},
        "api_keys": {"keys": [
            {"id": "ci", "sha256": hashlib.sha256(API_KEY.encode()).hexdigest()},
            {"id": "ops", "sha256": hashlib.sha256(OTHER_KEY.encode()).hexdigest()},
        ]},
        "revocations": revocations,
        "routes": [
            {"name": "health", "path": "/health", "public": True},
            {"name": "api", "prefix": "/api/", "providers": ["idp"], "api_keys": True},
            {"name": "export", "prefix": "/export/", "providers": ["idp"]},
        ],
    }


def publish(server, body, status=200):
    with server.lock:
        server.status = status
        server.body = body if isinstance(body, bytes) else json.dumps(body).encode()


def answers(envoy, headers, path="/api/x", times=4):
    """The problem codes (or `ok`) of `times` requests, each on its own connection, so that both
    workers answer some of them."""
    out = set()
    for _ in range(times):
        resp = envoy.get(path, headers)
        if resp.status == 200:
            out.add("ok")
        else:
            out.add(resp.json()["type"].rsplit(":", 1)[-1])
    return out


def bearer(**claims):
    return {"authorization": "Bearer " + tokens.mint("RS256", kid="rsa-1", **claims)}


def test_a_served_list_revokes_within_the_interval_and_survives_outages(upstream):
    server = JwksServer()
    publish(server, {})
    envoy = Envoy(policy({"remote": {
        "cluster": "jwks", "uri": "http://lists.test/revoked.json",
        "refresh_seconds": 1, "retry_seconds": 1, "max_bytes": 2048,
    }}), upstream.port, server.port, concurrency=2).wait_ready()
    stolen, mallory, key = bearer(jti="tok-stolen"), bearer(sub="mallory"), {"x-api-key": API_KEY}
    fine, other_key = bearer(jti="tok-fine"), {"x-api-key": OTHER_KEY}
    try:
        wait_until(lambda: answers(envoy, fine) == {"ok"}, what="the empty list fetched")
        for who in (stolen, mallory, key):
            assert answers(envoy, who) == {"ok"}

        publish(server, {"token_ids": ["tok-stolen"], "subjects": ["mallory"], "api_keys": ["ci"]})
        for who in (stolen, mallory, key):
            wait_until(lambda: answers(envoy, who, times=6) == {"credential_revoked"}, timeout=5,
                       what="revoked on every worker within the interval")
        assert answers(envoy, fine) == {"ok"} and answers(envoy, other_key) == {"ok"}
        resp = envoy.get("/api/x", key)
        assert resp.status == 401 and "invalid_token" in resp.header("www-authenticate")
        assert resp.json()["detail"] == "The credential has been revoked."
        assert set(resp.json()) == {"type", "title", "status", "detail"}
        assert "tok-stolen" not in envoy.logs(), "the list's entries are never logged"
        # The same over HTTP/2 (h2c), a body split over many frames, and spelling variants.
        for headers in ([("x-api-key", API_KEY)], [("authorization", stolen["authorization"])],
                        [("authorization", "bearer " + stolen["authorization"][len("Bearer "):])]):
            got = http2(envoy.port, "POST", "/api/x", f"127.0.0.1:{envoy.port}",
                        headers + [("content-type", "application/json")], body=b'{"a": 1}' * 64,
                        framing="split")
            assert (got.status, got.problem_code()) == (401, "credential_revoked"), got
        got = envoy.get("/api/x", {"X-Api-KEY": API_KEY})
        assert got.status == 401 and got.json()["type"].endswith(":credential_revoked")
        assert "revocation list for `revocations` fetched: 3 entries" in envoy.logs()
        assert envoy.stats()["tollgate.requests.denied.credential_revoked"] >= 3

        # Outage, then a malformed and an oversize list: the last good copy stays in force.
        for broken in ((b"internal error", 500), (b'{"token_ids": ["tok-stolen"', 200),
                       (json.dumps({"subjects": ["x" * 3000]}).encode(), 200),
                       (b'{"token_ids": [], "everyone": true}', 200)):
            failed = envoy.stats()["tollgate.revocations.fetch_failed"]
            publish(server, broken[0], broken[1])
            wait_until(lambda: envoy.stats()["tollgate.revocations.fetch_failed"] >= failed + 2,
                       what="refused refreshes")
            for who in (stolen, mallory, key):
                assert answers(envoy, who) == {"credential_revoked"}
            assert answers(envoy, fine) == {"ok"}
        server.stop()
        server.server.server_close()
        failed = envoy.stats()["tollgate.revocations.fetch_failed"]
        wait_until(lambda: envoy.stats()["tollgate.revocations.fetch_failed"] >= failed + 2,
                   what="the list server gone")
        assert answers(envoy, stolen) == {"credential_revoked"}
        logs = envoy.logs()
        assert "keeping the last good list" in logs, logs[-3000:]
        assert "x" * 100 not in logs
    finally:
        envoy.stop()
        server.stop()


def test_lifting_and_waiting_for_the_first_list(upstream):
    server = JwksServer()
    publish(server, b"down", 503)
    envoy = Envoy(policy({
        "revoked": {"routes": ["export"], "addresses": ["192.0.2.0/24"]},
        "remote": {"cluster": "jwks", "uri": "http://lists.test/revoked.json",
                   "refresh_seconds": 1, "retry_seconds": 1},
    }), upstream.port, server.port, concurrency=2).wait_ready()
    try:
        # Never fetched: authenticated routes wait, public ones are served.
        resp = envoy.get("/api/x", bearer())
        assert resp.status == 503 and resp.header("retry-after") == "5"
        assert resp.json()["type"].endswith(":revocations_unavailable")
        assert envoy.get("/health").status == 200

        publish(server, {"subjects": ["alice"]})
        wait_until(lambda: answers(envoy, bearer(sub="alice")) == {"credential_revoked"}, what="fetched")
        assert answers(envoy, bearer(sub="bob")) == {"ok"}
        # The policy's entries hold alongside: a closed route.
        assert answers(envoy, bearer(sub="bob"), path="/export/all") == {"route_closed"}

        publish(server, {})
        wait_until(lambda: answers(envoy, bearer(sub="alice"), times=6) == {"ok"}, timeout=5,
                   what="lifted on every worker")
    finally:
        envoy.stop()
        server.stop()
