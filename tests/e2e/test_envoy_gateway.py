"""Envoy Gateway: envoy/envoy-gateway/extensionpolicy.yaml and `tollgate render envoy-gateway`.

No Kubernetes and no Envoy Gateway run here, and no package (Debian, PyPI, npm) carries Envoy
Gateway's CRD schemas, so the manifest's fields are checked against the EnvoyExtensionPolicy spec
as listed below (gateway.envoyproxy.io/v1alpha1). What Envoy does with it is checked for real:
the Wasm filter Envoy Gateway configures from the manifest (the policy as JSON text in a
StringValue, `failOpen` as the failure policy, no `allow_on_headers_stop_iteration`) runs in a real
Envoy, with the module fetched over HTTP and checked against the `sha256` the manifest pins."""
import copy
import json
import os

import pytest
import yaml

from harness import ROOT, TEMPLATE, WASM, Envoy, render, validate
from test_cli_parity import cli_binary, tollgate
from test_packaging import ModuleServer
from tokens import mint_demo

MANIFEST = os.path.join(ROOT, "envoy/envoy-gateway/extensionpolicy.yaml")
# The command in the manifest's header that prints it.
RENDER_ARGS = ["render", "envoy-gateway", "policies/demo.json", "--namespace", "default"]

# EnvoyExtensionPolicy's fields (Envoy Gateway's api/v1alpha1): a misspelt one would be dropped or
# refused by the API server, not noticed here.
SPEC_FIELDS = {"targetRef", "targetRefs", "targetSelectors", "wasm", "extProc", "lua"}
WASM_FIELDS = {"name", "rootID", "code", "config", "failOpen", "env"}
CODE_FIELDS = {"type", "http", "image", "sha256", "pullPolicy"}


@pytest.fixture(scope="module")
def cli():
    return cli_binary()


@pytest.fixture(scope="module")
def manifest():
    with open(MANIFEST) as f:
        return yaml.safe_load(f)


def test_manifest_fields(manifest):
    assert manifest["apiVersion"] == "gateway.envoyproxy.io/v1alpha1"
    assert manifest["kind"] == "EnvoyExtensionPolicy"
    spec = manifest["spec"]
    assert set(spec) <= SPEC_FIELDS, set(spec) - SPEC_FIELDS
    for ref in spec["targetRefs"]:
        assert ref["group"] == "gateway.networking.k8s.io" and ref["kind"] in ("Gateway", "HTTPRoute") and ref["name"]
    [wasm] = spec["wasm"]
    assert set(wasm) <= WASM_FIELDS, set(wasm) - WASM_FIELDS
    code = wasm["code"]
    assert set(code) <= CODE_FIELDS, set(code) - CODE_FIELDS
    assert code["type"] == "Image" and set(code["image"]) == {"url"}
    # Envoy Gateway's image URLs have no scheme.
    assert "://" not in code["image"]["url"]
    assert wasm["failOpen"] is False
    assert isinstance(wasm["config"], dict)


def test_manifest_is_what_render_prints(manifest, cli):
    assert yaml.safe_load(tollgate(cli, *RENDER_ARGS).stdout) == manifest


def envoy_gateway_filter(wasm, code):
    """The Wasm filter Envoy Gateway makes from a manifest's `wasm` entry: envoy/tollgate.yaml's
    filter with the `config` as JSON text, `failOpen` as the failure policy, the given `code`, and
    without `allow_on_headers_stop_iteration`, which Envoy Gateway does not set."""
    config = yaml.safe_load(render.render(open(TEMPLATE).read(), "{}", "string", {"WASM": WASM}))
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    [entry] = copy.deepcopy([f for f in hcm["http_filters"] if f["name"] == "tollgate"])
    plugin = entry["typed_config"]["config"]
    plugin["configuration"] = {"@type": "type.googleapis.com/google.protobuf.StringValue",
                               "value": json.dumps(wasm["config"])}
    plugin["failure_policy"] = "FAIL_OPEN" if wasm.get("failOpen") else "FAIL_CLOSED"
    plugin.pop("allow_on_headers_stop_iteration")
    plugin["vm_config"]["code"] = code
    return entry


def bootstrap_with(entry, ports, clusters=()):
    """envoy/tollgate.yaml with its Tollgate filter replaced by `entry` and `clusters` added."""
    config = yaml.safe_load(render.render(open(TEMPLATE).read(), "{}", "string", {"WASM": WASM, **ports}))
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"] = [entry if f["name"] == "tollgate" else f for f in hcm["http_filters"]]
    config["static_resources"]["clusters"].extend(clusters)
    return config


def test_manifest_policy_loads_in_envoy(manifest, tmp_path):
    [wasm] = manifest["spec"]["wasm"]
    entry = envoy_gateway_filter(wasm, {"local": {"filename": WASM}})
    logs = validate(tmp_path, json.dumps(bootstrap_with(entry, {})))
    assert "tollgate: policy loaded" in logs, logs[-3000:]


def test_rendered_orders_policy_loads_in_envoy(cli, tmp_path):
    # A larger policy than the demo's (authorization, limits, payload checks) renders and loads too.
    doc = yaml.safe_load(tollgate(cli, "render", "envoy-gateway", "policies/orders.json",
                                  "--target-ref", "HTTPRoute/orders").stdout)
    assert doc["spec"]["targetRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "orders"}]
    with open(os.path.join(ROOT, "policies/orders.json")) as f:
        policy = json.load(f)
    assert policy.pop("$schema"), "the example names its schema; render leaves it out"
    assert doc["spec"]["wasm"][0]["config"] == policy
    entry = envoy_gateway_filter(doc["spec"]["wasm"][0], {"local": {"filename": WASM}})
    logs = validate(tmp_path, json.dumps(bootstrap_with(entry, {})))
    assert "tollgate: policy loaded" in logs, logs[-3000:]


def test_render_refuses_http_without_checksum(cli):
    out = tollgate(cli, "render", "envoy-gateway", "policies/demo.json", "--url", "https://m.example/t.wasm",
                   check=False)
    assert out.returncode == 2 and not out.stdout and "--sha256" in out.stderr


def test_rendered_http_module_is_fetched_checked_and_enforces_the_policy(cli, upstream):
    modules = ModuleServer()
    url = f"http://127.0.0.1:{modules.port}/tollgate.wasm"
    doc = yaml.safe_load(tollgate(cli, "render", "envoy-gateway", "policies/demo.json",
                                  "--url", url, "--sha256", modules.sha256).stdout)
    [wasm] = doc["spec"]["wasm"]
    assert wasm["code"] == {"type": "HTTP", "http": {"url": url}, "sha256": modules.sha256}
    # Envoy Gateway serves the module to Envoy from its own cache; here Envoy fetches it directly,
    # checked against the manifest's sha256.
    entry = envoy_gateway_filter(wasm, {"remote": {
        "http_uri": {"uri": wasm["code"]["http"]["url"], "cluster": "wasm_modules", "timeout": "10s"},
        "sha256": wasm["code"]["sha256"],
    }})
    cluster = {"name": "wasm_modules", "connect_timeout": "1s", "type": "STATIC",
               "load_assignment": {"cluster_name": "wasm_modules", "endpoints": [{"lb_endpoints": [{"endpoint": {
                   "address": {"socket_address": {"address": "127.0.0.1", "port_value": modules.port}}}}]}]}}
    envoy = Envoy.from_bootstrap(
        lambda e: bootstrap_with(entry, {"LISTEN_PORT": e.port, "ADMIN_PORT": e.admin, "UPSTREAM_PORT": upstream.port},
                                 [cluster]),
        upstream.port)
    try:
        envoy.wait_ready(120)
        assert envoy.get("/health").status == 200
        assert envoy.get("/api/orders").status == 401
        seen = envoy.get("/api/orders", {"authorization": f"Bearer {mint_demo()}"})
        assert seen.status == 200, seen.body
        assert seen.json()["headers"]["x-user-id"] == ["demo-user"]
    finally:
        envoy.stop()
        modules.stop()
