"""Real-world OpenAPI documents that no one here wrote (tests/openapi/README.md: pinned npm
packages, fetched by `make openapi-docs`) through `tollgate import openapi`, `tollgate check`
and the real Envoy: the classic Petstore as OpenAPI 3.0 (JSON) and 3.1 (YAML), a 3.1 document
with every kind of security scheme, Scalar's galaxy example, Blockfrost's API (129 operations)
and GitHub's REST API (1,223 operations). Each imports (what it cannot enforce reported),
passes `check`, loads into Envoy, and answers: a request that follows the document passes; an
unknown route, a missing required parameter, a value or body of the wrong type and a token
without the operation's scopes are refused with their codes. The overlay of each document names
the test issuer for its JWT schemes and a test API key for its apiKey schemes."""
import hashlib
import json
import os
import subprocess
import time

import pytest
import yaml

from harness import ROOT, TEMPLATE, Envoy, Upstream
from test_cli_parity import cli_binary
from tokens import AUDIENCE, ISSUER, mint, public_jwk

CACHE = os.path.join(ROOT, "tests/openapi/.cache")
API_KEY = "test-api-key-0123456789"


def document(name):
    path = os.path.join(CACHE, name)
    if not os.path.exists(path):
        # `make test-e2e` fetches them first (make openapi-docs); a bare pytest run fetches here.
        subprocess.run(["python3", os.path.join(ROOT, "tests/openapi/fetch.py")], check=True,
                       capture_output=True, timeout=600)
    return path


def overlay_for(path, tmp_path):
    """The test issuer for every JWT scheme of the document, the test key for its API keys."""
    with open(path) as f:
        doc = json.load(f) if path.endswith(".json") else yaml.safe_load(f)
    providers, keys = {}, False
    for name, s in ((doc.get("components") or {}).get("securitySchemes") or {}).items():
        kind = s.get("type")
        if kind in ("oauth2", "openIdConnect") or (kind == "http" and s.get("scheme", "").lower() == "bearer"):
            providers[name] = {"issuer": ISSUER, "audiences": [AUDIENCE], "algorithms": ["RS256"],
                               "jwks": {"keys": [public_jwk("rsa-1")]}}
        keys |= kind == "apiKey"
    overlay = {"policy": {"providers": providers}}
    if keys:
        overlay["policy"]["api_keys"] = {"keys": [{"id": "tester", "sha256": hashlib.sha256(API_KEY.encode()).hexdigest()}]}
    out = tmp_path / "overlay.json"
    out.write_text(json.dumps(overlay))
    return str(out)


def imported(name, tmp_path):
    """(policy path, stderr, seconds): the import of a cached document with its overlay."""
    path = document(name)
    policy = tmp_path / "policy.json"
    start = time.monotonic()
    run = subprocess.run([cli_binary(), "import", "openapi", path, "--overlay", overlay_for(path, tmp_path),
                          "-o", str(policy)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    took = time.monotonic() - start
    assert run.returncode == 0, run.stderr[-3000:]
    check = subprocess.run([cli_binary(), "check", str(policy)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert check.returncode == 0, check.stdout[-3000:]
    return policy, run.stderr, took


@pytest.fixture(scope="module")
def upstream():
    u = Upstream()
    yield u
    u.stop()


def problem(r):
    try:
        return r.json().get("type", "").rsplit(":", 1)[-1]
    except ValueError:
        return None


def bearer(scope):
    return {"authorization": f"Bearer {mint(scope=scope)}"}


def send(envoy, method, path, headers=None, body=None):
    h = dict(headers or {})
    data = None
    if body is not None:
        h["content-type"] = "application/json"
        data = json.dumps(body).encode()
    return envoy.get(path, method=method, headers=h, body=data)


# (document, [(what, method, path, credentials, body, status, problem code)]); credentials: a
# scope string for a token, "key" for the API key, None for nothing.
PETSTORE = [
    ("follows the document", "GET", "/v2/pet/findByStatus?status=available", "write:pets read:pets", None, 200, None),
    ("unknown route", "GET", "/v2/cats", "write:pets read:pets", None, 404, "route_not_found"),
    ("missing required query parameter", "GET", "/v2/pet/findByStatus", "write:pets read:pets", None, 400, "request_invalid"),
    ("value outside the enum", "GET", "/v2/pet/findByStatus?status=lost", "write:pets read:pets", None, 400, "request_invalid"),
    ("missing scope", "GET", "/v2/pet/findByStatus?status=available", "read:pets", None, 403, "insufficient_scope"),
    ("body of the wrong type", "POST", "/v2/pet", "write:pets read:pets", {"name": 5, "photoUrls": []}, 400, "request_invalid"),
    ("a body that follows the schema", "POST", "/v2/pet", "write:pets read:pets", {"name": "rex", "photoUrls": ["u"]}, 200, None),
    ("API key route with the key", "GET", "/v2/pet/7", "key", None, 200, None),
    ("API key route without it", "GET", "/v2/pet/7", None, None, 401, None),
    ("path parameter of the wrong type", "GET", "/v2/pet/seven", "key", None, 400, "request_invalid"),
]
CASES = {
    "petstore-3.0.json": PETSTORE,
    "petstore-3.1.yaml": [c for c in PETSTORE if c[0] != "a body that follows the schema"],
    "security-3.1.json": [
        ("bearer JWT", "POST", "/anything/bearer", "", None, 200, None),
        ("oauth2 scope missing", "POST", "/anything/oauth2", "", None, 403, "insufficient_scope"),
        ("oauth2 scope held", "POST", "/anything/oauth2", "write:things", None, 200, None),
        ("API key in the query", "GET", "/anything/apiKey?apiKey=" + API_KEY, None, None, 200, None),
        ("API key in a cookie only: left out, refused", "POST", "/anything/apiKey", None, None, 404, "route_not_found"),
        ("basic auth only: left out, refused", "POST", "/anything/basic", "", None, 404, "route_not_found"),
    ],
    "scalar-galaxy.yaml": [
        ("public operation", "GET", "/planets", None, None, 200, None),
        ("scope required by the operation", "GET", "/me", "", None, 403, "insufficient_scope"),
        ("scope held", "GET", "/me", "read:account", None, 200, None),
        ("unknown route", "GET", "/stars", None, None, 404, "route_not_found"),
    ],
    "blockfrost.yaml": [
        ("API key header", "GET", "/api/v0/blocks/latest", "project_id", None, 200, None),
        ("no key", "GET", "/api/v0/blocks/latest", None, None, 401, None),
        ("query value of the wrong type", "GET", "/api/v0/blocks/latest/txs?count=many", "project_id", None, 400, "request_invalid"),
        ("unknown route", "GET", "/api/v0/stars", "project_id", None, 404, "route_not_found"),
    ],
    "github.json": [
        ("follows the document", "GET", "/repos/octo/hello/issues?state=open&per_page=10", None, None, 200, None),
        ("value outside the enum", "GET", "/repos/octo/hello/issues?state=lost", None, None, 400, "request_invalid"),
        ("missing required query parameter", "GET", "/search/issues", None, None, 400, "request_invalid"),
        ("body of the wrong type", "POST", "/user/repos", None, {"name": 5}, 400, "request_invalid"),
        ("a body that follows the schema", "POST", "/user/repos", None, {"name": "hello"}, 200, None),
        ("unknown route", "GET", "/definitely/not/github", None, None, 404, "route_not_found"),
    ],
}
KEY_HEADERS = {"petstore-3.0.json": "api_key", "petstore-3.1.yaml": "api_key", "blockfrost.yaml": "project_id"}


def underscores_allowed(tmp_path):
    """envoy/tollgate.yaml with header names with underscores allowed: the Petstore's `api_key`
    and Blockfrost's `project_id` headers have one, which the recommended settings refuse (the
    import reports it; test_underscore_key_headers_need_the_listener_to_allow_them)."""
    with open(TEMPLATE) as f:
        text = f.read()
    assert "headers_with_underscores_action: REJECT_REQUEST" in text
    out = tmp_path / "tollgate-underscores.yaml"
    out.write_text(text.replace("headers_with_underscores_action: REJECT_REQUEST", "headers_with_underscores_action: ALLOW"))
    return str(out)


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_real_document_imports_and_answers_as_it_says(name, tmp_path, upstream):
    policy, notes, took = imported(name, tmp_path)
    template = underscores_allowed(tmp_path) if name in KEY_HEADERS else TEMPLATE
    envoy = Envoy(policy.read_text(), upstream.port, concurrency=1, template=template)
    try:
        started = time.monotonic()
        envoy.wait_ready(timeout=300)
        ready = time.monotonic() - started
        print(f"{name}: import {took:.2f} s, Envoy ready {ready:.2f} s, {len(notes.splitlines())} notes")
        for what, method, path, cred, body, status, code in CASES[name]:
            headers = {}
            if cred == "key" or cred == "project_id":
                headers[KEY_HEADERS[name]] = API_KEY
            elif cred is not None:
                headers.update(bearer(cred))
            r = send(envoy, method, path, headers, body)
            assert r.status == status, (name, what, r.status, r.body[:500])
            if code:
                assert problem(r) == code, (name, what, r.body[:500])
    finally:
        envoy.stop()


def test_what_cannot_be_enforced_is_reported_with_its_place(tmp_path):
    _, notes, _ = imported("security-3.1.json", tmp_path)
    assert "security-3.1.json#/components/securitySchemes/basic: not enforced: HTTP `basic`" in notes, notes
    assert "#/paths/~1anything~1basic/post/security: not enforced: no requirement can be met" in notes, notes
    run = subprocess.run([cli_binary(), "import", "openapi", document("security-3.1.json"), "--overlay",
                          overlay_for(document("security-3.1.json"), tmp_path), "--strict"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1 and not run.stdout


def test_a_document_without_paths_is_refused_clearly(tmp_path):
    run = subprocess.run([cli_binary(), "import", "openapi", document("webhooks-3.1.json")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1
    assert "the document has no paths" in run.stderr and "at least one route is required" in run.stderr, run.stderr


def test_underscore_key_headers_need_the_listener_to_allow_them(tmp_path, upstream):
    policy, notes, _ = imported("blockfrost.yaml", tmp_path)
    assert "header `project_id` has an underscore" in notes, notes
    envoy = Envoy(policy.read_text(), upstream.port, concurrency=1)
    try:
        envoy.wait_ready(timeout=300)
        r = send(envoy, "GET", "/api/v0/blocks/latest", {"project_id": API_KEY})
        assert r.status == 400 and problem(r) != "request_invalid", r.body
    finally:
        envoy.stop()
