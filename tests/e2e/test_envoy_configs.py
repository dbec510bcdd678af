"""Every Envoy config in envoy/ is accepted by `envoy --mode validate` with every policy in
policies/ (which also makes the plugin load and compile the policy), and the demo keeps its
documented contract."""
import glob
import json
import os
import subprocess
import sys

import pytest

from harness import ROOT, WASM, Envoy, render, validate

# envoy/docker-compose.yaml is no Envoy config: tests/e2e/test_packaging.py checks it and the config it renders.
TEMPLATES = sorted(t for t in glob.glob(os.path.join(ROOT, "envoy", "*.yaml")) if os.path.basename(t) != "docker-compose.yaml")
POLICIES = sorted(glob.glob(os.path.join(ROOT, "policies", "*.json")))


def test_there_is_something_to_validate():
    assert TEMPLATES and POLICIES


@pytest.mark.parametrize("template", TEMPLATES, ids=os.path.basename)
@pytest.mark.parametrize("policy", POLICIES, ids=os.path.basename)
@pytest.mark.parametrize("as_type", ["struct", "string"])
def test_envoy_validates(tmp_path, template, policy, as_type):
    with open(template) as f, open(policy) as p:
        text = render.render(f.read(), p.read(), as_type, {"WASM": WASM})
    logs = validate(tmp_path, text)
    assert "tollgate: policy loaded" in logs, logs[-3000:]


def demo_token(*args):
    script = os.path.join(ROOT, "envoy/demo/mint_token.py")
    return subprocess.run([sys.executable, script, *args], capture_output=True, text=True, check=True).stdout.strip()


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
        custom = demo_token("--sub", "bob", "--scope", "orders:write", "--ttl", "60")
        seen = envoy.get("/api/orders/7", {"authorization": f"Bearer {custom}"}).json()
        assert seen["headers"]["x-user-id"] == ["bob"] and seen["headers"]["x-user-scope"] == ["orders:write"]
        expired = demo_token("--ttl", "-3600")
        assert envoy.get("/api/orders", {"authorization": f"Bearer {expired}"}).status == 401
    finally:
        envoy.stop()
