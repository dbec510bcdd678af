"""Workload identity and TLS requirements in a real Envoy with mutual TLS on loopback: the mesh
example (envoy/mesh.yaml with policies/mesh.json), certificates made at test time by
envoy/tools/mesh_certs.py (a mesh CA, workloads of two trust domains, an expired certificate, one
from another CA). The `mesh` listener requires a client certificate, the `edge` listener only
requests one; a third Envoy serves the same policy in plaintext."""
import http.client
import json
import os
import ssl
import sys
import time

import jwt
import pytest

from harness import ROOT, Envoy, free_port

sys.path.insert(0, os.path.join(ROOT, "envoy", "tools"))
sys.path.insert(0, os.path.join(ROOT, "envoy", "demo"))
import mesh_certs  # noqa: E402
from tokens import DEMO_AUDIENCE as AUDIENCE, DEMO_ISSUER as ISSUER, DEMO_KID as KID  # noqa: E402

MESH = os.path.join(ROOT, "envoy/mesh.yaml")
with open(os.path.join(ROOT, "envoy/demo/demo-signing-key.pem"), "rb") as f:
    DEMO_KEY = f.read()
with open(os.path.join(ROOT, "policies/mesh.json")) as f:
    POLICY = json.load(f)


def token(scope="orders:read"):
    now = int(time.time())
    return jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "scope": scope, "iat": now, "exp": now + 600},
                      DEMO_KEY, algorithm="ES256", headers={"kid": KID})


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    out = tmp_path_factory.mktemp("mesh-certs")
    clients = mesh_certs.write_all(str(out))
    return {"dir": str(out), "ca": str(out / "ca.pem"), **clients}


@pytest.fixture(scope="module")
def mesh(upstream, certs):
    edge = free_port()
    e = Envoy(POLICY, upstream.port, template=MESH, values={
        "TLS_CERT": os.path.join(certs["dir"], "server.pem"),
        "TLS_KEY": os.path.join(certs["dir"], "server.key"),
        "TLS_CA": certs["ca"],
        "EDGE_PORT": edge,
    }).wait_ready()
    e.edge_port = edge
    yield e
    e.stop()


class Answer:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def code(self):
        return None if self.status == 200 else json.loads(self.body)["type"].rsplit(":", 1)[1]

    def upstream_headers(self):
        """The request headers the echo upstream received (the one value of each)."""
        out = {}
        for k, v in json.loads(self.body)["headers"].items():
            values = v if isinstance(v, list) else [v]
            assert len(values) == 1, f"{k}: {values}"
            out[k.lower()] = values[0]
        return out


def call(port, certs, path, client=None, headers=None, max_version=None):
    """GET `path` over TLS to 127.0.0.1:`port`, trusting the mesh CA, presenting `client`'s
    certificate when named."""
    ctx = ssl.create_default_context(cafile=certs["ca"])
    if client:
        ctx.load_cert_chain(*certs[client])
    if max_version:
        ctx.maximum_version = max_version
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return Answer(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    finally:
        conn.close()


def bearer(scope="orders:read"):
    return {"authorization": f"Bearer {token(scope)}"}


# --- workload + end user on one route ---------------------------------------------------------

def test_frontend_with_a_user_token_reaches_the_upstream_with_both_identities(mesh, certs):
    r = call(mesh.port, certs, "/orders/7", "frontend", bearer())
    assert r.status == 200, r.body
    seen = r.upstream_headers()
    assert seen["x-tollgate-principal"] == "jwt:demo:alice"
    assert seen["x-tollgate-peer"] == "mtls:spiffe://prod.example/ns/web/sa/frontend"


def test_frontend_without_a_user_token_is_refused(mesh, certs):
    r = call(mesh.port, certs, "/orders/7", "frontend")
    assert (r.status, r.code()) == (401, "token_missing")


def test_a_user_token_from_another_trust_domain_is_refused(mesh, certs):
    r = call(mesh.port, certs, "/orders/7", "staging", bearer())
    assert (r.status, r.code()) == (403, "peer_not_allowed")
    assert r.headers["content-type"] == "application/problem+json"


def test_the_wrong_scope_is_refused_even_from_the_right_workload(mesh, certs):
    r = call(mesh.port, certs, "/orders/7", "frontend", bearer("profile"))
    assert (r.status, r.code()) == (403, "insufficient_scope")


# --- workload only -----------------------------------------------------------------------------

def test_the_ops_workload_needs_no_token_and_is_the_principal(mesh, certs):
    r = call(mesh.port, certs, "/internal/metrics", "ops")
    assert r.status == 200, r.body
    seen = r.upstream_headers()
    assert seen["x-tollgate-principal"] == "mtls:spiffe://prod.example/ns/ops/sa/prometheus"
    assert seen["x-tollgate-peer"] == "mtls:spiffe://prod.example/ns/ops/sa/prometheus"


def test_another_namespace_is_refused(mesh, certs):
    r = call(mesh.port, certs, "/internal/metrics", "frontend")
    assert (r.status, r.code()) == (403, "peer_not_allowed")


# --- the listener that only requests a certificate -----------------------------------------------

def test_no_certificate_on_the_edge_listener_is_refused_where_one_is_needed(mesh, certs):
    r = call(mesh.edge_port, certs, "/orders/7", None, bearer())
    assert (r.status, r.code()) == (403, "client_certificate_required")
    # A route that needs only TLS lets it through; nothing names a peer.
    r = call(mesh.edge_port, certs, "/health")
    assert r.status == 200
    assert "x-tollgate-peer" not in r.upstream_headers()


def test_the_same_certificate_counts_on_the_edge_listener(mesh, certs):
    r = call(mesh.edge_port, certs, "/orders/7", "frontend", bearer())
    assert r.status == 200, r.body


@pytest.mark.parametrize("client", ["expired", "rogue"])
def test_invalid_certificates_never_reach_tollgate(mesh, certs, client):
    # Envoy ends the handshake (on both listeners): Tollgate sees a validated certificate or none.
    for port in (mesh.port, mesh.edge_port):
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
            call(port, certs, "/orders/7", client, bearer())


def test_the_mesh_listener_requires_a_certificate(mesh, certs):
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        call(mesh.port, certs, "/health")


# --- forged headers ------------------------------------------------------------------------------

def test_a_forged_client_cert_header_grants_nothing(mesh, certs):
    forged = {
        "x-forwarded-client-cert": "By=spiffe://prod.example/ns/api/sa/orders;URI=spiffe://prod.example/ns/web/sa/frontend",
        "x-tollgate-peer": "mtls:spiffe://prod.example/ns/web/sa/frontend",
        "x-tollgate-principal": "mtls:spiffe://prod.example/ns/ops/sa/prometheus",
    }
    r = call(mesh.edge_port, certs, "/orders/7", None, {**bearer(), **forged})
    assert (r.status, r.code()) == (403, "client_certificate_required")
    r = call(mesh.edge_port, certs, "/internal/metrics", None, forged)
    assert (r.status, r.code()) == (403, "client_certificate_required")
    # With a real certificate, the forged copies are replaced by what the connection says.
    r = call(mesh.port, certs, "/orders/7", "frontend", {**bearer(), **forged})
    assert r.status == 200, r.body
    seen = r.upstream_headers()
    assert seen["x-tollgate-peer"] == "mtls:spiffe://prod.example/ns/web/sa/frontend"
    assert seen["x-tollgate-principal"] == "jwt:demo:alice"
    assert "x-forwarded-client-cert" not in seen


# --- TLS versions and plaintext --------------------------------------------------------------------

def test_admin_requires_tls_13(mesh, certs):
    admin = bearer("admin")
    r = call(mesh.port, certs, "/admin/users", "frontend", admin, max_version=ssl.TLSVersion.TLSv1_2)
    assert (r.status, r.code()) == (403, "tls_version_too_old")
    r = call(mesh.port, certs, "/admin/users", "frontend", admin)
    assert r.status == 200, r.body


def test_plaintext_is_refused(upstream):
    e = Envoy(POLICY, upstream.port).wait_ready()
    try:
        r = e.get("/health")
        assert r.status == 403 and r.json()["type"] == "urn:tollgate:problem:tls_required"
        r = e.get("/internal/metrics")
        assert r.status == 403 and r.json()["type"] == "urn:tollgate:problem:tls_required"
    finally:
        e.stop()


# --- behind a front proxy that forwards the client certificate ---------------------------------

INGRESS = "spiffe://prod.example/ns/edge/sa/ingress"


def front_proxy(certs, backend_port):
    """An Envoy without Tollgate that terminates the client's mutual TLS, describes the client in
    x-forwarded-client-cert (SANITIZE_SET: whatever the client sent is replaced) and connects to
    `backend_port` with the `ingress` workload's certificate."""
    def build(e):
        tls = {"tls_certificates": [{"certificate_chain": {"filename": os.path.join(certs["dir"], "server.pem")},
                                     "private_key": {"filename": os.path.join(certs["dir"], "server.key")}}],
               "validation_context": {"trusted_ca": {"filename": certs["ca"]}}}
        client = {"tls_certificates": [{"certificate_chain": {"filename": certs["ingress"][0]},
                                        "private_key": {"filename": certs["ingress"][1]}}],
                  "validation_context": {"trusted_ca": {"filename": certs["ca"]}}}
        return {
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": e.admin}}},
            "static_resources": {
                "listeners": [{
                    "name": "front",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": e.port}},
                    "filter_chains": [{
                        "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                            "require_client_certificate": True, "common_tls_context": tls}},
                        "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": "front",
                            "forward_client_cert_details": "SANITIZE_SET",
                            "set_current_client_cert_details": {"uri": True, "dns": True, "subject": True},
                            "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                                {"match": {"prefix": "/"}, "route": {"cluster": "backend"}}]}]},
                            "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
                        }}],
                    }],
                }],
                "clusters": [{
                    "name": "backend", "connect_timeout": "1s", "type": "STATIC",
                    "load_assignment": {"cluster_name": "backend", "endpoints": [{"lb_endpoints": [{"endpoint": {
                        "address": {"socket_address": {"address": "127.0.0.1", "port_value": backend_port}}}}]}]},
                    "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                        "sni": "localhost", "common_tls_context": client}},
                }],
            },
        }
    return build


@pytest.fixture(scope="module")
def behind_front(upstream, certs):
    """The mesh example with `forwarded_client_cert` trusting the ingress workload, its connection
    manager forwarding the header it gets (FORWARD_ONLY), and a front proxy before it."""
    policy = {**POLICY, "forwarded_client_cert": {"from": {"principals": [INGRESS]}}}
    with open(MESH) as f:
        template = f.read().replace("forward_client_cert_details: SANITIZE", "forward_client_cert_details: FORWARD_ONLY")
    assert "FORWARD_ONLY" in template
    path = os.path.join(certs["dir"], "mesh-forward.yaml")
    with open(path, "w") as f:
        f.write(template)
    backend = Envoy(policy, upstream.port, template=path, values={
        "TLS_CERT": os.path.join(certs["dir"], "server.pem"),
        "TLS_KEY": os.path.join(certs["dir"], "server.key"),
        "TLS_CA": certs["ca"],
        "EDGE_PORT": free_port(),
    }).wait_ready()
    front = Envoy.from_bootstrap(front_proxy(certs, backend.port), upstream.port).wait_ready()
    yield front, backend
    front.stop()
    backend.stop()


def test_the_trusted_front_proxy_names_the_caller(behind_front, certs):
    front, _ = behind_front
    r = call(front.port, certs, "/orders/7", "frontend", bearer())
    assert r.status == 200, r.body
    seen = r.upstream_headers()
    assert seen["x-tollgate-peer"] == "mtls:spiffe://prod.example/ns/web/sa/frontend"
    assert "URI=spiffe://prod.example/ns/web/sa/frontend" in seen["x-forwarded-client-cert"]
    r = call(front.port, certs, "/orders/7", "staging", bearer())
    assert (r.status, r.code()) == (403, "peer_not_allowed")
    r = call(front.port, certs, "/internal/metrics", "ops")
    assert r.status == 200, r.body
    assert r.upstream_headers()["x-tollgate-principal"] == "mtls:spiffe://prod.example/ns/ops/sa/prometheus"


def test_a_client_forging_the_header_is_not_believed(behind_front, certs):
    _, backend = behind_front
    forged = {"x-forwarded-client-cert": "By=spiffe://prod.example/ns/api/sa/orders;URI=spiffe://prod.example/ns/ops/sa/prometheus"}
    # Straight to the backend: the frontend is not a trusted hop, so it is itself.
    r = call(backend.port, certs, "/internal/metrics", "frontend", forged)
    assert (r.status, r.code()) == (403, "peer_not_allowed")
    # Through the front proxy, which replaces what the client sent (SANITIZE_SET).
    front, _ = behind_front
    r = call(front.port, certs, "/internal/metrics", "frontend", forged)
    assert (r.status, r.code()) == (403, "peer_not_allowed")
