"""`tollgate export openapi`: the document written for each example policy is valid OpenAPI 3.1
by the official schema (openapi-spec-validator, an independent implementation), and lists every
route of the policy that has a path. The byte-for-byte and fixture checks are in
tests/cli_export.rs."""
import glob
import json
import os
import subprocess

import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator

from harness import ROOT
from test_cli_parity import cli_binary

# tollgate-policy.schema.json is the policy format's JSON Schema, not a policy.
POLICIES = sorted(p for p in glob.glob(os.path.join(ROOT, "policies", "*.json")) if not p.endswith(".schema.json"))


@pytest.fixture(scope="module")
def cli():
    return cli_binary()


def export(cli, policy, tmp_path):
    out = tmp_path / "openapi.json"
    run = subprocess.run([cli, "export", "openapi", policy, "-o", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(out.read_text()), run.stderr


@pytest.mark.parametrize("policy", POLICIES, ids=os.path.basename)
def test_exported_document_is_valid_openapi_3_1(cli, policy, tmp_path):
    doc, _ = export(cli, policy, tmp_path)
    assert doc["openapi"] == "3.1.0"
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in OpenAPIV31SpecValidator(doc).iter_errors()]
    assert not errors, "\n".join(errors[:20])
    with open(policy) as f:
        routes = json.load(f)["routes"]
    named = {op.get("x-tollgate-route") for item in doc["paths"].values() for op in item.values()}
    kept = doc.get("x-tollgate-other-routes", [])
    for i, route in enumerate(routes):
        if "path" in route and route not in kept:
            assert route.get("name", f"routes[{i}]") in named, route


def test_orders_inventory(cli, tmp_path):
    doc, stderr = export(cli, os.path.join(ROOT, "policies", "orders.json"), tmp_path)
    assert doc["paths"]["/orders"]["post"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Order"}
    assert doc["components"]["securitySchemes"]["api_key"] == {"type": "apiKey", "in": "header", "name": "x-api-key"}
    assert [r["name"] for r in doc["x-tollgate-prefix-routes"]] == ["catalog", "admin"]
    assert "not exported" in stderr and "rate_limits" in stderr
