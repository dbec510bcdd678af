"""Every Envoy config in envoy/ is accepted by `envoy --mode validate` with every policy in
policies/ (which also makes the plugin load and compile the policy), and the demo keeps its
documented contract."""
import datetime
import glob
import hashlib
import json
import os
import subprocess
import sys

import pytest

from harness import ROOT, WASM, Envoy, render, validate

# envoy/docker-compose.yaml is no Envoy config: tests/e2e/test_packaging.py checks it and the config it renders.
TEMPLATES = sorted(t for t in glob.glob(os.path.join(ROOT, "envoy", "*.yaml")) if os.path.basename(t) != "docker-compose.yaml")
# tollgate-policy.schema.json is the policy format's JSON Schema, not a policy.
POLICIES = sorted(p for p in glob.glob(os.path.join(ROOT, "policies", "*.json")) if not p.endswith(".schema.json"))


def test_there_is_something_to_validate():
    assert TEMPLATES and POLICIES


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """The certificates envoy/mesh.yaml names (Envoy validates that they load)."""
    sys.path.insert(0, os.path.join(ROOT, "envoy", "tools"))
    import mesh_certs
    out = tmp_path_factory.mktemp("mesh-certs")
    mesh_certs.write_all(str(out))
    return {"TLS_CERT": str(out / "server.pem"), "TLS_KEY": str(out / "server.key"), "TLS_CA": str(out / "ca.pem")}


@pytest.mark.parametrize("template", TEMPLATES, ids=os.path.basename)
@pytest.mark.parametrize("policy", POLICIES, ids=os.path.basename)
@pytest.mark.parametrize("as_type", ["struct", "string"])
def test_envoy_validates(tmp_path, template, policy, as_type, certificates):
    with open(template) as f, open(policy) as p:
        text = render.render(f.read(), p.read(), as_type, {"WASM": WASM, **certificates})
    logs = validate(tmp_path, text)
    assert "tollgate: policy loaded" in logs, logs[-3000:]


# The connection-manager settings Tollgate relies on (envoy/README.md, "Envoy settings Tollgate
# relies on").
SECURE_HCM = {
    "use_remote_address": True,
    "xff_num_trusted_hops": 0,
    "normalize_path": True,
    "merge_slashes": True,
    "path_with_escaped_slashes_action": "REJECT_REQUEST",
}


@pytest.mark.parametrize("template", TEMPLATES, ids=os.path.basename)
def test_templates_are_secure_by_default(template):
    import yaml
    with open(template) as f:
        text = render.render(f.read(), "{}", "string", {"WASM": WASM})
    config = yaml.safe_load(text)
    managers = [f["typed_config"] for listener in config["static_resources"]["listeners"]
                for chain in listener["filter_chains"] for f in chain["filters"]
                if f["name"] == "envoy.filters.network.http_connection_manager"]
    assert managers
    for hcm in managers:
        for key, want in SECURE_HCM.items():
            assert hcm.get(key) == want, (key, hcm.get(key))
        assert hcm["common_http_protocol_options"]["headers_with_underscores_action"] == "REJECT_REQUEST"
        wasm = next(f for f in hcm["http_filters"] if f["name"] == "tollgate")["typed_config"]["config"]
        assert wasm["allow_on_headers_stop_iteration"] is True
        assert wasm["failure_policy"] in ("FAIL_CLOSED", "FAIL_RELOAD")


def make(*args):
    """`make -s ARGS` in the repository, as the README runs it; its output without the newline."""
    out = subprocess.run(["make", "-s", "--no-print-directory", *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip()


def demo_token(*args):
    return make("token", *args)


def test_demo_contract(upstream):
    with open(os.path.join(ROOT, "policies/demo.json")) as f:
        policy = json.load(f)
    envoy = Envoy(policy, upstream.port, as_type="struct").wait_ready()
    try:
        assert envoy.get("/health").status == 200
        assert envoy.get("/api/orders").status == 401
        seen = envoy.get("/api/orders", {"authorization": f"Bearer {demo_token()}"})
        assert seen.status == 200, seen.body
        assert seen.json()["headers"]["x-user-id"] == ["demo-user"]
        custom = demo_token("SUB=bob", "SCOPE=orders:write", "TTL=60")
        seen = envoy.get("/api/orders/7", {"authorization": f"Bearer {custom}"}).json()
        assert seen["headers"]["x-user-id"] == ["bob"] and seen["headers"]["x-user-scope"] == ["orders:write"]
        expired = demo_token("TTL=-120")  # beyond the 60 s clock skew, as the README says
        refused = envoy.get("/api/orders", {"authorization": f"Bearer {expired}"})
        assert refused.status == 401 and refused.json()["type"] == "urn:tollgate:problem:token_expired", refused.body
    finally:
        envoy.stop()


def test_make_api_key_prints_a_key_and_its_policy_line():
    """`make api-key` (the tollgate CLI's `api-key`): the key, and the policy line holding its hash."""
    out = make("api-key", "ID=reporting", "SCOPES=orders:read orders:write", "DAYS=90").splitlines()
    assert [l.split(":", 1)[0] for l in out] == ["key", "policy line"], out
    key = out[0].split(":", 1)[1].strip()
    line = json.loads(out[1].split(":", 1)[1])
    assert key.startswith("tgk_") and len(key) == 4 + 43
    assert line["id"] == "reporting" and line["scopes"] == ["orders:read", "orders:write"]
    assert line["sha256"] == hashlib.sha256(key.encode()).hexdigest()
    expires = datetime.datetime.strptime(line["expires"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    days = (expires - datetime.datetime.now(datetime.timezone.utc)).total_seconds() / 86400
    assert 89.9 < days <= 90
    forever = json.loads(make("api-key", "ID=x", "DAYS=0").splitlines()[1].split(":", 1)[1])
    assert "expires" not in forever and forever["scopes"] == []
