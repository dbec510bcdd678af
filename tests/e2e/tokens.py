"""Token minting for end-to-end tests with an independent JWT implementation (PyJWT +
cryptography) and the TEST-ONLY keys in tests/fixtures/keys/."""
import base64
import hashlib
import hmac
import json
import os
import time

import jwt

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KEYS = os.path.join(ROOT, "tests/fixtures/keys")
ISSUER = "https://issuer.test"
AUDIENCE = "api.test"

# The demo of `make run` (policies/demo.json): its issuer, audience and key. `make token` mints the
# same tokens with the tollgate CLI; these tests mint them with PyJWT, independently.
DEMO_ISSUER = "https://demo.tollgate.local"
DEMO_AUDIENCE = "demo-api"
DEMO_KID = "demo-1"
DEMO_KEY = os.path.join(ROOT, "envoy/demo/demo-signing-key.pem")

ALG_KEYS = {
    "HS256": "hmac", "HS384": "hmac", "HS512": "hmac",
    "RS256": "rsa-1", "RS384": "rsa-1", "RS512": "rsa-1",
    "PS256": "rsa-1", "PS384": "rsa-1", "PS512": "rsa-1",
    "ES256": "ec256", "ES384": "ec384", "ES512": "ec521", "EdDSA": "ed25519",
}


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwks():
    with open(os.path.join(KEYS, "public.jwks.json")) as f:
        return json.load(f)["keys"]


def public_jwk(kid):
    return next(k for k in public_jwks() if k["kid"] == kid)


def _private_jwk(kid):
    with open(os.path.join(KEYS, "private.jwks.json")) as f:
        return next(k for k in json.load(f)["keys"] if k["kid"] == kid)


def signing_key(kid):
    if kid == "hmac":
        return base64.urlsafe_b64decode(_private_jwk("hmac")["k"] + "==")
    with open(os.path.join(KEYS, f"{kid}.pem"), "rb") as f:
        return f.read()


def claims(**overrides):
    now = int(time.time())
    c = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 3600}
    for k, v in overrides.items():
        if v is None:
            c.pop(k, None)
        else:
            c[k] = v
    return c


def mint(alg="RS256", kid=None, signing_kid=None, headers=None, **claim_overrides):
    kid = kid or ALG_KEYS[alg]
    hdrs = {"kid": kid, **(headers or {})}
    return jwt.encode(claims(**claim_overrides), signing_key(signing_kid or kid), algorithm=alg, headers=hdrs)


def unsigned(header, payload, signature=b"sig"):
    return f"{b64u(json.dumps(header).encode())}.{b64u(json.dumps(payload).encode())}.{b64u(signature)}"


def hs256_with_public_key(kid="rsa-1"):
    """The algorithm-confusion forgery: HMAC-SHA256 keyed with the RSA public key's PEM."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    pub = load_pem_private_key(signing_key(kid), None).public_key()
    pem = pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "typ": "JWT", "kid": kid}
    signing_input = f"{b64u(json.dumps(header).encode())}.{b64u(json.dumps(claims()).encode())}"
    sig = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64u(sig)}"


def mint_demo(sub="demo-user", scope="orders:read", ttl=3600):
    """A token the demo policy accepts (`make token`'s defaults), without `scope` when empty."""
    with open(DEMO_KEY, "rb") as f:
        key = f.read()
    now = int(time.time())
    body = {"iss": DEMO_ISSUER, "aud": DEMO_AUDIENCE, "sub": sub, "iat": now, "exp": now + ttl}
    if scope:
        body["scope"] = scope
    return jwt.encode(body, key, algorithm="ES256", headers={"kid": DEMO_KID})
