"""The command-line tool decides as the filter does, because it is the same engine: every request
case of the example policies (policies/NAME.cases.yaml) goes through `tollgate test --json` and
`tollgate explain --json`, and the very same request (same minted token, headers and body) through
a real Envoy running the built module, configured with the block `tollgate render envoy` prints.
Decision, denial code and status must agree for every case. The rate-limit service of `global`
limits is the stand-in (tests/e2e/rls_server.py), made to give each case's simulated answer
(`rate_limit_service`: ok, over_limit, timeout, unavailable, malformed). A case with a `response` (what the
upstream answers) is sent with the echo upstream's test hook (`x-echo-respond: <status>`, its
headers as `x-echo-header`, its body as the request's body, which the hook sends back); then what
the client finally gets must agree too: the status, Tollgate's problem code if it replaced the
response, and the body. Also: the rendered block passes `envoy --mode validate` in both
embeddings."""
import glob
import http.client
import json
import os
import ssl
import subprocess
import sys

import pytest

from harness import ROOT, TEMPLATE, WASM, Envoy, Upstream, free_port, render, validate
from rls_server import RateLimitServer, RedisServer

sys.path.insert(0, os.path.join(ROOT, "envoy", "tools"))
import mesh_certs  # noqa: E402

CASE_FILES = sorted(glob.glob(os.path.join(ROOT, "policies", "*.cases.yaml")))


def cli_binary():
    """The `tollgate` binary of this checkout, built (debug profile) if needed; TOLLGATE_CLI
    overrides it."""
    if os.environ.get("TOLLGATE_CLI"):
        return os.environ["TOLLGATE_CLI"]
    out = subprocess.run(
        ["cargo", "build", "--quiet", "--bin", "tollgate", "--message-format=json-render-diagnostics"],
        cwd=ROOT, capture_output=True, text=True, timeout=1800,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    for line in out.stdout.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg.get("executable") and msg["target"]["name"] == "tollgate":
            return msg["executable"]
    raise AssertionError("cargo built no `tollgate` executable")


@pytest.fixture(scope="module")
def cli():
    return cli_binary()


def tollgate(cli, *args, check=True):
    out = subprocess.run([cli, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    if check:
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def config_with_rendered_block(cli, policy, as_type, ports):
    """envoy/tollgate.yaml with its connection-manager settings and http_filters replaced by what
    `tollgate render envoy` prints; for a policy with global limits, the rate-limit service's
    cluster it prints (at RLS_PORT) replaces the template's."""
    args = ["render", "envoy", policy, "--as", as_type, "--wasm", WASM]
    if ports.get("RLS_PORT"):
        args += ["--rls-address", f"127.0.0.1:{ports['RLS_PORT']}"]
    block, _, cluster = tollgate(cli, *args).stdout.partition("\n# The rate-limit service")
    with open(TEMPLATE) as f:
        lines = f.read().splitlines()
    start = next(i for i, l in enumerate(lines) if l.strip().startswith("# -- From here to the end of http_filters"))
    end = next(i for i, l in enumerate(lines) if l.startswith("  clusters:"))
    indent = " " * (len(lines[start]) - len(lines[start].lstrip()))
    tail = lines[end:]
    if cluster:
        # The template's own `ratelimit` cluster is its last.
        cut = next(i for i, l in enumerate(tail) if l.strip().startswith("# Where `global` rate limits are counted"))
        items = cluster.split("\nclusters:\n", 1)[1]
        tail = tail[:cut] + ["  " + l if l else l for l in items.splitlines()]
    spliced = lines[:start] + [indent + l if l else l for l in block.splitlines()] + tail
    # The policy and module are already in the block; render.py fills the ports.
    return render.render("\n".join(spliced) + "\n", "{}", "string", ports)


@pytest.mark.parametrize("as_type", ["struct", "string"])
def test_rendered_envoy_block_validates(cli, tmp_path, as_type):
    policy = os.path.join(ROOT, "policies/orders.json")
    text = config_with_rendered_block(cli, policy, as_type, {})
    logs = validate(tmp_path, text)
    assert "tollgate: policy loaded" in logs, logs[-3000:]


def unexpressible(case):
    """Why the echo upstream's hook cannot give this case's upstream response, if it cannot."""
    req, resp = case["request"], case["response"]
    if resp is None:
        return None
    if req["body"] is not None and req["body"] != resp["body"]:
        return "the echo upstream answers with the request's own body, and this request has another"
    if any(name.lower() in ("content-length", "transfer-encoding") for name, _ in resp["headers"]):
        return "the echo upstream frames its body itself"
    return None


def hooked(req, resp):
    """The request Envoy gets for a case with an upstream response: the hook's headers added, and
    the response body as the request's body (the hook answers with it)."""
    if resp is None:
        return req
    headers = req["headers"] + [("x-echo-respond", str(resp["status"]))]
    headers += [("x-echo-header", f"{name}: {value}") for name, value in resp["headers"]]
    return {**req, "headers": headers, "body": resp["body"] or req["body"]}


def tls_context(authority, tls):
    """A client TLS context for a case's `tls`: the version it names, and the client certificate
    with its names, issued by the test CA."""
    ctx = ssl.create_default_context(cafile=authority.ca_path)
    version = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}[tls["version"]]
    ctx.minimum_version = ctx.maximum_version = version
    cert = tls["client_certificate"]
    if cert is not None:
        ctx.load_cert_chain(*authority.client(cert.get("uri_san"), cert.get("dns_san")))
    return ctx


def with_tls(text, authority):
    """The config with a TLS listener that requests (does not require) client certificates
    signed by the test CA."""
    socket = {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "require_client_certificate": False,
        "common_tls_context": {
            "tls_certificates": [{"certificate_chain": {"filename": authority.server[0]},
                                  "private_key": {"filename": authority.server[1]}}],
            "validation_context": {"trusted_ca": {"filename": authority.ca_path}}}}}
    anchor = "    filter_chains:\n    - filters:\n"
    assert anchor in text, "the template's listener changed"
    return text.replace(anchor, f"    filter_chains:\n    - transport_socket: {json.dumps(socket)}\n      filters:\n", 1)


def send(port, req, ctx=None):
    """The request exactly as the case file built it: raw path, repeated headers kept; over TLS
    with `ctx`."""
    conn = (http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=ctx) if ctx
            else http.client.HTTPConnection("127.0.0.1", port, timeout=10))
    try:
        # The case's own Host headers, if it has any; otherwise the authority the CLI assumes
        # (`localhost`), which signed requests cover.
        has_host = any(name.lower() == "host" for name, _ in req["headers"])
        conn.putrequest(req["method"], req["path"], skip_host=True, skip_accept_encoding=True)
        if not has_host:
            conn.putheader("host", "localhost")
        for name, value in req["headers"]:
            conn.putheader(name, value)
        body = req["body"].encode() if req["body"] is not None else None
        if body is not None:
            conn.putheader("content-length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, resp.getheader("content-type") or "", resp.read()
    finally:
        conn.close()


def envoy_decision(method, status, content_type, body):
    """What the filter decided, read from the answer: the echo upstream's 200, or a problem."""
    if status == 200:
        return {"decision": "allow", "code": None, "status": None}
    if content_type.startswith("application/problem+json"):
        return {"decision": "deny", "code": problem_code(content_type, body), "status": status}
    return {"decision": "deny", "code": None, "status": status, "raw": body[:200]}


def problem_code(content_type, body):
    """Tollgate's code in a problem body; None for any other body (`about:blank`: Envoy's own
    reply, the templates' local_reply_config, not Tollgate's)."""
    if not content_type.startswith("application/problem+json"):
        return None
    kind = json.loads(body)["type"]
    return kind.rsplit(":", 1)[1] if kind.startswith("urn:tollgate:problem:") else None


def as_data(body):
    """A body as JSON data when it is JSON (key order and spacing aside), else as text."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        return json.loads(body)
    except ValueError:
        return body


def delivered(d):
    """What the client finally gets according to the CLI: the request's refusal, or what the
    response phase delivered."""
    if d["decision"] == "deny":
        return {"status": d["status"], "code": d["code"]}
    return {"status": d["response_status"], "code": d["response_code"], "body": as_data(d["response_body"])}


def envoy_delivered(status, content_type, body, request_denied):
    seen = {"status": status, "code": problem_code(content_type, body)}
    return seen if request_denied else {**seen, "body": as_data(body)}


def explain_decision(cli, policy, req, resp=None, service="ok"):
    """`explain --json` on the request; with `resp`, the request Envoy gets (its body included)
    and the upstream's response as --response-* options."""
    args = ["explain", policy, "--json", "--request", f"{req['method']} {req['path']}",
            "--rate-limit-service", service]
    if req["tls"] is not None:
        args += ["--tls", req["tls"]["version"]]
        cert = req["tls"]["client_certificate"] or {}
        for name in ("uri_san", "dns_san", "subject"):
            if cert.get(name):
                args += [f"--peer-{name.replace('_', '-')}", cert[name]]
    for name, value in req["headers"]:
        args += ["-H", f"{name}: {value}"]
    body = resp["body"] or req["body"] if resp else req["body"]
    if body is not None:
        args += ["--data", body]
    if resp is not None:
        args += ["--response-status", str(resp["status"])]
        for name, value in resp["headers"]:
            args += ["--response-header", f"{name}: {value}"]
        if resp["body"]:
            args += ["--response-data", resp["body"]]
    d = json.loads(tollgate(cli, *args).stdout)["decision"]
    return {k: d.get(k) for k in ("decision", "code", "status", "response_status", "response_code", "response_body")}


# The stand-in's mode for each answer `tollgate test` simulates (the policies' timeouts are well
# under a second).
SERVICE_MODES = {"ok": ("normal", 0), "over_limit": ("over_limit", 0), "timeout": ("slow", 1500),
                 "unavailable": ("unavailable", 0), "malformed": ("garbage", 0)}


@pytest.fixture(scope="module")
def rls():
    redis = RedisServer()
    s = RateLimitServer(redis.port, [])
    yield s
    s.stop()
    redis.stop()


@pytest.fixture(scope="module")
def echo():
    """An echo upstream of this module's own: the cases' responses come from its test hook, so
    nothing another module left listening may answer in its place."""
    u = Upstream()
    yield u
    u.stop()


@pytest.mark.parametrize("cases", CASE_FILES, ids=os.path.basename)
def test_cli_and_envoy_decide_alike(cli, echo, rls, cases, tmp_path):
    upstream = echo
    policy = cases[: -len(".cases.yaml")] + ".json"
    report = json.loads(tollgate(cli, "test", policy, cases, "--json").stdout)
    assert report["failed"] == 0, json.dumps(report, indent=1)[:3000]
    results = report["files"][0]["cases"]
    ports = {"LISTEN_PORT": free_port(), "ADMIN_PORT": free_port(), "UPSTREAM_PORT": upstream.port, "JWKS_PORT": free_port(),
             "RLS_PORT": rls.port}
    envoy = Envoy.from_bootstrap(lambda e: config_with_rendered_block(cli, policy, "struct", {**ports, "LISTEN_PORT": e.port, "ADMIN_PORT": e.admin}),
                                 upstream.port).wait_ready()
    # Cases that arrive over TLS go to a second Envoy, the same config with a TLS listener.
    authority = mesh_certs.Authority(str(tmp_path / "ca"))
    tls_envoy = None

    def start_tls_envoy():
        return Envoy.from_bootstrap(lambda e: with_tls(config_with_rendered_block(
            cli, policy, "struct", {**ports, "LISTEN_PORT": e.port, "ADMIN_PORT": e.admin}), authority),
            upstream.port).wait_ready()

    compared, responses, skipped, mismatches = 0, 0, [], []
    try:
        for case in results:
            # Pinned clocks, repeated requests and a history (fresh buckets and baselines) have no
            # counterpart in a running Envoy, whose clock is the wall clock and whose state persists.
            if case["now_pinned"] or case["repeat"] > 1 or case.get("history", 0) > 0:
                skipped.append((case["note"], "pinned clock or repeated request"))
                continue
            req, resp = case["request"], case["response"]
            if req["tls"] is not None:
                cert = (req["tls"]["client_certificate"] or {})
                if cert.get("subject"):
                    skipped.append((case["note"], "a certificate subject as Envoy prints it"))
                    continue
                tls_envoy = tls_envoy or start_tls_envoy()
            service = case["rate_limit_service"]
            rls.set_mode(*SERVICE_MODES[service])
            why = unexpressible(case)
            if why:
                skipped.append((case["note"], why))
                continue
            if resp is not None:
                # The request phase as before, then what the client finally got.
                got = {k: case["got"][k] for k in ("decision", "code", "status")}
                explained = explain_decision(cli, policy, req, resp, service)
                if req["tls"] is not None:
                    status, content_type, body = send(tls_envoy.port, hooked(req, resp), tls_context(authority, req["tls"]))
                else:
                    status, content_type, body = send(envoy.port, hooked(req, resp))
                seen = envoy_delivered(status, content_type, body, got["decision"] == "deny")
                compared += 1
                responses += 1
                want = delivered(case["got"])
                if not (got == {k: explained[k] for k in got} and want == delivered(explained) == seen):
                    mismatches.append({"note": case["note"], "test": case["got"], "explain": explained, "envoy": seen})
                continue
            got = {k: case["got"][k] for k in ("decision", "code", "status")}
            explained = {k: v for k, v in explain_decision(cli, policy, req, service=service).items() if k in got}
            if req["tls"] is not None:
                seen = envoy_decision(req["method"], *send(tls_envoy.port, req, tls_context(authority, req["tls"])))
            else:
                seen = envoy_decision(req["method"], *send(envoy.port, req))
            compared += 1
            if seen.get("code") is None and seen["decision"] == "deny" and got["code"] == "path_invalid":
                # Envoy's own normalisation (path_with_escaped_slashes_action: REJECT_REQUEST)
                # refuses the path before the filter runs: a 400 either way.
                if seen["status"] == 400:
                    continue
            if not (got == explained == {k: seen[k] for k in ("decision", "code", "status")}):
                mismatches.append({"note": case["note"], "test": got, "explain": explained, "envoy": seen})
    finally:
        envoy.stop()
        if tls_envoy:
            tls_envoy.stop()
    print(f"{os.path.basename(cases)}: {compared} cases decided alike ({responses} with the upstream's "
          f"response); not comparable: {skipped}")
    assert not mismatches, json.dumps(mismatches, indent=1)
    assert compared == len(results) - len(skipped) and compared >= 10, (compared, skipped)
