#!/usr/bin/env python3
"""Prints a JWT signed with the demo key, accepted by the demo policy (policies/demo.json).

    envoy/demo/mint_token.py [--sub alice] [--scope "orders:read"] [--ttl 3600]
    make token SUB=bob SCOPE="orders:read orders:write" TTL=600
"""
import argparse
import os
import time

import jwt  # PyJWT, installed into .venv by the Makefile

HERE = os.path.dirname(os.path.abspath(__file__))
ISSUER = "https://demo.tollgate.local"
AUDIENCE = "demo-api"
KID = "demo-1"


def mint(sub: str, scope: str, ttl: int, key_path: str = os.path.join(HERE, "demo-signing-key.pem")) -> str:
    with open(key_path, "rb") as f:
        key = f.read()
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + ttl}
    if scope:
        claims["scope"] = scope
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": KID})


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sub", default="demo-user")
    p.add_argument("--scope", default="orders:read")
    p.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds; -61 or less is expired even with the demo policy's 60 s clock skew")
    a = p.parse_args()
    print(mint(a.sub, a.scope, a.ttl))
