"""`tollgate import openapi` end to end: the policy imported from an OpenAPI document runs in the
real Envoy and answers as the document says. The example (policies/openapi/petstore.yaml with its
overlay) is imported with the commands of policies/openapi/README.md; a request that follows the
document passes, an unknown route, a missing required parameter, a value outside its schema, a
body of the wrong type and a token without the operation's scope are refused with their codes."""
import json
import os
import subprocess

import pytest

from harness import ROOT, Envoy, Upstream
from test_cli_parity import cli_binary

SPEC = os.path.join(ROOT, "policies/openapi/petstore.yaml")
OVERLAY = os.path.join(ROOT, "policies/openapi/petstore.overlay.yaml")
DEMO_KEY = os.path.join(ROOT, "envoy/demo/demo-signing-key.pem")


def run(*args, check=True):
    out = subprocess.run([cli_binary(), *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    if check:
        assert out.returncode == 0, out.stdout + out.stderr
    return out


def demo_token(scope):
    """A token the overlay's `petstore_auth` provider accepts (the demo's issuer and key)."""
    return run("token", "--key", DEMO_KEY, "--alg", "ES256", "--kid", "demo-1",
               "--claim", "iss=https://demo.tollgate.local", "--claim", "aud=demo-api",
               "--claim", "sub=alice", "--claim", f"scope={scope}").stdout.strip()


@pytest.fixture(scope="module")
def petstore(tmp_path_factory):
    policy = tmp_path_factory.mktemp("openapi") / "petstore.json"
    run("import", "openapi", SPEC, "--overlay", OVERLAY, "-o", str(policy))
    checked = run("check", str(policy))
    assert "valid (4 routes" in checked.stdout, checked.stdout
    upstream = Upstream()
    envoy = Envoy(policy.read_text(), upstream.port)
    try:
        envoy.wait_ready()
        yield envoy, upstream
    finally:
        envoy.stop()
        upstream.stop()


def code(r):
    return r.json().get("type", "").rsplit(":", 1)[-1]


def test_requests_that_follow_the_document_pass(petstore):
    envoy, upstream = petstore
    read = {"authorization": f"Bearer {demo_token('pets:read')}"}
    assert envoy.get("/v1/health").status == 200
    r = envoy.get("/v1/pets?limit=5", headers=read)
    assert r.status == 200, r.body
    assert envoy.get("/v1/pets/7", headers=read).status == 200
    write = {"authorization": f"Bearer {demo_token('pets:write')}", "content-type": "application/json",
             "idempotency-key": "a1b2c3d4e5"}
    r = envoy.get("/v1/pets", method="POST", headers=write, body=json.dumps({"name": "rex", "tag": None}).encode())
    assert r.status == 200, r.body
    assert "/v1/pets" in upstream.paths


@pytest.mark.parametrize("what,method,path,headers,body,status,problem", [
    ("unknown route", "GET", "/v1/cats", "read", None, 404, "route_not_found"),
    ("undocumented method", "DELETE", "/v1/pets/7", "read", None, 404, "route_not_found"),
    ("no token", "GET", "/v1/pets", None, None, 401, "token_missing"),
    ("value outside its schema", "GET", "/v1/pets?limit=500", "read", None, 400, "request_invalid"),
    ("path parameter of the wrong type", "GET", "/v1/pets/abc", "read", None, 400, "request_invalid"),
    ("missing scope", "POST", "/v1/pets", "read+key", {"name": "rex"}, 403, "insufficient_scope"),
    ("missing required header", "POST", "/v1/pets", "write", {"name": "rex"}, 400, "request_invalid"),
    ("body of the wrong type", "POST", "/v1/pets", "write+key", {"name": 5}, 400, "request_invalid"),
    ("read-only property sent", "POST", "/v1/pets", "write+key", {"name": "rex", "id": 1}, 400, "request_invalid"),
])
def test_requests_outside_the_document_are_refused(petstore, what, method, path, headers, body, status, problem):
    envoy, _ = petstore
    h = {}
    if headers:
        scope = "pets:write" if headers.startswith("write") else "pets:read"
        h["authorization"] = f"Bearer {demo_token(scope)}"
        if headers.endswith("+key"):
            h["idempotency-key"] = "a1b2c3d4e5"
    data = None
    if body is not None:
        h["content-type"] = "application/json"
        data = json.dumps(body).encode()
    r = envoy.get(path, method=method, headers=h, body=data)
    assert r.status == status, (what, r.status, r.body)
    assert code(r) == problem, (what, r.body)
