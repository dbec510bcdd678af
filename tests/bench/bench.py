#!/usr/bin/env python3
"""`make bench`: Tollgate against no filter and Envoy's native filter chain, in the same Envoy.

Every variant is one Envoy (`--concurrency 1`) on loopback in front of the same upstream (another
Envoy answering with `direct_response`, so the upstream is never the bottleneck), sent the same
request: `POST /orders` with a bearer token and a small JSON body. Load comes from separate
processes (`wrk` for throughput, a constant-rate client for latency). Variants are measured
interleaved (A B C ... A B C ...) for several rounds, so machine noise hits all of them alike, and
the median round is reported.

Figures per variant:
- requests per second at a fixed number of connections (wrk);
- p50/p99 latency at a fixed request rate well below saturation (open-loop client: latency counts
  from the moment a request was due, so a stall is not hidden);
- Envoy CPU time per request: user+system time of the Envoy process (from /proc) divided by the
  requests it completed - the steadiest figure on a shared machine.
Plus the module size, VM start/configure time of a 100-route policy and memory per worker VM.

    tests/bench/bench.py [--rounds 3] [--duration 10] [--out tests/bench/results.md]
                         [--only floor,tollgate-jwt,...] [--baseline OLD.wasm]

`--baseline OLD.wasm` adds the variants `baseline-jwt` and `baseline-full-rs256`: another module
(an earlier build of Tollgate, say) with the policies of `tollgate-jwt` and `tollgate-full-rs256`,
measured in the same interleaved rounds. The report then gives the ratio of each Tollgate variant
to its baseline, and Tollgate's own cost per request in both (the variant less
`wasm-sdk-callbacks`, over the floor). The policies must be ones the older module accepts.

The test keys in tests/fixtures/keys are TEST-ONLY material.
"""
import argparse
import datetime
import itertools
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
sys.path.insert(0, os.path.join(ROOT, "envoy"))
sys.path.insert(0, HERE)
import render  # noqa: E402
import calls  # noqa: E402
import curves  # noqa: E402
import trap_module  # noqa: E402
from harness import WASM, envoy_binary, free_port, stop_process  # noqa: E402
from tokens import AUDIENCE, ISSUER, mint, public_jwk  # noqa: E402

# --baseline: each Tollgate variant that has a counterpart with the other module.
BASELINE_PAIRS = [("tollgate-jwt", "baseline-jwt"), ("tollgate-full-rs256", "baseline-full-rs256")]

PROBE_WASM = os.path.join(ROOT, "target/stage-probe/wasm32-wasip1/release/tollgate.wasm")
STAGES = [
    (1, "callbacks only: Envoy enters the VM, Tollgate returns at once"),
    (2, "+ request headers and clock read"),
    (3, "+ audit record started, the engine's decision"),
    (4, "+ decision carried out on the request (headers, counters)"),
    (5, "+ response headers read (security headers not added)"),
]
BODY = json.dumps({"item": "book-1234", "quantity": 2}).encode()
SCHEMA = {
    "type": "object",
    "required": ["item", "quantity"],
    "additionalProperties": False,
    "properties": {
        "item": {"type": "string", "maxLength": 64},
        "quantity": {"type": "integer", "minimum": 1, "maximum": 100},
    },
}
SCOPE = "orders:read orders:write"
HIGH = 1_000_000  # rate limit that never triggers


# --- configurations -------------------------------------------------------------------------

def tollgate_policy(full: bool, audit_all: bool = False, builtin: bool = False) -> dict:
    route = {"name": "orders-create", "path": "/orders", "methods": ["POST"], "providers": ["corp"]}
    policy = {
        "providers": {"corp": {"issuer": ISSUER, "audiences": [AUDIENCE], "algorithms": ["RS256", "ES256"],
                               "jwks": {"keys": [public_jwk("rsa-1"), public_jwk("ec256")]}}},
        "routes": [route],
        # The audit log writes one line per request at `info` by default; the comparison is
        # with filters that log nothing per request, so allowed requests are sampled at 1%.
        "audit": {"sample_allowed": 1.0 if audit_all else 0.01},
    }
    if builtin:
        policy["signature_verification"] = "builtin"
    if full:
        route["scopes"] = {"all": ["orders:write"]}
        route["limits"] = ["per-client"]
        route["request"] = {"body": SCHEMA}
        policy["rate_limits"] = {"per-client": {"rate": HIGH, "per": "second", "burst": HIGH, "key": ["identity"]}}
    return policy


def limited_policy(backend: str) -> dict:
    """JWT only plus one limit per caller that never triggers, counted `backend`: the cost of a
    local bucket against a call to the rate-limit service."""
    policy = tollgate_policy(False)
    policy["routes"][0]["limits"] = ["per-caller"]
    policy["rate_limits"] = {"per-caller": {"rate": HIGH, "per": "second", "burst": HIGH, "key": ["identity"],
                                            "backend": backend}}
    if backend != "local":
        policy["rate_limit_service"] = {"cluster": "ratelimit", "domain": "bench", "timeout_ms": 1000}
    return policy


def many_routes_policy(routes=100, keys=10) -> dict:
    """For VM start/configure time: 100 routes with scopes, limits and body schemas, 10 keys."""
    jwks = [public_jwk("rsa-1"), public_jwk("rsa-2"), public_jwk("ec256"), public_jwk("ec384"), public_jwk("ed25519")]
    more = []
    for i in range(keys - len(jwks)):
        k = dict(public_jwk("rsa-1"))
        k["kid"] = f"rsa-1-copy-{i}"
        more.append(k)
    return {
        "providers": {"corp": {"issuer": ISSUER, "audiences": [AUDIENCE],
                               "algorithms": ["RS256", "ES256", "ES384", "EdDSA"], "jwks": {"keys": jwks + more}}},
        "rate_limits": {"per-client": {"rate": 100, "per": "second", "burst": 200, "key": ["identity"]}},
        "routes": [{"name": f"r{i}", "path": f"/api/v1/resource{i}/{{id}}", "methods": ["GET", "POST"],
                    "providers": ["corp"], "scopes": {"all": [f"res{i}:read"]}, "limits": ["per-client"],
                    "request": {"body": SCHEMA}} for i in range(routes)],
    }


def native_global_filters():
    """jwt_authn (cached) + Envoy's own `ratelimit` filter asking the same rate-limit service about
    one descriptor per request: what a `global` limit costs without Tollgate."""
    jwt = native_filters(True)[0]
    return [jwt, {"name": "envoy.filters.http.ratelimit", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
        "domain": "bench-native",
        "failure_mode_deny": True,
        "timeout": "1s",
        "rate_limit_service": {"grpc_service": {"envoy_grpc": {"cluster_name": "ratelimit"}},
                               "transport_api_version": "V3"},
    }}]


# The descriptor Envoy's `ratelimit` filter sends (`native-global-limit`): one per request, counted
# by the service like Tollgate's.
NATIVE_RATE_LIMITS = [{"actions": [{"generic_key": {"descriptor_value": "all"}}]}]
RLS_CONFIG = [
    {"domain": "bench", "descriptors": []},
    {"domain": "bench-native", "descriptors": [
        {"key": "generic_key", "value": "all", "rate_limit": {"unit": "second", "requests_per_unit": HIGH}}]},
]


def listener(port, filters):
    return {
        "name": "api",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "api",
                "normalize_path": True,
                "merge_slashes": True,
                "route_config": {"virtual_hosts": [{"name": "api", "domains": ["*"],
                                                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}],
                                                    "rate_limits": NATIVE_RATE_LIMITS}]},
                "http_filters": filters + [{"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
            },
        }]}],
    }


def cluster(name, port, http2=False):
    c = {
        "name": name, "connect_timeout": "1s", "type": "STATIC",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]},
    }
    if http2:
        c["typed_extension_protocol_options"] = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}}
    return c


def bootstrap(port, admin, upstream_port, filters, rls_port=None):
    clusters = [cluster("upstream", upstream_port)]
    if rls_port:
        # The rate-limit service of `global` limits (gRPC: HTTP/2).
        clusters.append(cluster("ratelimit", rls_port, http2=True))
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {"listeners": [listener(port, filters)], "clusters": clusters},
    }


def wasm_filter(path, policy):
    config = {
        "name": "tollgate",
        "vm_config": {"vm_id": "tollgate", "runtime": "envoy.wasm.runtime.v8", "code": {"local": {"filename": path}}},
        "failure_policy": "FAIL_CLOSED",
        "allow_on_headers_stop_iteration": True,
    }
    if policy is not None:
        config["configuration"] = {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": json.dumps(policy)}
    return {"name": "tollgate", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                                                 "config": config}}


def native_filters(cache: bool):
    """What a user would otherwise configure: jwt_authn (same keys) + rbac on the scope + local_ratelimit."""
    provider = {
        "issuer": ISSUER,
        "audiences": [AUDIENCE],
        "local_jwks": {"inline_string": json.dumps({"keys": [public_jwk("rsa-1"), public_jwk("ec256")]})},
        "payload_in_metadata": "jwt_payload",
    }
    if cache:
        provider["jwt_cache_config"] = {"jwt_cache_size": 1024}
    percent = {"default_value": {"numerator": 100, "denominator": "HUNDRED"}, "runtime_key": "rl"}
    return [
        {"name": "envoy.filters.http.jwt_authn", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {"corp": provider},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "corp"}}],
        }},
        {"name": "envoy.filters.http.rbac", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {"action": "ALLOW", "policies": {"orders-write": {
                "permissions": [{"and_rules": {"rules": [
                    {"header": {"name": ":method", "string_match": {"exact": "POST"}}},
                    {"url_path": {"path": {"exact": "/orders"}}},
                ]}}],
                "principals": [{"metadata": {
                    "filter": "envoy.filters.http.jwt_authn",
                    "path": [{"key": "jwt_payload"}, {"key": "scope"}],
                    "value": {"string_match": {"contains": "orders:write"}},
                }}],
            }}},
        }},
        {"name": "envoy.filters.http.local_ratelimit", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
            "stat_prefix": "local_rate_limit",
            "token_bucket": {"max_tokens": HIGH, "tokens_per_fill": HIGH, "fill_interval": "1s"},
            "filter_enabled": percent,
            "filter_enforced": percent,
        }},
    ]


# --- processes ------------------------------------------------------------------------------

class Proxy:
    def __init__(self, name, config, workdir, concurrency=1, log_level="warn"):
        self.name = name
        self.admin = config["admin"]["address"]["socket_address"]["port_value"]
        listeners = config["static_resources"]["listeners"]
        self.port = listeners[0]["address"]["socket_address"]["port_value"] if listeners else None
        self.config_path = os.path.join(workdir, f"{name}.json")
        with open(self.config_path, "w") as f:
            json.dump(config, f)
        self.log_path = os.path.join(workdir, f"{name}.log")
        self.log = open(self.log_path, "w")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [envoy_binary(), "-c", self.config_path, "--concurrency", str(concurrency), "--log-level", log_level,
             "--disable-hot-restart"],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.ready_after = None

    def wait_ready(self, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name}: envoy exited:\n{open(self.log_path).read()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/ready", timeout=1) as r:
                    if r.status == 200:
                        self.ready_after = time.monotonic() - self.started
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name}: not ready")

    def cpu_seconds(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def completed(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/stats?filter=^http.api.downstream_rq_completed$") as r:
            text = r.read().decode()
        m = re.search(r"downstream_rq_completed: (\d+)", text)
        return int(m.group(1)) if m else 0

    def _stat(self, name):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/stats?filter=^{name}$") as r:
            m = re.search(r": (\d+)", r.read().decode())
        return int(m.group(1)) if m else 0

    def upstream_connections(self):
        return self._stat("cluster.upstream.upstream_cx_total")

    def upstream_requests(self):
        return self._stat("cluster.upstream.upstream_rq_total")

    def stop(self):
        stop_process(self.proc, self.log)


def upstream_config(port, admin):
    # The buffer filter reads the whole request before the direct response: an Envoy that answers
    # before the body has arrived closes the connection, and every variant would then pay for a
    # new upstream connection per request.
    cfg = bootstrap(port, admin, 1, [{"name": "envoy.filters.http.buffer", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer", "max_request_bytes": 4194304}}])
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["route_config"]["virtual_hosts"][0]["routes"] = [
        {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": '{"id": 1, "status": "created"}'}}}]
    cfg["static_resources"]["clusters"] = []
    return cfg


WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '%s'
wrk.headers["content-type"] = "application/json"
wrk.headers["authorization"] = "Bearer %s"
"""


# Never-repeated tokens (`*-fresh-*` variants): wrk cycles through a file of distinct tokens, more
# than a token cache holds, so every request verifies a signature.
WRK_FRESH_SCRIPT = """
wrk.method = "POST"
wrk.body = '%s'
local tokens = {}
for line in io.lines("%s") do tokens[#tokens + 1] = line end
local i = 0
request = function()
  i = i + 1
  return wrk.format(nil, nil, {["content-type"] = "application/json",
                               ["authorization"] = "Bearer " .. tokens[(i %% #tokens) + 1]})
end
"""
FRESH_TOKENS = 6000  # > the default token cache (1024 entries, first in, first out)


def fresh_tokens(alg, workdir):
    """Distinct tokens (by `jti`), in a file for wrk; the list is also what `latency` cycles."""
    exp = int(time.time()) + 86400
    tokens = [mint(alg, scope=SCOPE, exp=exp, jti=f"fresh-{i}") for i in range(FRESH_TOKENS)]
    path = os.path.join(workdir, f"fresh-{alg}.txt")
    with open(path, "w") as f:
        f.write("\n".join(tokens) + "\n")
    return FreshTokens(tokens, path)


class FreshTokens(list):
    def __init__(self, tokens, path):
        super().__init__(tokens)
        self.path = path


def run_wrk(proxy, token, duration, connections, workdir):
    script = os.path.join(workdir, f"wrk-{proxy.name}.lua")
    with open(script, "w") as f:
        if isinstance(token, FreshTokens):
            f.write(WRK_FRESH_SCRIPT % (BODY.decode(), token.path))
        else:
            f.write(WRK_SCRIPT % (BODY.decode(), token))
    cpu0, done0 = proxy.cpu_seconds(), proxy.completed()
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "-s", script,
                          f"http://127.0.0.1:{proxy.port}/orders"], capture_output=True, text=True, check=True).stdout
    cpu1, done1 = proxy.cpu_seconds(), proxy.completed()
    if proxy.upstream_connections() > proxy.upstream_requests() // 10:
        raise RuntimeError(f"{proxy.name}: upstream connections are not reused; the figures would measure connects")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if bad or errors:
        raise RuntimeError(f"{proxy.name}: not every request succeeded:\n{out}")
    requests = max(done1 - done0, 1)
    return {"rps": rps, "cpu_us": (cpu1 - cpu0) / requests * 1e6, "requests": requests}


def latency(proxy, token, rate, duration, connections=4):
    """Open-loop client: each connection sends on a fixed schedule; latency counts from when a
    request was due, so queueing behind a slow response is measured, not hidden."""
    tokens = token if isinstance(token, FreshTokens) else [token]
    requests = [(f"POST /orders HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
                 f"authorization: Bearer {t}\r\ncontent-length: {len(BODY)}\r\n\r\n").encode() + BODY
                for t in tokens]
    sent = itertools.count()
    interval = connections / rate
    results, failures = [], []
    start = time.perf_counter() + 0.2

    def worker(offset):
        s = socket.create_connection(("127.0.0.1", proxy.port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        f = s.makefile("rb")
        due = start + offset
        end = start + duration
        while due < end:
            now = time.perf_counter()
            if due > now:
                time.sleep(due - now)
            s.sendall(requests[next(sent) % len(requests)])
            status = f.readline()
            length = 0
            while True:
                line = f.readline()
                if line in (b"\r\n", b""):
                    break
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            f.read(length)
            done = time.perf_counter()
            if b" 200 " not in status:
                failures.append(status)
            results.append(done - due)
            due += interval
        s.close()

    threads = [threading.Thread(target=worker, args=(i * interval / connections,)) for i in range(connections)]
    cpu0, done0 = proxy.cpu_seconds(), proxy.completed()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cpu1, done1 = proxy.cpu_seconds(), proxy.completed()
    if failures:
        raise RuntimeError(f"{proxy.name}: {len(failures)} requests failed: {failures[:3]}")
    results.sort()
    pick = lambda q: results[min(len(results) - 1, int(q * len(results)))] * 1e3  # noqa: E731
    # Envoy's CPU per request at this fixed rate: comparable between variants whose throughput
    # differs (a variant bounded by a service it calls).
    return {"p50_ms": pick(0.50), "p99_ms": pick(0.99), "cpu_fixed_us": (cpu1 - cpu0) / max(done1 - done0, 1) * 1e6}


# --- the run --------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--rate", type=int, default=300, help="requests/s for the latency runs")
    ap.add_argument("--latency-duration", type=int, default=5)
    ap.add_argument("--only", default="", help="comma-separated variant names")
    ap.add_argument("--out", default=os.path.join(HERE, "results.md"))
    ap.add_argument("--no-stages", action="store_true", help="skip the stage breakdown of tollgate-jwt")
    ap.add_argument("--no-extras", action="store_true",
                    help="skip start time and memory (the short run in `make test` uses it)")
    ap.add_argument("--no-curves", action="store_true", help="skip the scaling curves (tests/bench/curves.py)")
    ap.add_argument("--no-calls", action="store_true", help="skip the crossings per request (tests/bench/calls.py)")
    ap.add_argument("--calls-only", action="store_true",
                    help="only count VM entries, host calls and allocations per request (tests/bench/calls.py)")
    ap.add_argument("--curves-only", metavar="DIMENSIONS", nargs="?", const="all",
                    help="run only the scaling curves (all, or a comma-separated subset of "
                         "routes,api_keys,jwks_keys,body_bytes,limit_keys); report to --out")
    ap.add_argument("--curve-points", type=int, default=0,
                    help="only the first N points of each curve (the short run of make test)")
    ap.add_argument("--baseline", metavar="PATH",
                    help="another module (an older build): adds " + " and ".join(b for _, b in BASELINE_PAIRS) +
                    ", run with the policies of " + " and ".join(a for a, _ in BASELINE_PAIRS))
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is missing: `make bench` installs it (Debian package wrk)")
    if not os.path.exists(WASM):
        sys.exit(f"{WASM} is missing: run `make build`")
    if args.baseline:
        args.baseline = os.path.abspath(args.baseline)
        if not os.path.exists(args.baseline):
            sys.exit(f"--baseline: {args.baseline} does not exist")

    workdir = tempfile.mkdtemp(prefix="tollgate-bench-")
    if args.curves_only:
        only = None if args.curves_only == "all" else set(args.curves_only.split(","))
        up_port, up_admin = free_port(), free_port()
        upstream = Proxy("upstream", upstream_config(up_port, up_admin), workdir, concurrency=1)
        try:
            upstream.wait_ready()
            results = curves.run(sys.modules[__name__], workdir, up_port, duration=args.duration, only=only,
                                 points=args.curve_points or None)
        finally:
            upstream.stop()
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write("\n".join(["# Tollgate scaling curves", ""] + curves.report(results, os.path.dirname(os.path.abspath(args.out)), args.duration)) + "\n")
        with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
            json.dump({"curves": results}, f, indent=1)
        print(open(args.out).read())
        return
    if args.calls_only:
        if not os.path.exists(PROBE_WASM):
            sys.exit(f"{PROBE_WASM} is missing: make bench builds it")
        up_port, up_admin = free_port(), free_port()
        upstream = Proxy("upstream", upstream_config(up_port, up_admin), workdir, concurrency=1)
        try:
            upstream.wait_ready()
            rs256 = mint("RS256", scope=SCOPE, exp=int(time.time()) + 86400)
            results = calls.run(sys.modules[__name__], workdir, up_port, rs256, fresh_tokens("RS256", workdir))
        finally:
            upstream.stop()
        print("\n".join(calls.report(results)))
        return
    empty_wasm = trap_module.write(os.path.join(workdir, "minimal.wasm"))
    callbacks_wasm = trap_module.write(os.path.join(workdir, "callbacks.wasm"), all_callbacks=True)
    rs256, es256 = mint("RS256", scope=SCOPE, exp=int(time.time()) + 86400), mint("ES256", scope=SCOPE, exp=int(time.time()) + 86400)
    variants = [
        # name, filters, token, description
        ("floor", [], rs256, "no filter (router only)"),
        ("wasm-minimal", [wasm_filter(empty_wasm, None)], rs256, "minimal proxy-wasm module: reads `:path`, continues"),
        ("wasm-sdk-callbacks", [wasm_filter(callbacks_wasm, None)], rs256,
         "the minimal module, also exporting (empty) every other stream callback the Rust SDK exports"),
        ("tollgate-jwt", [wasm_filter(WASM, tollgate_policy(False))], rs256, "Tollgate, JWT only (RS256)"),
        # With --baseline: each baseline variant runs right after its Tollgate counterpart, so the
        # two see the same noise.
        ("baseline-jwt", [wasm_filter(args.baseline, tollgate_policy(False))], rs256,
         "the baseline module, JWT only (RS256)"),
        ("tollgate-full-rs256", [wasm_filter(WASM, tollgate_policy(True))], rs256,
         "Tollgate full pipeline: JWT RS256, scope, rate limit, body schema"),
        ("baseline-full-rs256", [wasm_filter(args.baseline, tollgate_policy(True))], rs256,
         "the baseline module, full pipeline (RS256)"),
        ("tollgate-full-es256", [wasm_filter(WASM, tollgate_policy(True))], es256,
         "Tollgate full pipeline: JWT ES256, scope, rate limit, body schema"),
        ("tollgate-full-audit", [wasm_filter(WASM, tollgate_policy(True, audit_all=True))], rs256,
         "Tollgate full pipeline (RS256), audit line for every request"),
        ("tollgate-local-limit", [wasm_filter(WASM, limited_policy("local"))], rs256,
         "Tollgate JWT (RS256) + a per-caller limit in this Envoy's shared data (`local`)"),
        ("tollgate-global-limit", [wasm_filter(WASM, limited_policy("global"))], rs256,
         "Tollgate JWT (RS256) + a per-caller limit in the rate-limit service (`global`; the Python "
         "stand-in on Redis)"),
        ("native-global-limit", native_global_filters(), rs256,
         "jwt_authn (jwt_cache_config) + Envoy's `ratelimit` filter asking the same rate-limit service, RS256"),
        ("native-rs256", native_filters(False), rs256, "jwt_authn + rbac + local_ratelimit, RS256, no JWT cache"),
        # Never-repeated tokens: every request verifies an RS256 signature.
        ("tollgate-fresh-rs256", [wasm_filter(WASM, tollgate_policy(True))], "fresh",
         "Tollgate full pipeline, a new RS256 token on every request (signature by Envoy's BoringSSL)"),
        ("tollgate-fresh-rs256-builtin", [wasm_filter(WASM, tollgate_policy(True, builtin=True))], "fresh",
         "the same with `signature_verification: builtin` (Tollgate's own RSA code)"),
        ("native-fresh-rs256", native_filters(False), "fresh",
         "jwt_authn + rbac + local_ratelimit, no JWT cache, a new RS256 token on every request"),
        ("native-cache-rs256", native_filters(True), rs256, "jwt_authn (jwt_cache_config) + rbac + local_ratelimit, RS256"),
        ("native-cache-es256", native_filters(True), es256, "jwt_authn (jwt_cache_config) + rbac + local_ratelimit, ES256"),
    ]
    # Where the time of `tollgate-jwt` goes: the probe build stops requests after each stage
    # (src/host/probe.rs). Throughput and CPU only.
    stages = []
    if os.path.exists(PROBE_WASM) and not args.no_stages:
        for n, what in STAGES:
            f = wasm_filter(PROBE_WASM, tollgate_policy(False))
            f["typed_config"]["config"]["name"] = f"tollgate-stage-{n}"
            stages.append((f"stage-{n}", [f], rs256, what))
    elif not args.no_stages:
        print(f"{PROBE_WASM} is missing (make bench builds it): no stage breakdown", file=sys.stderr)
    variants += stages
    baselines = {b for _, b in BASELINE_PAIRS}
    if not args.baseline:
        variants = [v for v in variants if v[0] not in baselines]
    if args.only:
        keep = set(n for n in args.only.split(",") if n)
        unknown = keep - {v[0] for v in variants}
        if unknown:
            hint = " (the baseline variants need --baseline)" if unknown & baselines else ""
            sys.exit(f"--only: unknown variant {', '.join(f'`{n}`' for n in sorted(unknown))}{hint}; expected some of "
                     f"[{', '.join(f'`{v[0]}`' for v in variants)}]")
        variants = [v for v in variants if v[0] in keep or v[0] == "floor"]

    if any(v[2] == "fresh" for v in variants):
        fresh = fresh_tokens("RS256", workdir)
        variants = [(n, f, fresh if t == "fresh" else t, d) for n, f, t, d in variants]

    up_port, up_admin = free_port(), free_port()
    upstream = Proxy("upstream", upstream_config(up_port, up_admin), workdir, concurrency=1)
    proxies = {}
    # `tollgate-global-limit` asks the test suite's stand-in rate-limit service (Python, counting
    # in Debian's redis-server): its latency and its ceiling are the stand-in's, not those of
    # envoyproxy/ratelimit or Limitador; Envoy's CPU per request is Tollgate's own.
    services = []
    rls_port = None
    try:
        if any(v[0] in ("tollgate-global-limit", "native-global-limit") for v in variants):
            from rls_server import RateLimitServer, RedisServer
            services.append(RedisServer())
            services.append(RateLimitServer(services[0].port, RLS_CONFIG))
            rls_port = services[1].port
        upstream.wait_ready()
        for name, filters, _, _ in variants:
            cfg = bootstrap(free_port(), free_port(), up_port, filters, rls_port)
            # `info`: the audit lines are written (Envoy's default level).
            proxies[name] = Proxy(name, cfg, workdir, log_level="info")
        for p in proxies.values():
            p.wait_ready()
        # Warm-up: JIT, token caches, connection pools.
        for name, _, token, _ in variants:
            run_wrk(proxies[name], token, 2, args.connections, workdir)
        rounds = {name: [] for name, *_ in variants}
        for r in range(args.rounds):
            for name, _, token, _ in variants:
                m = run_wrk(proxies[name], token, args.duration, args.connections, workdir)
                m["load1"] = os.getloadavg()[0]
                if name.startswith("stage-"):
                    m.update({"p50_ms": 0.0, "p99_ms": 0.0, "cpu_fixed_us": 0.0})
                else:
                    m.update(latency(proxies[name], token, args.rate, args.latency_duration))
                rounds[name].append(m)
                print(f"round {r + 1} {name:22} {m['rps']:9.0f} rps  {m['cpu_us']:7.1f} us/req  "
                      f"p50 {m['p50_ms']:.2f} ms  p99 {m['p99_ms']:.2f} ms", flush=True)
        extras = {"module_kib": os.path.getsize(WASM) // 1024} if args.no_extras else \
            measure_extras(args, workdir, up_port)
        if args.baseline:
            extras["baseline_module_kib"] = os.path.getsize(args.baseline) // 1024
        call_results = [] if args.no_calls or args.no_extras or not os.path.exists(PROBE_WASM) else \
            calls.run(sys.modules[__name__], workdir, up_port, rs256, fresh_tokens("RS256", workdir))
        curve_results = {} if args.no_curves or args.no_extras else curves.run(sys.modules[__name__], workdir, up_port)
    finally:
        for p in proxies.values():
            p.stop()
        upstream.stop()
        for s in reversed(services):
            s.stop()

    summary = {name: {k: statistics.median(m[k] for m in ms) for k in ("rps", "cpu_us", "p50_ms", "p99_ms", "cpu_fixed_us")}
               for name, ms in rounds.items()}
    write_report(args, variants, summary, rounds, extras, curve_results, call_results)
    json_path = os.path.splitext(args.out)[0] + ".json"
    with open(json_path, "w") as f:
        json.dump({"summary": summary, "rounds": rounds, "extras": extras, "baseline": args.baseline,
                   "curves": curve_results, "calls": call_results}, f, indent=1)
    print(open(args.out).read())


def measure_extras(args, workdir, up_port):
    """Module size, VM start/configure time of a 100-route policy, memory per worker VM."""
    extras = {"module_kib": os.path.getsize(WASM) // 1024}
    if args.baseline:
        extras["baseline_module_kib"] = os.path.getsize(args.baseline) // 1024
    policy = many_routes_policy()
    starts = {}
    for name, filters in (("floor", []), ("tollgate-100-routes", [wasm_filter(WASM, policy)]),
                          ("tollgate-1000-routes", [wasm_filter(WASM, many_routes_policy(routes=1000))])):
        times = []
        for i in range(3):
            p = Proxy(f"start-{name}-{i}", bootstrap(free_port(), free_port(), up_port, filters), workdir,
                      log_level="info")
            try:
                p.wait_ready()
                times.append(p.ready_after)
                if name != "floor" and i == 0:
                    log = open(p.log_path).read()
                    m = re.findall(r"compiled in (\d+) ms", log)
                    extras["policy_compile_ms" if name == "tollgate-100-routes" else "policy_compile_ms_1000"] = [int(x) for x in m]
            finally:
                p.stop()
        starts[name] = statistics.median(times)
    extras["start_s"] = starts
    rss = {}
    for workers in (1, 2, 4, 8):
        p = Proxy(f"mem-{workers}", bootstrap(free_port(), free_port(), up_port, [wasm_filter(WASM, policy)]), workdir,
                  concurrency=workers, log_level="warn")
        try:
            p.wait_ready()
            time.sleep(1)
            rss[workers] = p.rss_kib()
        finally:
            p.stop()
    extras["rss_kib"] = rss
    # The least-squares slope over 1, 2, 4 and 8 workers: one pair of readings is within RSS's noise.
    xs = list(rss)
    mx, my = statistics.mean(xs), statistics.mean(rss.values())
    extras["per_worker_vm_kib"] = int(sum((x - mx) * (rss[x] - my) for x in xs) / sum((x - mx) ** 2 for x in xs))
    return extras


def write_report(args, variants, summary, rounds, extras, curve_results=None, call_results=None):
    floor = summary["floor"]
    lines = []
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        model = cpu
    envoy_version = subprocess.run([envoy_binary(), "--version"], capture_output=True, text=True).stdout.strip().split("version: ")[-1]
    lines += [
        "# Tollgate benchmark",
        "",
        f"Written by `make bench` (tests/bench/bench.py) on {datetime.date.today().isoformat()}: "
        f"{model}, {os.cpu_count()} cores, Linux {platform.release()}; Envoy {envoy_version.split('/')[1] if '/' in envoy_version else envoy_version}.",
        f"Each variant: one Envoy with `--concurrency 1` in front of the same upstream (an Envoy with a "
        f"`direct_response`), `POST /orders` with a bearer token and a {len(BODY)}-byte JSON body. "
        f"{args.rounds} interleaved rounds; medians shown. Throughput: wrk, 1 thread, {args.connections} connections, "
        f"{args.duration} s. Latency: open-loop client at {args.rate} requests/s for {args.latency_duration} s. "
        "CPU: Envoy's user+system time divided by requests it completed (lower is better).",
        "",
    ]
    loads = sorted(m["load1"] for ms in rounds.values() for m in ms if "load1" in m)
    if loads:
        lines += [f"Load average (1 min) at the end of each throughput run: {loads[0]:.2f} to {loads[-1]:.2f}, "
                  f"median {statistics.median(loads):.2f}, on {os.cpu_count()} cores.", ""]
    lines += [
        "| variant | requests/s | CPU µs/request | CPU vs floor | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    stage_variants = [v for v in variants if v[0].startswith("stage-")]
    for name, _, _, desc in variants:
        if name.startswith("stage-"):
            continue
        s = summary[name]
        lines.append(f"| {desc} (`{name}`) | {s['rps']:.0f} | {s['cpu_us']:.1f} | "
                     f"{s['cpu_us'] / floor['cpu_us']:.2f}x | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} |")
    lines.append("")
    if stage_variants and "tollgate-jwt" in summary:
        lines += [
            "Where the CPU of `tollgate-jwt` goes: the same policy and request with a probe build of the module "
            "(`--features stage-probe`, src/host/probe.rs) that lets each request through after a given stage. "
            "Differences between neighbouring rows are what a stage adds (within the run's noise).",
            "",
            "| stage | CPU µs/request | added |",
            "|---|---:|---:|",
            f"| no filter (`floor`) | {floor['cpu_us']:.1f} | |",
        ]
        previous = floor["cpu_us"]
        for name, _, _, desc in stage_variants + [("tollgate-jwt", None, None, "+ security headers added: the whole request (`tollgate-jwt`)")]:
            cpu = summary[name]["cpu_us"]
            lines.append(f"| {desc} | {cpu:.1f} | {cpu - previous:+.1f} |")
            previous = cpu
        lines.append("")
    pairs = [("tollgate-full-rs256", "native-rs256"), ("tollgate-full-rs256", "native-cache-rs256"),
             ("tollgate-full-es256", "native-cache-es256"), ("tollgate-jwt", "native-cache-rs256"),
             ("tollgate-fresh-rs256", "native-fresh-rs256"), ("tollgate-fresh-rs256-builtin", "native-fresh-rs256")]
    pairs = [(a, b) for a, b in pairs if a in summary and b in summary]
    if pairs:
        lines += ["Tollgate's CPU per request against the native chain (below 1.00: Tollgate costs less):", ""]
        for a, b in pairs:
            lines.append(f"- `{a}` / `{b}`: {summary[a]['cpu_us'] / summary[b]['cpu_us']:.2f}")
        lines.append("")
    base_pairs = [(a, b) for a, b in BASELINE_PAIRS if a in summary and b in summary]
    if base_pairs:
        callbacks = summary.get("wasm-sdk-callbacks")
        lines += [
            f"This build against the baseline module `{args.baseline}` ({extras['baseline_module_kib']} KiB; "
            f"this build {extras['module_kib']} KiB), with the same policies in the same rounds. A CPU ratio below "
            "1.00: this build costs less per request (the ratio of the medians, then each round's ratio); a "
            "requests/s ratio above 1.00: this build serves more."
            + (" Own cost: CPU per request less that of `wasm-sdk-callbacks` (what Envoy pays to enter any "
               "module built on the Rust SDK), also as a share of the floor." if callbacks else ""),
            "",
            "| variant | CPU µs/request | baseline | CPU ratio | per round | requests/s ratio |"
            + (" own cost | baseline own cost |" if callbacks else ""),
            "|---|---:|---:|---:|---|---:|" + ("---:|---:|" if callbacks else ""),
        ]
        for a, b in base_pairs:
            per_round = ", ".join(f"{x['cpu_us'] / y['cpu_us']:.3f}" for x, y in zip(rounds[a], rounds[b]))
            row = (f"| `{a}` / `{b}` | {summary[a]['cpu_us']:.1f} | {summary[b]['cpu_us']:.1f} | "
                   f"{summary[a]['cpu_us'] / summary[b]['cpu_us']:.3f} | {per_round} | "
                   f"{summary[a]['rps'] / summary[b]['rps']:.3f} |")
            if callbacks:
                for n in (a, b):
                    own = summary[n]["cpu_us"] - callbacks["cpu_us"]
                    row += f" {own:.1f} µs ({own / floor['cpu_us'] * 100:.0f}%) |"
            lines.append(row)
        lines.append("")
    lines += aims(summary, extras)
    if "tollgate-jwt" in summary:
        added = summary["tollgate-jwt"]["cpu_us"] / floor["cpu_us"] - 1
        lines += [f"JWT only with a repeated token costs {added * 100:.0f}% more CPU per request than the floor.", ""]
    if "tollgate-local-limit" in summary and "tollgate-global-limit" in summary:
        local, glob = summary["tollgate-local-limit"], summary["tollgate-global-limit"]
        lines += [
            f"A `global` limit instead of a `local` one, at the latency runs' fixed {args.rate} requests/s: "
            f"{local['cpu_fixed_us']:.1f} → {glob['cpu_fixed_us']:.1f} µs of Envoy CPU per request "
            f"({glob['cpu_fixed_us'] - local['cpu_fixed_us']:+.1f} µs), p50 {local['p50_ms']:.2f} → {glob['p50_ms']:.2f} ms, "
            f"p99 {local['p99_ms']:.2f} → {glob['p99_ms']:.2f} ms: one gRPC call to the rate-limit service per request. "
            "The service here is the test suite's Python stand-in (tests/e2e/rls_server.py) on the same cores, so "
            "the throughput of that row, and the latency the service adds, are the stand-in's; the CPU is Envoy's "
            "alone (the wrk column compares it at a throughput the stand-in caps).",
            "",
        ]
        if "native-global-limit" in summary:
            native = summary["native-global-limit"]
            lines += [
                f"Envoy's own `ratelimit` filter (after `jwt_authn`) asking the same service: {native['cpu_fixed_us']:.1f} µs "
                f"of Envoy CPU per request at {args.rate} requests/s ({native['cpu_us']:.1f} µs at {native['rps']:.0f} "
                f"requests/s), p50 {native['p50_ms']:.2f} ms, p99 {native['p99_ms']:.2f} ms.",
                "",
            ]
    for name, what in (("wasm-minimal", "A proxy-wasm module that only reads `:path`"),
                       ("wasm-sdk-callbacks", "An empty module with the callbacks a Rust SDK module exports")):
        if name in summary:
            added = summary[name]["cpu_us"] / floor["cpu_us"] - 1
            lines += [f"{what} costs {added * 100:.0f}% more than the floor by itself.", ""]
    if args.no_extras:
        lines += [f"Module size: {extras['module_kib']} KiB (start time and memory not measured: --no-extras).", ""]
    else:
        lines += other_figures(extras)
    if call_results:
        lines += calls.report(call_results)
    if curve_results:
        lines += curves.report(curve_results, os.path.dirname(os.path.abspath(args.out)))
    lines += [
        "Every round:",
        "",
        "| variant | round | requests/s | CPU µs/request | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, _, _, _ in variants:
        for i, m in enumerate(rounds[name]):
            if name.startswith("stage-"):
                lines.append(f"| `{name}` | {i + 1} | {m['rps']:.0f} | {m['cpu_us']:.1f} | - | - |")
            else:
                lines.append(f"| `{name}` | {i + 1} | {m['rps']:.0f} | {m['cpu_us']:.1f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} |")
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")


def aims(summary, extras):
    """Issue 16's aims, each with this run's figure, the aim, their ratio (at most 1.00 meets it)."""
    rows = []

    def row(what, figure, aim, unit):
        if figure is None:
            return
        ratio = figure / aim
        rows.append(f"| {what} | {figure:.2f} {unit} | {aim:.2f} {unit} | {ratio:.2f} | {'yes' if ratio <= 1 else 'no'} |")

    floor = summary["floor"]["cpu_us"]
    callbacks = summary.get("wasm-sdk-callbacks", {}).get("cpu_us")
    cpu = lambda n: summary[n]["cpu_us"] if n in summary else None  # noqa: E731
    row("module size", extras.get("module_kib", 0) / 1024, 2.0, "MiB")
    start = extras.get("start_s", {})
    if "tollgate-100-routes" in start:
        row("Envoy start to ready, 100 routes, 10 keys", start["tollgate-100-routes"], 1.0, "s")
    if "tollgate-1000-routes" in start and "tollgate-100-routes" in start:
        row("start to ready, 1,000 routes (aim: 1.2 × the 100-route start)", start["tollgate-1000-routes"],
            1.2 * start["tollgate-100-routes"], "s")
    if extras.get("per_worker_vm_kib", 0) > 0:
        row("memory per further worker VM", extras["per_worker_vm_kib"] / 1024, 2.0, "MiB")
    elif "per_worker_vm_kib" in extras:
        rows.append("| memory per further worker VM | not measured: Envoy's RSS did not grow with workers "
                    "in this run (noise larger than the VMs) | 2.00 MiB | - | - |")
    if callbacks is not None:
        if cpu("tollgate-full-rs256") is not None:
            row("own cost, full pipeline ((full − sdk callbacks) / floor)", (cpu("tollgate-full-rs256") - callbacks) / floor, 0.20, "×")
        if cpu("tollgate-jwt") is not None:
            row("own cost, JWT only ((jwt − sdk callbacks) / floor)", (cpu("tollgate-jwt") - callbacks) / floor, 0.10, "×")
    if cpu("tollgate-full-rs256") is not None and cpu("native-cache-rs256") is not None:
        row("full pipeline / native chain with JWT cache", cpu("tollgate-full-rs256") / cpu("native-cache-rs256"), 1.15, "×")
    if cpu("tollgate-fresh-rs256") is not None and cpu("native-fresh-rs256") is not None:
        row("never-repeated RS256 tokens / native chain", cpu("tollgate-fresh-rs256") / cpu("native-fresh-rs256"), 1.0, "×")
    if not rows:
        return []
    return ["Aims (issue 16): this run's figure, the aim, and their ratio (at most 1.00 meets the aim).", "",
            "| aim | figure | aim | ratio | met |", "|---|---:|---:|---:|---|"] + rows + [""]


def other_figures(extras):
    return [
        "Other figures:",
        "",
        f"- module size: {extras['module_kib']} KiB"
        + (f" (baseline module: {extras['baseline_module_kib']} KiB)" if "baseline_module_kib" in extras else ""),
        f"- Envoy start to ready (`--concurrency 1`, median of 3): {extras['start_s']['floor']:.2f} s without a filter, "
        f"{extras['start_s']['tollgate-100-routes']:.2f} s with Tollgate and a policy of 100 routes (each with scopes, "
        f"a rate limit and a body schema) and 10 keys; the plugin reported compiling the policy in "
        f"{', '.join(str(x) for x in extras.get('policy_compile_ms', []))} ms (one line per VM); with 1,000 routes "
        f"{extras['start_s'].get('tollgate-1000-routes', 0):.2f} s (policy compiled in "
        f"{', '.join(str(x) for x in extras.get('policy_compile_ms_1000', []))} ms).",
        f"- memory: Envoy RSS {extras['rss_kib'][1] // 1024} MiB with 1 worker, {extras['rss_kib'][2] // 1024} MiB with 2, "
        f"{extras['rss_kib'][4] // 1024} MiB with 4, {extras['rss_kib'].get(8, 0) // 1024} MiB with 8: about "
        f"{extras['per_worker_vm_kib'] / 1024:.1f} MiB per worker VM (the least-squares slope; V8 with the compiled "
        "module, the engine and its policy).",
        "",
    ]


if __name__ == "__main__":
    main()
