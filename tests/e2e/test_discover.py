"""Discovering shadow APIs, in a real Envoy: requests no route matched are refused and audited with
their normalised path, and `tollgate discover` (the built CLI) on Envoy's log groups them into
templated endpoints with counts and draft routes; given the policy, it drafts routes for the
policy's providers and leaves out what the policy already matches."""
import json
import os
import subprocess

import pytest

from harness import ROOT, Envoy, wait_until
from test_cli_parity import cli_binary
from tokens import AUDIENCE, ISSUER, public_jwk

POLICY = {
    "providers": {"corp": {"issuer": ISSUER, "audiences": [AUDIENCE], "algorithms": ["RS256"],
                           "jwks": {"keys": [public_jwk("rsa-1")]}}},
    "routes": [
        {"name": "health", "path": "/health", "methods": ["GET"], "public": True},
        {"name": "users", "path": "/v1/users/{id}", "providers": ["corp"]},
    ],
}

# Envoy normalises paths itself before filters run (envoy/tollgate.yaml: normalize_path,
# merge_slashes; escaped unreserved characters decoded too), so here `path` and `normalized_path`
# agree; the engine's tests cover paths that reach Tollgate unnormalised.
UNKNOWN = ["/v2/users/123", "/v2/users/456", "/v2//users/./%37%38%39/orders", "/v2/users/42?access_token=query-secret"]


@pytest.fixture(scope="module")
def envoy(upstream):
    e = Envoy(POLICY, upstream.port, concurrency=1).wait_ready()
    yield e
    e.stop()


def audit_lines(envoy):
    return [json.loads(l.split("tollgate.audit ", 1)[1]) for l in envoy.logs().splitlines() if "tollgate.audit " in l]


def discover(*args):
    out = subprocess.run([cli_binary(), "discover", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def test_unknown_routes_are_audited_and_discovered(envoy, tmp_path):
    assert envoy.get("/health").status == 200
    for path in UNKNOWN:
        assert envoy.get(path).status == 404, path
    unmatched = wait_until(
        lambda: (lambda l: l if len(l) == len(UNKNOWN) else None)(
            [l for l in audit_lines(envoy) if l["reason_category"] == "unknown_route"]),
        what="audit lines of the unknown requests")
    # No query string in either path.
    assert sorted(l["normalized_path"] for l in unmatched) == [
        "/v2/users/123", "/v2/users/42", "/v2/users/456", "/v2/users/789/orders"]
    assert "query-secret" not in envoy.logs()
    assert all(l["reason"] == "route_not_found" and l["status"] == 404 for l in unmatched)
    assert all("normalized_path" not in l for l in audit_lines(envoy) if l["route"] == "health")

    # The log file as Envoy wrote it, Envoy's prefix and other lines included.
    log = tmp_path / "envoy.log"
    log.write_text(envoy.logs())
    report = json.loads(discover(str(log), "--json"))
    got = [(e["method"], e["template"], e["count"]) for e in report["endpoints"]]
    assert got == [("GET", "/v2/users/{id}", 3), ("GET", "/v2/users/{id}/orders", 1)]
    users = report["endpoints"][0]
    assert sorted(users["examples"]) == ["/v2/users/123", "/v2/users/42", "/v2/users/456"]
    assert users["first_seen"] <= users["last_seen"]
    assert users["route"] == {"name": "get-v2-users-id", "path": "/v2/users/{id}", "methods": ["GET"],
                              "providers": ["CHANGE-ME"]}
    assert report["broken_lines"] == 0
    text = discover(str(log))
    assert text.startswith("4 requests outside the policy, 2 endpoints"), text
    assert "CHANGE-ME" in text

    # With a policy that since gained the orders route: drafts name its providers.
    policy = json.loads(json.dumps(POLICY))
    policy["routes"].append({"name": "orders", "path": "/v2/users/{id}/orders", "providers": ["corp"]})
    policy_file = tmp_path / "policy.json"
    policy_file.write_text(json.dumps(policy))
    report = json.loads(discover(str(log), "--policy", str(policy_file), "--json"))
    assert [(e["template"], e["count"]) for e in report["endpoints"]] == [("/v2/users/{id}", 3)]
    assert report["already_matched"] == 1
    assert report["endpoints"][0]["route"]["providers"] == ["corp"]
