"""What clients see when the filter cannot run (envoy/README.md, "Failure modes").

Two ways to fail, each with the Envoy configs in envoy/ and Envoy 1.40:
- a policy that refuses to load (proxy_on_configure fails): in a static config Envoy does not
  start at all; delivered over xDS (ECDS or LDS) the update is rejected and Envoy keeps serving;
- a VM that traps at run time: Tollgate must never trap, so tests/e2e/trap_module.py stands in -
  a hand-written proxy-wasm module that passes requests on and executes `unreachable` on `/trap`.

Every failed request must be answered promptly (Envoy issue #38801 describes requests left hanging
after a trap in on_request_headers, fixed by Envoy PR #40166 in July 2025) and never reach the
upstream, while a second listener without the filter in the same Envoy keeps answering.
"""
import json
import os
import threading
import time

import pytest

import trap_module
from harness import ROOT, WASM, Envoy, Upstream, plain_listener_config, request, wait_until
from tokens import mint_demo as mint

FAIL_CLOSED_TEMPLATE = os.path.join(ROOT, "envoy/tollgate.yaml")
FAIL_RELOAD_TEMPLATE = os.path.join(ROOT, "envoy/tollgate-fail-reload.yaml")
# A policy Tollgate refuses to load (as in test_invalid_policy.py).
BAD_POLICY = {"routes": [{"prefix": "/", "public": True, "methdos": ["GET"]}]}
BAD_POLICY_LOG = "tollgate: invalid policy: policy `routes[0].methdos`: unknown field `methdos`"
# A refused request must be answered well within the client's patience; measured: 1-10 ms.
CLIENT_TIMEOUT = 5
PROMPT = 1.0
TRAP_LOG = "Function: proxy_on_request_headers failed: Uncaught RuntimeError: unreachable"
# Logged by Envoy's filter manager at `http:debug` for each request the Wasm filter fails.
FAIL_STREAM_LOG = "Preparing local reply with details wasm_fail_stream"
DEBUG_HTTP = ("--component-log-level", "http:debug")


def demo_policy():
    with open(os.path.join(ROOT, "policies/demo.json")) as f:
        return json.load(f)


def timed(url, **kw):
    """(response, seconds); a hang fails the test with the client timeout instead of blocking it."""
    start = time.monotonic()
    r = request(url, timeout=CLIENT_TIMEOUT, **kw)
    return r, time.monotonic() - start


def status_or_none(url):
    try:
        return request(url, timeout=CLIENT_TIMEOUT).status
    except OSError:  # no listener (yet)
        return None


def envoy_problem(r, status):
    """Envoy's own reply: with the templates' `local_reply_config`, a generic problem body (never
    anything of the request or the upstream); configs without it answer with an empty body."""
    if r.status != status:
        return False
    if r.body == b"":
        return True
    return (r.header("content-type") == "application/problem+json"
            and json.loads(r.body) == {"type": "about:blank", "status": status, "title": json.loads(r.body)["title"]})


def assert_refused_promptly(url, status, **kw):
    r, took = timed(url, **kw)
    assert envoy_problem(r, status), (r.status, r.body)
    assert took < PROMPT, f"{url} answered after {took:.3f}s"
    return r


@pytest.fixture
def echo():
    """An upstream of this test's own, so that `paths` holds exactly what this test sent through."""
    u = Upstream()
    yield u
    u.stop()


@pytest.fixture(scope="module")
def trap_wasm(tmp_path_factory):
    return trap_module.write(str(tmp_path_factory.mktemp("trap") / "trap.wasm"))


# --- a policy that refuses to load ---------------------------------------------------------------

@pytest.mark.parametrize("template", [FAIL_CLOSED_TEMPLATE, FAIL_RELOAD_TEMPLATE], ids=os.path.basename)
def test_bad_policy_in_a_static_config_stops_the_whole_envoy(echo, template):
    """on_configure failing while Envoy loads its static config is fatal whatever the
    failure_policy: Envoy exits (test_invalid_policy.py checks the messages) and no listener of
    that Envoy - not even one without the filter - ever answers. Nothing is passed on unchecked."""
    envoy = Envoy(BAD_POLICY, echo.port, template=template, plain_listener=True)
    answered = []

    def probe():  # would catch the plain listener serving at any moment before the exit
        while envoy.proc.poll() is None:
            try:
                answered.append(request(envoy.plain_url("/probe"), timeout=1).status)
            except OSError:
                time.sleep(0.02)

    prober = threading.Thread(target=probe, daemon=True)
    start = time.monotonic()
    prober.start()
    try:
        code = envoy.wait_exit(timeout=60)
        took = time.monotonic() - start
        prober.join(timeout=5)
        logs = envoy.logs()
        assert code == 1, logs[-3000:]
        assert BAD_POLICY_LOG in logs
        assert "Unable to create Wasm plugin tollgate" in logs
        assert answered == [] and echo.paths == []
        assert took < 30, f"envoy took {took:.1f}s to give up"
    finally:
        envoy.stop()


def tollgate_filter(policy, wasm=WASM):
    """The Tollgate HTTP filter of envoy/tollgate.yaml (same settings), as an xDS resource."""
    return {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        "config": {
            "name": "tollgate",
            "vm_config": {"vm_id": "tollgate", "runtime": "envoy.wasm.runtime.v8", "code": {"local": {"filename": wasm}}},
            "failure_policy": "FAIL_CLOSED",
            "allow_on_headers_stop_iteration": True,
            "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": json.dumps(policy)},
        },
    }


def api_listener(envoy, tollgate):
    """The protected listener: `tollgate` is the HTTP filter entry (inline or ECDS)."""
    listener = plain_listener_config(envoy.port, "upstream")
    listener["name"] = "api"
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["stat_prefix"] = "api"
    hcm["http_filters"].insert(0, tollgate)
    hcm["access_log"] = [{
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": os.path.join(envoy.dir, "access.log"),
            "log_format": {"text_format_source": {
                "inline_string": "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %REQ(:PATH)%\n"}},
        },
    }]
    return listener


def access_log(envoy):
    path = os.path.join(envoy.dir, "access.log")
    if not os.path.exists(path):
        return ""
    with open(path) as f:
        return f.read()


def publish(path, resources):
    """Replaces an xDS file the way Envoy's filesystem subscription expects: an atomic rename."""
    with open(path + ".tmp", "w") as f:
        json.dump({"resources": resources}, f)
    os.rename(path + ".tmp", path)


class Xds:
    """Tollgate's policy delivered to a running Envoy from a file: by ECDS (the filter's config
    alone, as Istio delivers a WasmPlugin) or by LDS (the whole protected listener)."""

    def __init__(self, kind):
        self.kind = kind

    def resources(self, envoy, policy):
        if self.kind == "ecds":
            return [{"@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
                     "name": "tollgate", "typed_config": tollgate_filter(policy)}]
        listener = api_listener(envoy, {"name": "tollgate", "typed_config": tollgate_filter(policy)})
        return [{"@type": "type.googleapis.com/envoy.config.listener.v3.Listener", **listener}]

    def start(self, policy, upstream):
        def bootstrap(envoy):
            self.path = os.path.join(envoy.dir, f"{self.kind}.json")
            publish(self.path, self.resources(envoy, policy))
            source = {"path_config_source": {"path": self.path}, "resource_api_version": "V3"}
            listeners = [plain_listener_config(envoy.plain_port, "upstream")]
            config = {
                "node": {"id": "tollgate-e2e", "cluster": "tollgate-e2e"},  # required by xDS
                "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": envoy.admin}}},
                "static_resources": {"listeners": listeners, "clusters": [{
                    "name": "upstream", "connect_timeout": "1s", "type": "STATIC",
                    "load_assignment": {"cluster_name": "upstream", "endpoints": [{"lb_endpoints": [{"endpoint": {
                        "address": {"socket_address": {"address": "127.0.0.1", "port_value": upstream.port}}}}]}]},
                }]},
            }
            if self.kind == "ecds":
                listeners.append(api_listener(envoy, {"name": "tollgate", "config_discovery": {
                    "config_source": source,
                    "type_urls": ["type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"]}}))
            else:
                config["dynamic_resources"] = {"lds_config": source}
            return config

        self.envoy = Envoy.from_bootstrap(bootstrap, upstream.port, concurrency=1, plain_listener=True)
        return self.envoy.wait_ready(timeout=60)

    def push(self, policy):
        publish(self.path, self.resources(self.envoy, policy))

    def rejected(self):
        prefix = {"ecds": "extension_config_discovery.http_filter.tollgate.",
                  "lds": "listener_manager.lds."}[self.kind]
        return self.envoy.envoy_stats(prefix).get(prefix + "update_rejected", 0)


@pytest.mark.parametrize("kind", ["ecds", "lds"])
def test_bad_policy_over_xds_is_rejected_and_nothing_passes(echo, kind):
    """Over xDS a policy that refuses to load is a rejected update, never a running filter:
    - as the first config: with ECDS the listener runs without the filter's config and answers
      500 (empty body, response flag NFCF); with LDS the listener is never added (connection
      refused). Either way promptly, the upstream sees nothing, the plain listener serves;
    - replacing a good policy: the update is rejected and the last good policy stays in force."""
    xds = Xds(kind)
    envoy = xds.start(BAD_POLICY, echo)
    try:
        assert xds.rejected() == 1
        logs = envoy.logs()
        assert BAD_POLICY_LOG in logs
        assert "Unable to create Wasm plugin tollgate" in logs
        if kind == "ecds":
            assert_refused_promptly(envoy.url("/api/orders"), 500)
            wait_until(lambda: access_log(envoy) == "500 NFCF  /api/orders\n", what="the access log")
        else:
            # Envoy 1.40 also logs "lds: listener 'api' config rejected: ..."; 1.36 logs only this line.
            assert "Error adding/updating listener(s) api: Unable to create Wasm plugin tollgate" in logs
            start = time.monotonic()
            with pytest.raises(OSError):
                request(envoy.url("/api/orders"), timeout=CLIENT_TIMEOUT)  # connection refused
            assert time.monotonic() - start < PROMPT
        assert request(envoy.plain_url("/plain")).status == 200
        assert echo.paths == ["/plain"]

        xds.push(demo_policy())
        wait_until(lambda: status_or_none(envoy.url("/api/orders")) == 401, timeout=30, what="the good policy")
        token = {"authorization": f"Bearer {mint('alice', 'orders:read', 300)}"}
        assert envoy.get("/api/orders", token).status == 200

        xds.push(BAD_POLICY)
        wait_until(lambda: xds.rejected() == 2, timeout=30, what="the second bad update to be rejected")
        assert envoy.get("/api/orders").status == 401  # the last good policy, not no policy
        assert envoy.get("/api/orders", token).status == 200
        assert echo.paths == ["/plain", "/api/orders", "/api/orders"]
    finally:
        envoy.stop()


# --- a VM that traps -----------------------------------------------------------------------------

def test_trap_module_is_a_minimal_proxy_wasm_module():
    wasm = trap_module.build()
    assert wasm[:8] == b"\0asm\x01\0\0\0" and len(wasm) < 1024
    for export in (b"proxy_abi_version_0_2_1", b"proxy_on_memory_allocate", b"proxy_on_request_headers"):
        assert export in wasm


def test_module_exporting_every_sdk_callback_passes_requests(echo, tmp_path):
    """The `wasm-sdk-callbacks` variant of `make bench`: Envoy enters the VM for each exported
    callback (bodies, response headers, log, done, delete); each is a no-op and the request and
    the upstream's answer pass unchanged."""
    wasm = trap_module.write(str(tmp_path / "callbacks.wasm"), all_callbacks=True)
    for export in (b"proxy_on_request_body", b"proxy_on_response_headers", b"proxy_on_log", b"proxy_on_delete"):
        assert export in open(wasm, "rb").read()
    envoy = Envoy("{}", echo.port, wasm=wasm, concurrency=1)
    envoy.wait_ready()
    try:
        r = envoy.get("/ok", method="POST", body=b'{"a": 1}', headers={"content-type": "application/json"})
        assert r.status == 200 and r.json()["body"] == '{"a": 1}'
        assert echo.paths == ["/ok"]
    finally:
        envoy.stop()


def test_trap_with_fail_closed_refuses_every_later_request(echo, trap_wasm):
    """envoy/tollgate.yaml (FAIL_CLOSED): the trapping request is answered 503 with a generic problem
    within milliseconds - also when its body is still on the way - and so is every later request
    on that worker: the VM stays dead until Envoy restarts. Nothing reaches the upstream."""
    envoy = Envoy("{}", echo.port, wasm=trap_wasm, concurrency=1, plain_listener=True, extra_args=DEBUG_HTTP)
    envoy.wait_ready()
    try:
        assert envoy.get("/ok").status == 200  # the VM runs and passes requests on
        assert_refused_promptly(envoy.url("/trap/upload"), 503, method="POST", body=b"x" * 65536,
                                headers={"content-type": "application/octet-stream"})
        for _ in range(3):
            assert_refused_promptly(envoy.url("/ok"), 503)
        assert request(envoy.plain_url("/plain")).status == 200
        assert echo.paths == ["/ok", "/plain"]
        logs = envoy.logs()
        assert logs.count(TRAP_LOG) == 1
        assert logs.count(FAIL_STREAM_LOG) == 4
        stats = envoy.envoy_stats("wasm.tollgate.")
        assert stats["wasm.tollgate.vm_reload_success"] == 0 and stats["wasm.tollgate.vm_reload_backoff"] == 0
    finally:
        envoy.stop()


def test_trap_kills_only_the_vm_of_its_worker(echo, trap_wasm):
    """Each worker thread runs its own VM: after one trap with two workers, new connections that
    land on the other worker still pass the filter (Linux spreads them over the workers,
    measured about half and half), the rest get 503 - and none of those reaches the upstream."""
    envoy = Envoy("{}", echo.port, wasm=trap_wasm, concurrency=2)
    envoy.wait_ready()
    try:
        assert_refused_promptly(envoy.url("/trap"), 503)
        statuses = [timed(envoy.url("/ok"))[0].status for _ in range(40)]  # a connection each
        assert set(statuses) == {200, 503}, statuses
        assert echo.paths == ["/ok"] * statuses.count(200)
    finally:
        envoy.stop()


def refused_until_served(envoy, path, deadline):
    """Requests `path` until it is served; returns (statuses, seconds until served)."""
    start, statuses = time.monotonic(), []
    while time.monotonic() - start < deadline:
        r, took = timed(envoy.url(path))
        statuses.append(r.status)
        if r.status == 200:
            return statuses, time.monotonic() - start
        assert envoy_problem(r, 503) and took < PROMPT, (r.status, r.body, took)
        time.sleep(0.05)
    raise AssertionError(f"{path} not served again within {deadline}s: {statuses}")


def test_trap_with_fail_reload_refuses_then_reloads_the_vm(echo, trap_wasm):
    """envoy/tollgate-fail-reload.yaml (FAIL_RELOAD): the trapping request gets 503 like with
    FAIL_CLOSED; later requests get 503 until 1-1.5 s (base_interval, jittered) have passed since
    the worker's VM was last loaded, then the first request builds a new VM and is served."""
    envoy = Envoy("{}", echo.port, template=FAIL_RELOAD_TEMPLATE, wasm=trap_wasm, concurrency=1,
                  plain_listener=True, extra_args=DEBUG_HTTP)
    envoy.wait_ready()
    try:
        assert envoy.get("/ok").status == 200
        assert_refused_promptly(envoy.url("/trap"), 503)
        first, _ = refused_until_served(envoy, "/ok", deadline=5)
        # The VM was reloaded just now, so this time the backoff certainly applies.
        assert_refused_promptly(envoy.url("/trap"), 503)
        second, took = refused_until_served(envoy, "/ok", deadline=5)
        assert second[0] == 503 and 0.9 < took < 2.0, (second, took)
        assert request(envoy.plain_url("/plain")).status == 200

        assert echo.paths.count("/ok") == 3 and "/trap" not in echo.paths
        refused = len(first) - 1 + len(second) - 1
        stats = envoy.envoy_stats("wasm.tollgate.")
        assert stats["wasm.tollgate.vm_reload_success"] == 2
        assert stats["wasm.tollgate.vm_reload_failure"] == 0
        assert stats["wasm.tollgate.vm_reload_backoff"] == refused
        logs = envoy.logs()
        assert logs.count(TRAP_LOG) == 2
        assert logs.count(FAIL_STREAM_LOG) == 2 + refused
    finally:
        envoy.stop()


# --- envoy/tollgate-fail-reload.yaml is tollgate.yaml with another failure policy ------------------

def significant_lines(path):
    """The config without comments and without the failure-policy settings."""
    with open(path) as f:
        lines = [line.rstrip() for line in f]
    skip = ("#", "failure_policy:", "reload_config:")
    return [line for line in lines if line.strip() and not line.strip().startswith(skip)]


def test_fail_reload_config_is_the_default_config_with_another_failure_policy():
    assert significant_lines(FAIL_RELOAD_TEMPLATE) == significant_lines(FAIL_CLOSED_TEMPLATE)
    with open(FAIL_RELOAD_TEMPLATE) as f:
        text = f.read()
    assert "failure_policy: FAIL_RELOAD\n" in text and "base_interval: 1s" in text


def test_fail_reload_config_enforces_the_policy(upstream):
    envoy = Envoy(demo_policy(), upstream.port, as_type="struct", template=FAIL_RELOAD_TEMPLATE).wait_ready()
    try:
        assert envoy.get("/health").status == 200
        assert envoy.get("/api/orders").status == 401
        seen = envoy.get("/api/orders", {"authorization": f"Bearer {mint('alice', 'orders:read', 300)}"})
        assert seen.status == 200 and seen.json()["headers"]["x-user-id"] == ["alice"]
    finally:
        envoy.stop()
