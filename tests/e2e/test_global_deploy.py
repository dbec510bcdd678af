"""The deployments of global rate limits (envoy/README.md, "Global rate limits") stay honest.

- envoy/ratelimit/config.yaml (envoyproxy/ratelimit's configuration) has every global limit of
  policies/global.json with the policy's numbers, and a real Envoy running that policy with
  `send_limits: false` enforces the file's numbers through the stand-in service
  (tests/e2e/rls_server.py) loaded from the file.
- envoy/ratelimit/docker-compose.yaml (no Docker here) renders a config Envoy accepts, mounts files
  that exist, and agrees with itself on ports and addresses.
- envoy/istio/ratelimit.yaml carries the same service configuration, a Service Istio speaks HTTP/2
  to, and policies/global.json pointed at that Service's outbound cluster.
- envoy/native-ratelimit.yaml (Envoy's own ratelimit filter on Tollgate's identity header) limits
  per verified caller in a real Envoy.
- The code snippets of envoy/README.md, "Global rate limits", are copied from these files."""
import copy
import json
import os
import re
import subprocess
import sys
import textwrap
import time
import uuid

import pytest
import yaml

from harness import ROOT, WASM, Envoy, render, validate
from tokens import mint_demo
from rls_server import RateLimitServer, RedisServer, Unit

POLICY = os.path.join(ROOT, "policies/global.json")
RLS_CONFIG = os.path.join(ROOT, "envoy/ratelimit/config.yaml")
NATIVE_CONFIG = os.path.join(ROOT, "envoy/ratelimit/native-config.yaml")
NATIVE_TEMPLATE = os.path.join(ROOT, "envoy/native-ratelimit.yaml")
COMPOSE = os.path.join(ROOT, "envoy/ratelimit/docker-compose.yaml")
ISTIO = os.path.join(ROOT, "envoy/istio/ratelimit.yaml")
WASMPLUGIN = os.path.join(ROOT, "envoy/istio/wasmplugin.yaml")
ENVOY_README = os.path.join(ROOT, "envoy/README.md")

PER_UNIT = {"second": "second", "minute": "minute", "hour": "hour", "day": "day"}


def read(path):
    with open(path) as f:
        return f.read()


def load_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)


def policy():
    """policies/global.json as the deployments carry it: without `$schema`, which is for editors
    (`tollgate render` leaves it out too)."""
    with open(POLICY) as f:
        p = json.load(f)
    p.pop("$schema", None)
    return p


def global_limits(p):
    return {name: limit for name, limit in p["rate_limits"].items()
            if limit.get("backend", "local") in ("global", "local+global")}


def entry_key(part):
    """The descriptor entry key Tollgate sends for a key part (policies/README.md, "Global limits")."""
    if isinstance(part, str):
        return part  # identity, client_ip, route
    [(kind, value)] = part.items()
    return {"claim": f"claim.{value}", "header": f"header.{str(value).lower()}", "constant": "constant"}[kind]


def configured_limit(config, entries):
    """The `rate_limit` of the node an exact walk of (key, value-or-None) entries reaches, or None."""
    nodes, node = config.get("descriptors") or [], None
    for key, value in entries:
        matches = [d for d in nodes if d["key"] == key and d.get("value") == value]
        if value is not None and not matches:
            matches = [d for d in nodes if d["key"] == key and d.get("value") is None]
        if len(matches) != 1:
            return None
        node = matches[0]
        nodes = node.get("descriptors") or []
    return node.get("rate_limit") if node else None


# --- envoy/ratelimit/config.yaml against policies/global.json -------------------------------------

def test_service_config_has_every_global_limit_with_the_policys_numbers():
    p, config = policy(), load_yaml(RLS_CONFIG)
    assert config["domain"] == p["rate_limit_service"]["domain"]
    limits = global_limits(p)
    assert limits, "policies/global.json has no global limit"
    for name, limit in limits.items():
        entries = [("tollgate_limit", name)] + [(entry_key(part), None) for part in limit["key"]]
        found = configured_limit(config, entries)
        assert found == {"unit": PER_UNIT[limit["per"]], "requests_per_unit": limit["rate"]}, (name, found)


def test_service_config_names_no_other_limit():
    config = load_yaml(RLS_CONFIG)
    named = [d.get("value") for d in config["descriptors"]]
    assert all(d["key"] == "tollgate_limit" for d in config["descriptors"])
    assert sorted(named) == sorted(global_limits(policy()))


def test_native_service_config_matches_the_native_template():
    config = load_yaml(NATIVE_CONFIG)
    envoy_config = yaml.safe_load(render.render(read(NATIVE_TEMPLATE), "{}", "string", {"WASM": WASM}))
    hcm = envoy_config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    [rl] = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ratelimit"]
    assert config["domain"] == rl["typed_config"]["domain"]
    [action] = hcm["route_config"]["virtual_hosts"][0]["rate_limits"][0]["actions"]
    assert configured_limit(config, [(action["request_headers"]["descriptor_key"], "jwt:demo:x")])


# --- policies/global.json in a real Envoy, numbers from envoy/ratelimit/config.yaml ---------------

@pytest.fixture(scope="module")
def redis_server():
    r = RedisServer()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def file_rls(redis_server):
    s = RateLimitServer(redis_server.port, load_yaml(RLS_CONFIG))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def global_envoy(upstream, file_rls):
    p = policy()
    p["rate_limit_service"]["send_limits"] = False
    e = Envoy(p, upstream.port, as_type="struct", rls_port=file_rls.port)
    try:
        yield e.wait_ready()
    finally:
        e.stop()


def demo_token(sub):
    return mint_demo(sub, "", 600)


def wait_for_window_start(seconds, slack=0.1):
    """Sleeps until just after the start of a fixed window of `seconds`."""
    time.sleep(seconds - time.time() % seconds + 0.01)
    assert time.time() % seconds < slack


def test_per_client_refuses_past_the_files_rate(global_envoy, file_rls, redis_server):
    p = policy()
    limit = p["rate_limits"]["per-client"]
    rate = load_yaml(RLS_CONFIG)
    rate = configured_limit(rate, [("tollgate_limit", "per-client"), ("client_ip", None)])["requests_per_unit"]
    assert limit["per"] == "second"
    for attempt in range(5):
        wait_for_window_start(1)
        before = file_rls.calls
        start = time.time()
        statuses = [global_envoy.get("/catalog/items").status for _ in range(rate + 1)]
        end = time.time()
        windows = int(end) - int(start) + 1
        # At most the rate per window touched, whatever the timing.
        assert statuses.count(200) <= rate * windows, statuses
        assert set(statuses) <= {200, 429}, statuses
        if windows == 1:
            break
    else:
        pytest.skip("no run of requests fitted in one one-second window")
    # Inside one window: exactly the file's rate, then 429.
    assert statuses == [200] * rate + [429], statuses
    assert file_rls.calls - before == rate + 1
    # Counted under the file's limit (the stand-in counts only descriptors it finds a limit for),
    # without a limit sent by Tollgate.
    last = file_rls.requests[-1]
    assert [(e.key, e.value) for e in last.descriptors[0].entries] == [
        ("tollgate_limit", "per-client"), ("client_ip", "127.0.0.1")]
    assert last.domain == "tollgate" and last.descriptors[0].limit is None
    key = f"tollgate_tollgate_limit_per-client_client_ip_127.0.0.1_{int(start)}"
    assert int(redis_server.client.get(key)) == rate + 1


def test_orders_with_a_demo_token_is_allowed_and_counted_per_caller(global_envoy, file_rls, redis_server):
    sub = f"caller-{uuid.uuid4().hex[:8]}"
    assert global_envoy.get("/orders/1").status == 401
    r = global_envoy.get("/orders/1", {"authorization": f"Bearer {demo_token(sub)}"})
    assert r.status == 200, r.body
    descriptor = file_rls.requests[-1].descriptors[0]
    assert [(e.key, e.value) for e in descriptor.entries] == [
        ("tollgate_limit", "per-caller"), ("identity", f"jwt:demo:{sub}")]
    assert descriptor.limit is None
    # The file's per-minute limit applied: the service counted it in a one-minute window.
    [key] = redis_server.client.keys(f"tollgate_tollgate_limit_per-caller_identity_jwt:demo:{sub}_*")
    assert int(key.decode().rsplit("_", 1)[1]) % 60 == 0
    assert int(redis_server.client.get(key)) == 1


# --- envoy/ratelimit/docker-compose.yaml ----------------------------------------------------------

@pytest.fixture(scope="module")
def compose():
    return load_yaml(COMPOSE)


def mounts(service):
    """{container path: (type, host path or volume name)} for a service's long-syntax volumes."""
    out = {}
    for v in service.get("volumes", []):
        assert isinstance(v, dict), f"use the long volume syntax: {v!r}"
        source = v["source"]
        if v["type"] == "bind":
            source = os.path.normpath(os.path.join(os.path.dirname(COMPOSE), source))
        out[v["target"]] = (v["type"], source)
    return out


def host_path(service, container_path):
    best = max((t for t in mounts(service) if container_path == t or container_path.startswith(t + "/")),
               key=len, default=None)
    assert best is not None, f"{container_path} is not mounted into the container"
    kind, source = mounts(service)[best]
    rest = os.path.relpath(container_path, best)
    if kind == "bind":
        return ("bind", os.path.normpath(os.path.join(source, rest)))
    return ("volume", source, rest)


def render_step(compose):
    svc = compose["services"]["render"]
    cmd = svc["command"]
    assert cmd[0] == "python", cmd
    script, template, policy_path, out, *options = cmd[1:]
    sets = {}
    while options:
        flag, value, *options = options
        assert flag == "--set", options
        name, _, val = value.partition("=")
        sets[name] = val
    return {"script": host_path(svc, script), "template": host_path(svc, template),
            "policy": host_path(svc, policy_path), "out": host_path(svc, out), "sets": sets}


def rendered_compose_config(compose, tmp_path):
    step = render_step(compose)
    out = tmp_path / "compose-envoy.yaml"
    subprocess.run([sys.executable, step["script"][1], step["template"][1], step["policy"][1], str(out),
                    *[a for k, v in step["sets"].items() for a in ("--set", f"{k}={v}")]], check=True)
    return out.read_text()


def cluster_address(config, name):
    [cluster] = [c for c in config["static_resources"]["clusters"] if c["name"] == name]
    address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    return address["address"], str(address["port_value"])


def test_compose_renders_global_json_with_the_services_port(compose):
    step = render_step(compose)
    assert step["script"] == ("bind", os.path.join(ROOT, "envoy/render.py"))
    assert step["template"] == ("bind", os.path.join(ROOT, "envoy/tollgate.yaml"))
    assert step["policy"] == ("bind", POLICY)
    assert set(step["sets"]) == {"WASM", "BIND_ADDRESS", "RLS_PORT"}, step["sets"]
    assert step["sets"]["BIND_ADDRESS"] == "0.0.0.0"
    env = compose["services"]["ratelimit"]["environment"]
    assert step["sets"]["RLS_PORT"] == env["GRPC_PORT"] == "8081"


def test_compose_config_is_valid_and_addresses_agree(compose, tmp_path):
    text = rendered_compose_config(compose, tmp_path)
    config = yaml.safe_load(text)
    services = compose["services"]
    # Every service but render shares Envoy's network namespace, so 127.0.0.1 is the same place.
    for name in ("echo", "redis", "ratelimit"):
        assert services[name]["network_mode"] == "service:envoy", name
    assert cluster_address(config, "ratelimit") == ("127.0.0.1", services["ratelimit"]["environment"]["GRPC_PORT"])
    redis_cmd = services["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--bind") + 1] == "127.0.0.1"
    redis_port = redis_cmd[redis_cmd.index("--port") + 1]
    assert services["ratelimit"]["environment"]["REDIS_URL"] == f"127.0.0.1:{redis_port}"
    echo_port = services["echo"]["command"][services["echo"]["command"].index("--port") + 1]
    assert cluster_address(config, "upstream") == ("127.0.0.1", echo_port)
    logs = validate(tmp_path, text.replace(json.dumps("/etc/tollgate/tollgate.wasm"), json.dumps(WASM)))
    assert "tollgate: policy loaded" in logs, logs[-3000:]


def test_compose_mounts_exist_and_ratelimit_reads_the_config(compose):
    services = compose["services"]
    for name, svc in services.items():
        for target, (kind, source) in mounts(svc).items():
            if kind == "bind" and not source.endswith("tollgate.wasm"):  # the module: `make build`
                assert os.path.exists(source), (name, target, source)
    assert host_path(services["envoy"], "/etc/tollgate/tollgate.wasm") == ("bind", WASM)
    assert all(v.get("read_only") for v in services["envoy"]["volumes"] + services["ratelimit"]["volumes"])
    rl = services["ratelimit"]
    env = rl["environment"]
    assert rl["command"] == ["/bin/ratelimit"]
    assert env["USE_STATSD"] == "false" and env["REDIS_SOCKET_TYPE"] == "tcp" and env["RUNTIME_WATCH_ROOT"] == "false"
    config_path = f"{env['RUNTIME_ROOT']}/{env['RUNTIME_SUBDIRECTORY']}/config/config.yaml"
    assert host_path(rl, config_path) == ("bind", RLS_CONFIG)
    assert rl["image"].startswith("envoyproxy/ratelimit:")
    assert rl["image"].split(":")[1] not in ("latest", "master")
    assert services["envoy"]["image"] == load_yaml(os.path.join(ROOT, "envoy/docker-compose.yaml"))["services"]["envoy"]["image"]


# --- envoy/istio/ratelimit.yaml -------------------------------------------------------------------

@pytest.fixture(scope="module")
def istio():
    docs = [d for d in yaml.safe_load_all(read(ISTIO)) if d]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def env_of(deployment):
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return container, {e["name"]: e["value"] for e in container.get("env", [])}


def test_istio_configmap_is_the_service_config(istio):
    assert istio[("ConfigMap", "ratelimit-config")]["data"]["config.yaml"] == read(RLS_CONFIG)


def test_istio_services_and_deployments_agree(istio):
    ns = {d["metadata"]["namespace"] for d in istio.values()}
    assert len(ns) == 1
    rl_svc, redis_svc = istio[("Service", "ratelimit")], istio[("Service", "redis")]
    [grpc] = rl_svc["spec"]["ports"]
    assert grpc["name"] == "grpc" and grpc["appProtocol"] == "grpc"
    container, env = env_of(istio[("Deployment", "ratelimit")])
    assert str(grpc["targetPort"]) == env["GRPC_PORT"]
    assert int(env["GRPC_PORT"]) in [p["containerPort"] for p in container["ports"]]
    [redis_port] = redis_svc["spec"]["ports"]
    assert env["REDIS_URL"] == f"{redis_svc['metadata']['name']}.{ns.pop()}.svc.cluster.local:{redis_port['port']}"
    assert env["REDIS_SOCKET_TYPE"] == "tcp" and env["USE_STATSD"] == "false"
    # The ConfigMap volume, with its `..data` entries ignored, where the service reads its config.
    assert env["RUNTIME_IGNOREDOTFILES"] == "true" and env["RUNTIME_WATCH_ROOT"] == "false"
    [mount] = container["volumeMounts"]
    assert mount["mountPath"] == f"{env['RUNTIME_ROOT']}/{env['RUNTIME_SUBDIRECTORY']}/config"
    [volume] = istio[("Deployment", "ratelimit")]["spec"]["template"]["spec"]["volumes"]
    assert volume["name"] == mount["name"] and volume["configMap"]["name"] == "ratelimit-config"
    assert "config.yaml" in istio[("ConfigMap", "ratelimit-config")]["data"]
    for svc, deployment in ((rl_svc, "ratelimit"), (redis_svc, "redis")):
        labels = istio[("Deployment", deployment)]["spec"]["template"]["metadata"]["labels"]
        assert svc["spec"]["selector"].items() <= labels.items()
    assert container["image"].split(":")[-1] not in ("latest", "master")


def outbound_cluster(istio):
    svc = istio[("Service", "ratelimit")]
    [grpc] = svc["spec"]["ports"]
    return f"outbound|{grpc['port']}||{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc.cluster.local"


def test_istio_wasmplugin_is_global_json_on_the_outbound_cluster(istio):
    plugin = istio[("WasmPlugin", "tollgate")]
    config = copy.deepcopy(plugin["spec"]["pluginConfig"])
    assert config["rate_limit_service"]["cluster"] == outbound_cluster(istio)
    config["rate_limit_service"]["cluster"] = policy()["rate_limit_service"]["cluster"]
    assert config == policy()
    # Otherwise the WasmPlugin of wasmplugin.yaml, which it replaces.
    theirs = load_yaml(WASMPLUGIN)
    assert plugin["metadata"] == theirs["metadata"]
    assert {k: v for k, v in plugin["spec"].items() if k != "pluginConfig"} == \
        {k: v for k, v in theirs["spec"].items() if k != "pluginConfig"}


def test_istio_wasmplugin_policy_loads(istio, tmp_path):
    # As Istio delivers it (JSON text), with envoy/tollgate.yaml's `ratelimit` cluster renamed to the
    # outbound cluster the policy names.
    text = render.render(read(os.path.join(ROOT, "envoy/tollgate.yaml")),
                         json.dumps(istio[("WasmPlugin", "tollgate")]["spec"]["pluginConfig"]), "string", {"WASM": WASM})
    config = yaml.safe_load(text)
    [cluster] = [c for c in config["static_resources"]["clusters"] if c["name"] == "ratelimit"]
    cluster["name"] = cluster["load_assignment"]["cluster_name"] = outbound_cluster(istio)
    logs = validate(tmp_path, json.dumps(config))
    assert "tollgate: policy loaded" in logs, logs[-3000:]


# --- envoy/native-ratelimit.yaml: Envoy's ratelimit filter on Tollgate's identity -----------------

@pytest.fixture(scope="module")
def native_rls(redis_server):
    s = RateLimitServer(redis_server.port, load_yaml(NATIVE_CONFIG))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def native_envoy(upstream, native_rls):
    with open(os.path.join(ROOT, "policies/demo.json")) as f:
        demo = json.load(f)
    assert "rate_limit_service" not in demo
    e = Envoy(demo, upstream.port, as_type="struct", template=NATIVE_TEMPLATE, rls_port=native_rls.port)
    try:
        yield e.wait_ready()
    finally:
        e.stop()


def identities(rls):
    return [e.value for r in rls.requests for d in r.descriptors for e in d.entries]


def test_native_filter_limits_each_verified_caller(native_envoy, native_rls):
    config = load_yaml(NATIVE_CONFIG)
    limit = configured_limit(config, [("identity", "jwt:demo:x")])
    assert Unit[limit["unit"].upper()] == Unit.MINUTE
    budget = limit["requests_per_unit"]
    # Keep the budget's requests inside one minute window.
    if time.time() % 60 > 50:
        wait_for_window_start(60, slack=5)
    a_sub, b_sub = f"a-{uuid.uuid4().hex[:8]}", f"b-{uuid.uuid4().hex[:8]}"
    a = {"authorization": f"Bearer {demo_token(a_sub)}"}
    b = {"authorization": f"Bearer {demo_token(b_sub)}"}
    forged = f"jwt:demo:{b_sub}-forged"
    native_rls.reset_counts()
    for i in range(budget):
        # One of A's requests carries a forged identity header: it still counts against A.
        headers = {**a, "x-tollgate-principal": forged} if i == 1 else a
        r = native_envoy.get("/api/orders", headers)
        assert r.status == 200, (i, r.status, r.body)
        assert r.json()["headers"]["x-tollgate-principal"] == [f"jwt:demo:{a_sub}"]
    over = native_envoy.get("/api/orders", a)
    assert over.status == 429
    assert over.header("x-envoy-ratelimited") == "true"  # Envoy's filter, not Tollgate
    assert over.header("content-type") == "application/problem+json"
    assert over.json()["title"] == "Too Many Requests"
    assert over.header("retry-after") is None and over.header("ratelimit") is None
    assert native_envoy.get("/api/orders", b).status == 200
    seen = identities(native_rls)
    assert seen == [f"jwt:demo:{a_sub}"] * (budget + 1) + [f"jwt:demo:{b_sub}"]
    assert forged not in seen
    assert all(r.domain == "tollgate-native" for r in native_rls.requests)


def test_native_filter_is_not_asked_for_refused_or_public_requests(native_envoy, native_rls):
    before = native_rls.calls
    r = native_envoy.get("/api/orders", {"x-tollgate-principal": "jwt:demo:someone"})
    assert r.status == 401
    assert r.json()["type"].startswith("urn:tollgate:problem:")
    # A public route: Tollgate removes the client's copy and sets none, so no descriptor is sent.
    r = native_envoy.get("/health", {"x-tollgate-principal": "jwt:demo:someone"})
    assert r.status == 200
    assert native_rls.calls == before



def test_native_filter_fails_closed(native_envoy, native_rls):
    token = {"authorization": f"Bearer {demo_token(f'c-{uuid.uuid4().hex[:8]}')}"}
    native_rls.set_mode("unavailable")
    try:
        r = native_envoy.get("/api/orders", token)
    finally:
        native_rls.set_mode("normal")
    # `failure_mode_deny` with `status_on_error: ServiceUnavailable`.
    assert r.status == 503
    assert native_envoy.get("/api/orders", token).status == 200

# --- envoy/README.md, "Global rate limits" --------------------------------------------------------

SNIPPET_SOURCES = [RLS_CONFIG, NATIVE_CONFIG, NATIVE_TEMPLATE, COMPOSE, ISTIO]


def global_section():
    text = read(ENVOY_README)
    start = text.index("\n## Global rate limits\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def copied_from(block, path):
    want = textwrap.dedent(block).strip("\n").splitlines()
    lines = read(path).splitlines()
    for i in range(len(lines) - len(want) + 1):
        if textwrap.dedent("\n".join(lines[i:i + len(want)])).splitlines() == want:
            return True
    return False


def test_readme_snippets_are_copied_from_tested_files():
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", global_section(), re.M | re.S)
    checked = 0
    for lang, block in blocks:
        if lang == "text":  # `tollgate render envoy` output, abridged (the existing cluster text)
            continue
        if lang == "sh":  # commands from the header of the compose file
            comments = [l.lstrip("#").strip() for p in SNIPPET_SOURCES for l in read(p).splitlines()
                        if l.startswith("#")]
            for line in block.strip().splitlines():
                assert line.strip() in comments, line
            checked += 1
            continue
        assert any(copied_from(block, p) for p in SNIPPET_SOURCES), f"not copied from {SNIPPET_SOURCES}:\n{block}"
        checked += 1
    assert checked >= 3
