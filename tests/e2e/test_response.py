"""Response checks in a real Envoy: block (generic 502), redact (fields removed, content-length
correct) and report (passed, logged, counted)."""
import json

import pytest

from harness import Envoy

USER = {"type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}, "name": {"type": "string"}}}

POLICY = {
    "schemas": {"User": USER},
    "routes": [
        {"name": m, "path": f"/{m}", "methods": ["POST"], "public": True,
         "response": {"schemas": {"200": {"$ref": "#/$defs/User"}, "4XX": {"type": "object", "required": ["type"]}},
                      "mode": m, "sensitive_fields": ["password", "ssn"]}}
        for m in ("block", "redact", "report")
    ],
}


@pytest.fixture(scope="module")
def envoy(upstream):
    e = Envoy(POLICY, upstream.port).wait_ready()
    yield e
    e.stop()


def respond(envoy, mode, body, status=200):
    data = json.dumps(body).encode()
    return envoy.get(f"/{mode}", {"content-type": "application/json", "x-echo-respond": str(status)}, method="POST", body=data)


def test_block_passes_valid_and_replaces_invalid(envoy):
    ok = respond(envoy, "block", {"id": 1, "name": "a"})
    assert ok.status == 200 and ok.json() == {"id": 1, "name": "a"}
    bad = respond(envoy, "block", {"name": 5, "internal_error": "stack trace at db.py:12"})
    assert bad.status == 502
    assert bad.json()["type"] == "urn:tollgate:problem:response_invalid"
    assert b"stack trace" not in bad.body and bad.header("x-powered-by") is None
    assert "response on route `block` breaks its schema (blocked): / required, /name type" in envoy.logs()
    assert respond(envoy, "block", {"detail": "x"}, status=404).status == 502
    assert respond(envoy, "block", {"anything": True}, status=500).status == 500, "no schema for 5XX"


def test_redact_removes_fields_and_fixes_length(envoy):
    resp = respond(envoy, "redact", {"id": 7, "name": "a", "password": "hunter2", "ssn": "123", "debug": {"sql": "select"}})
    assert resp.status == 200
    assert resp.json() == {"id": 7, "name": "a"}
    assert int(resp.header("content-length")) == len(resp.body)
    untouched = respond(envoy, "redact", {"id": 8})
    assert untouched.json() == {"id": 8}


def test_report_passes_and_counts(envoy):
    before = envoy.stats()["tollgate.response.invalid"]
    resp = respond(envoy, "report", {"name": "no id"})
    assert resp.status == 200 and resp.json() == {"name": "no id"}
    assert envoy.stats()["tollgate.response.invalid"] == before + 1
    assert "response on route `report` breaks its schema (reported): / required" in envoy.logs()
