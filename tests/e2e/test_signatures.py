"""HTTP Message Signatures (RFC 9421) in a real Envoy with two workers: requests signed by an
independent, published implementation (PyPI's `http-message-signatures`) with each of the four
algorithms Tollgate accepts, then changed after signing (method, path, query, authority, a covered
header, the body), signed too long ago, replayed (on a new connection, so possibly another
worker), or signed without a component the policy requires. Keys are made at test time."""
import base64
import datetime
import http.client
import json
import secrets

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from http_message_signatures import HTTPMessageSigner, MappingKeyResolver, algorithms

from harness import Envoy, JwksServer, wait_until


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def int_bytes(n: int) -> bytes:
    return n.to_bytes((n.bit_length() + 7) // 8, "big")


def make_keys():
    """{kid: (algorithm class, private key for the signer, JWK for the policy)}."""
    secret = secrets.token_bytes(32)
    ed = ed25519.Ed25519PrivateKey.generate()
    p256 = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    p = p256.public_key().public_numbers()
    r = rsa_key.public_key().public_numbers()
    return {
        "hmac-1": (algorithms.HMAC_SHA256, secret, {"kty": "oct", "kid": "hmac-1", "k": b64url(secret)}),
        "ed-1": (algorithms.ED25519, ed, {"kty": "OKP", "crv": "Ed25519", "kid": "ed-1",
                                          "x": b64url(ed.public_key().public_bytes_raw())}),
        "p256-1": (algorithms.ECDSA_P256_SHA256, p256, {"kty": "EC", "crv": "P-256", "kid": "p256-1",
                                                        "x": b64url(p.x.to_bytes(32, "big")),
                                                        "y": b64url(p.y.to_bytes(32, "big"))}),
        "rsa-1": (algorithms.RSA_PSS_SHA512, rsa_key, {"kty": "RSA", "kid": "rsa-1",
                                                       "n": b64url(int_bytes(r.n)), "e": b64url(int_bytes(r.e))}),
    }


KEYS = make_keys()
POLICY = {
    "signers": {"partner": {
        "keys": {"keys": [jwk for _, _, jwk in KEYS.values()]},
        "algorithms": ["hmac-sha256", "ed25519", "ecdsa-p256-sha256", "rsa-pss-sha512"],
        "components": ["@method", "@target-uri", "@authority"],
        "max_age_seconds": 60,
    }},
    "routes": [
        {"name": "transfers", "prefix": "/transfers", "signers": ["partner"]},
        {"name": "health", "path": "/health", "public": True},
    ],
}


@pytest.fixture(scope="module")
def envoy(upstream):
    e = Envoy(POLICY, upstream.port, concurrency=2).wait_ready()
    yield e
    e.stop()


class Message:
    """What the signer reads and writes: method, absolute URL, headers."""

    def __init__(self, method, url, headers):
        self.method, self.url, self.headers = method, url, dict(headers)


def signed(envoy, kid, method="GET", path="/transfers/7?page=2", body=None, headers=None,
           components=("@method", "@authority", "@target-uri"), created=None, nonce=True, keys=None):
    """A request signed with key `kid` (of `keys`, default KEYS): (method, path, headers, body)."""
    alg, private, _ = (keys or KEYS)[kid]
    resolver = MappingKeyResolver(public_keys={}, private_keys={kid: private})
    signer = HTTPMessageSigner(signature_algorithm=alg, key_resolver=resolver)
    msg = Message(method, f"http://127.0.0.1:{envoy.port}{path}", {"x-client": "acme", **(headers or {})})
    signer.sign(msg, key_id=kid, created=created, nonce=secrets.token_urlsafe(16) if nonce else None,
                covered_component_ids=components, body=body)
    return method, path, msg.headers, body


def send(envoy, method, path, headers, body=None, host=None):
    conn = http.client.HTTPConnection("127.0.0.1", envoy.port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("host", host or f"127.0.0.1:{envoy.port}")
        for k, v in headers.items():
            conn.putheader(k, v)
        if body is not None:
            conn.putheader("content-length", str(len(body)))
        conn.endheaders(body)
        r = conn.getresponse()
        data = r.read()
        return r.status, data
    finally:
        conn.close()


def code(status, data):
    return None if status == 200 else json.loads(data)["type"].rsplit(":", 1)[1]


@pytest.mark.parametrize("kid", sorted(KEYS))
def test_each_algorithm_verifies_and_names_the_signer(envoy, kid):
    status, data = send(envoy, *signed(envoy, kid))
    assert status == 200, data
    seen = json.loads(data)["headers"]
    assert seen["x-tollgate-principal"] == [f"sig:partner:{kid}"]


@pytest.mark.parametrize("kid", ["ed-1", "p256-1"])
def test_anything_changed_after_signing_is_refused(envoy, kid):
    method, path, headers, _ = signed(envoy, kid, headers={"content-type": "text/plain"},
                                      components=("@method", "@authority", "@target-uri", "content-type"))
    cases = {
        "method": ("DELETE", path, headers, None),
        "path": (method, "/transfers/8?page=2", headers, None),
        "query": (method, "/transfers/7?page=3", headers, None),
        "header": (method, path, {**headers, "content-type": "text/html"}, None),
    }
    for what, (m, p, h, b) in cases.items():
        assert code(*send(envoy, m, p, h, b)) == "message_signature_invalid", what
    other_host = send(envoy, method, path, headers, host="evil.example")
    assert code(*other_host) == "message_signature_invalid"


def test_a_body_is_bound_by_its_signed_digest(envoy):
    body = b'{"amount": 10}'
    method, path, headers, _ = signed(envoy, "ed-1", method="POST", path="/transfers", body=body,
                                      headers={"content-type": "application/json"})
    assert "content-digest" in {k.lower() for k in headers}
    assert send(envoy, method, path, headers, body)[0] == 200
    # Same signature and digest header, another body: the digest does not match.
    method, path, headers, _ = signed(envoy, "ed-1", method="POST", path="/transfers", body=body,
                                      headers={"content-type": "application/json"})
    assert code(*send(envoy, method, path, headers, b'{"amount": 10000}')) == "content_digest_mismatch"


def test_a_body_without_a_covered_digest_is_refused(envoy):
    method, path, headers, _ = signed(envoy, "ed-1", method="POST", path="/transfers",
                                      headers={"content-type": "application/json"})
    assert code(*send(envoy, method, path, headers, b'{"amount": 10}')) == "message_signature_invalid"


def test_a_missing_required_component_is_refused(envoy):
    req = signed(envoy, "ed-1", components=("@method", "@target-uri"))
    assert code(*send(envoy, *req)) == "message_signature_invalid"


def test_an_old_signature_is_refused(envoy):
    old = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=600)
    assert code(*send(envoy, *signed(envoy, "ed-1", created=old))) == "message_signature_expired"
    future = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=600)
    assert code(*send(envoy, *signed(envoy, "ed-1", created=future))) == "message_signature_expired"


def test_a_replayed_signature_is_refused_by_every_worker(envoy):
    req = signed(envoy, "hmac-1")
    assert send(envoy, *req)[0] == 200
    # New connections: Envoy may hand them to either worker; the nonce is in shared data.
    for _ in range(6):
        assert code(*send(envoy, *req)) == "message_signature_replayed"


def test_a_signature_without_a_nonce_is_refused(envoy):
    assert code(*send(envoy, *signed(envoy, "ed-1", nonce=False))) == "message_signature_invalid"


def test_no_signature_and_unknown_keys(envoy):
    assert code(*send(envoy, "GET", "/transfers/7", {})) == "message_signature_missing"
    method, path, headers, _ = signed(envoy, "ed-1")
    headers = {k.lower(): v for k, v in headers.items()}
    forged = {**headers, "signature-input": headers["signature-input"].replace('keyid="ed-1"', 'keyid="ed-2"')}
    assert forged != headers
    assert code(*send(envoy, method, path, forged)) == "message_signature_invalid"


def test_published_keys_are_fetched_and_rotated(upstream):
    """`remote_keys`: the partner publishes its public keys; refused (503) until they are fetched,
    then a rotation to a new key is picked up by the early refresh an unknown `keyid` asks for."""
    published = JwksServer()
    published.fail(503)
    policy = {
        "signers": {"partner": {
            "remote_keys": {"cluster": "jwks", "uri": "http://partner.test/keys.json",
                            "refresh_seconds": 3600, "retry_seconds": 1, "min_refresh_seconds": 1},
            "algorithms": ["ed25519", "ecdsa-p256-sha256"],
        }},
        "routes": [{"name": "transfers", "prefix": "/transfers", "signers": ["partner"]}],
    }
    envoy = Envoy(policy, upstream.port, published.port, concurrency=2).wait_ready()
    try:
        assert code(*send(envoy, *signed(envoy, "ed-1"))) == "keys_unavailable"
        # The secret beside them is not for fetching: left out, as keys of other algorithms are.
        published.publish([KEYS[k][2] for k in ("ed-1", "p256-1", "hmac-1")])
        wait_until(lambda: send(envoy, *signed(envoy, "ed-1"))[0] == 200, what="keys fetched")
        assert send(envoy, *signed(envoy, "p256-1"))[0] == 200
        assert code(*send(envoy, *signed(envoy, "hmac-1"))) == "message_signature_invalid"
        assert "key set for signer `partner` fetched: 2 usable keys" in envoy.logs()

        # Rotation: ed-2 replaces ed-1 and p256-1 at the partner's end.
        ed2 = ed25519.Ed25519PrivateKey.generate()
        rotated = {"ed-2": (algorithms.ED25519, ed2, {
            "kty": "OKP", "crv": "Ed25519", "kid": "ed-2", "x": b64url(ed2.public_key().public_bytes_raw())})}
        published.publish([rotated["ed-2"][2]])
        wait_until(lambda: send(envoy, *signed(envoy, "ed-2", keys=rotated))[0] == 200,
                   timeout=10, what="an early refresh installs ed-2")
        wait_until(lambda: all(send(envoy, *signed(envoy, "ed-1"))[0] == 401 for _ in range(4)),
                   what="ed-1 dropped by every worker")
    finally:
        envoy.stop()
        published.stop()
