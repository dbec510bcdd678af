"""Remote JWKS in a real Envoy: fetched through a cluster from a local JWKS server, shared by every
worker, refreshed after a key rotation, last good keys kept through an outage, fail-closed start."""
import time

import tokens
from harness import Envoy, JwksServer, wait_until


def policy(**remote):
    return {
        "realm": "e2e",
        "providers": {
            "idp": {
                "issuer": tokens.ISSUER,
                "audiences": [tokens.AUDIENCE],
                "algorithms": ["RS256"],
                "remote_jwks": {"cluster": "jwks", "uri": "http://idp.test/.well-known/jwks.json", **remote},
                "forward_claims": {"sub": "x-user-id"},
            }
        },
        "routes": [{"prefix": "/api/", "providers": ["idp"]}],
    }


def bearer(token):
    return {"authorization": f"Bearer {token}"}


def status(envoy, token):
    return envoy.get("/api/x", bearer(token)).status


def test_fail_closed_until_keys_then_outage_keeps_last_good_keys(upstream):
    jwks = JwksServer()
    jwks.fail(503)
    envoy = Envoy(policy(refresh_seconds=1, retry_seconds=1, max_bytes=4096), upstream.port, jwks.port).wait_ready()
    try:
        token = tokens.mint("RS256", kid="rsa-1")
        resp = envoy.get("/api/x", bearer(token))
        assert resp.status == 503, resp.body
        assert resp.json()["type"] == "urn:tollgate:problem:keys_unavailable"
        assert resp.header("retry-after") == "5"
        wait_until(lambda: envoy.stats()["tollgate.jwks.fetch_failed"] >= 1, what="a failed fetch")
        assert status(envoy, token) == 503, "still no keys: fail closed"

        jwks.publish([tokens.public_jwk("rsa-1")])
        wait_until(lambda: status(envoy, token) == 200, what="keys fetched")

        # Outage: the server errors, then sends an oversize body; tokens keep working.
        failed = envoy.stats()["tollgate.jwks.fetch_failed"]
        jwks.fail(500)
        wait_until(lambda: envoy.stats()["tollgate.jwks.fetch_failed"] >= failed + 2, what="failed refreshes")
        assert status(envoy, token) == 200
        assert status(envoy, tokens.mint("RS256", kid="rsa-1", sub="new-user")) == 200, "verified with kept keys"
        failed = envoy.stats()["tollgate.jwks.fetch_failed"]
        jwks.publish([tokens.public_jwk("rsa-1")] * 1 + [{"kty": "oct", "k": "x" * 5000}])
        wait_until(lambda: envoy.stats()["tollgate.jwks.fetch_failed"] >= failed + 2, what="oversize refused")
        assert status(envoy, tokens.mint("RS256", kid="rsa-1", sub="third")) == 200
        assert "jwks fetch for provider `idp` failed: http status 500" in envoy.logs()
        assert "response larger than `max_bytes`" in envoy.logs()
    finally:
        envoy.stop()
        jwks.stop()


def test_one_fetch_per_process_and_rotation_by_early_refresh(upstream):
    jwks = JwksServer()
    jwks.publish([tokens.public_jwk("rsa-1")])
    # A long refresh period: any fetch after the first is an early refresh caused by an unknown kid.
    envoy = Envoy(policy(refresh_seconds=3600, min_refresh_seconds=600), upstream.port, jwks.port, concurrency=4).wait_ready()
    try:
        old = tokens.mint("RS256", kid="rsa-1")
        wait_until(lambda: status(envoy, old) == 200, what="keys fetched")
        time.sleep(2.5)  # every worker has ticked at least twice by now
        assert jwks.hits == 1, f"four workers, one fetch: {jwks.hits}"
        assert envoy.stats()["tollgate.jwks.installed"] >= 1, "other workers installed the shared set"
        for _ in range(4):
            assert status(envoy, old) == 200  # warm every worker's token cache

        # Rotation: the identity provider now publishes only rsa-2.
        jwks.publish([tokens.public_jwk("rsa-2")])
        new = tokens.mint("RS256", kid="rsa-2")
        first = envoy.get("/api/x", bearer(new))
        assert first.status == 401 and first.json()["type"] == "urn:tollgate:problem:unknown_key"
        wait_until(lambda: status(envoy, new) == 200, timeout=10, what="early refresh installs rsa-2")
        assert jwks.hits == 2
        # The removed key is no longer trusted, cached verifications included (key-set generation).
        wait_until(lambda: all(status(envoy, old) == 401 for _ in range(8)), what="rsa-1 dropped everywhere")

        # More unknown kids within min_refresh_seconds do not cause more fetches.
        for i in range(10):
            assert status(envoy, tokens.mint("RS256", kid=f"nobody-{i}", signing_kid="rsa-1")) == 401
        time.sleep(2.5)
        assert jwks.hits == 2, jwks.hits
    finally:
        envoy.stop()
        jwks.stop()
