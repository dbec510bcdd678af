"""Issue 13, finding 2: the client address is the TCP peer unless Envoy is told to trust proxies.
With the shipped template (`use_remote_address: true`, `xff_num_trusted_hops: 0`) an
`X-Forwarded-For` the client writes changes neither a per-IP bucket nor an IP allow list (before
the fix both followed the header); with `xff_num_trusted_hops: 1` (one trusted load balancer,
envoy/README.md's recommended set-up) Envoy hands Tollgate the balancer's entry and Tollgate's
`trusted_hops` stays 0."""
import pytest

from harness import Envoy

POLICY = {
    "rate_limits": {"per-ip": {"rate": 1, "per": "minute", "burst": 2, "key": ["client_ip"]}},
    "routes": [
        {"name": "limited", "path": "/limited", "public": True, "limits": ["per-ip"]},
        {"name": "internal", "path": "/internal", "public": True, "ip_access": {"allow": ["10.0.0.0/8"]}},
    ],
}


def code(resp):
    return None if resp.status < 400 else resp.json()["type"].rsplit(":", 1)[1]


@pytest.fixture(scope="module")
def edge(upstream):
    e = Envoy(POLICY, upstream.port, concurrency=1).wait_ready()
    yield e
    e.stop()


@pytest.fixture(scope="module")
def behind_balancer(upstream):
    e = Envoy(POLICY, upstream.port, concurrency=1, xff_trusted_hops=1).wait_ready()
    yield e
    e.stop()


def test_forged_forwarded_for_gets_no_fresh_bucket(edge):
    for _ in range(2):
        assert edge.get("/limited").status == 200
    assert code(edge.get("/limited")) == "rate_limited"
    for forged in ("203.0.113.7", "10.9.9.9, 203.0.113.8", "::1"):
        assert code(edge.get("/limited", {"x-forwarded-for": forged})) == "rate_limited", forged


def test_forged_forwarded_for_does_not_pass_an_allow_list(edge):
    assert code(edge.get("/internal")) == "ip_denied"
    for forged in ("10.1.2.3", "203.0.113.1, 10.1.2.3"):
        assert code(edge.get("/internal", {"x-forwarded-for": forged})) == "ip_denied", forged


def test_trusted_balancer_names_the_client(behind_balancer):
    assert behind_balancer.get("/internal", {"x-forwarded-for": "10.1.2.3"}).status == 200
    # Only the balancer's entry counts: what the client wrote further left does not.
    assert code(behind_balancer.get("/internal", {"x-forwarded-for": "10.1.2.3, 192.0.2.1"})) == "ip_denied"
    for _ in range(2):
        assert behind_balancer.get("/limited", {"x-forwarded-for": "192.0.2.50"}).status == 200
    assert code(behind_balancer.get("/limited", {"x-forwarded-for": "192.0.2.50"})) == "rate_limited"
    assert behind_balancer.get("/limited", {"x-forwarded-for": "192.0.2.51"}).status == 200, "another client"
