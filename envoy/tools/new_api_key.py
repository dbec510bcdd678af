#!/usr/bin/env python3
"""Prints a new random API key and the line to paste into a policy's `api_keys.keys`.

    envoy/tools/new_api_key.py --id reporting-batch [--scopes "orders:read"] [--days 90]
    make api-key ID=reporting-batch SCOPES="orders:read" DAYS=90

Give the key to the client once; the policy keeps only its SHA-256 (see policies/README.md, "API keys").
"""
import argparse
import datetime
import hashlib
import json
import secrets


def new_key(key_id: str, scopes: list, days: int):
    # 32 random bytes: guessing is infeasible, so a fast hash is safe (no password-style hashing).
    key = "tgk_" + secrets.token_urlsafe(32)
    entry = {"id": key_id, "sha256": hashlib.sha256(key.encode()).hexdigest(), "scopes": scopes}
    if days > 0:
        expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=days)
        entry["expires"] = expires.strftime("%Y-%m-%dT%H:%M:%SZ")
    return key, entry


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--id", required=True)
    p.add_argument("--scopes", default="", help="space-separated scopes")
    p.add_argument("--days", type=int, default=90, help="days until `expires` (0: no expiry)")
    a = p.parse_args()
    key, entry = new_key(a.id, a.scopes.split(), a.days)
    print(f"key:         {key}")
    print(f"policy line: {json.dumps(entry)}")
