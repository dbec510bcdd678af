"""Abuse detection in a real Envoy with two workers and the example policy
policies/detection.json: a caller walking through other people's accounts is blocked while a
normal caller on the same route is served; a request spike throttles its caller until the
throttle's period ends; `report` detectors only count and log. Every worker sees the same caller
record (shared data), so the requests may land on either worker. Memory stays bounded by the
slots with 100,000 distinct callers."""
import http.client
import json
import os
import socket
import sys
import threading
import time

import jwt
import pytest

from harness import ROOT, Envoy, wait_until

sys.path.insert(0, os.path.join(ROOT, "envoy", "demo"))
from tokens import DEMO_AUDIENCE as AUDIENCE, DEMO_ISSUER as ISSUER, DEMO_KID as KID  # noqa: E402

with open(os.path.join(ROOT, "envoy/demo/demo-signing-key.pem"), "rb") as f:
    DEMO_KEY = f.read()


def token(sub):
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 600}
    return jwt.encode(body, DEMO_KEY, algorithm="ES256", headers={"kid": KID})


def as_(sub):
    return {"authorization": f"Bearer {token(sub)}"}


def code(resp):
    if resp.status == 200:
        return None
    return resp.json()["type"].rsplit(":", 1)[1]


@pytest.fixture(scope="module")
def envoy(upstream):
    with open(os.path.join(ROOT, "policies/detection.json")) as f:
        policy = json.load(f)
    e = Envoy(policy, upstream.port, concurrency=2).wait_ready()
    yield e
    e.stop()


def test_an_object_prober_is_blocked_and_a_normal_caller_is_not(envoy):
    mallory, alice = as_("mallory"), as_("alice")
    for i in range(8):
        assert code(envoy.get(f"/accounts/user-{i}", mallory)) == "forbidden"
        assert envoy.get("/accounts/alice", alice).status == 200
    # Alice's own slip: one refusal among her good requests trips nothing.
    assert code(envoy.get("/accounts/bob", alice)) == "forbidden"
    blocked = envoy.get("/accounts/mallory", mallory)
    assert blocked.status == 403 and code(blocked) == "caller_blocked"
    assert blocked.header("content-type") == "application/problem+json"
    assert 590 <= int(blocked.header("retry-after")) <= 600
    # A new token of the same principal does not help; alice goes on being served.
    assert code(envoy.get("/feed", as_("mallory"))) == "caller_blocked"
    for _ in range(5):
        assert envoy.get("/accounts/alice", alice).status == 200
    stats = envoy.stats()
    assert stats["tollgate.detection.object_probing"] == 1
    assert stats["tollgate.detection.blocks"] == 1
    assert stats["tollgate.requests.denied.caller_blocked"] == 2
    line = next(l for l in envoy.logs().splitlines() if "detection `object_probing`" in l)
    assert "caller=`p:jwt:demo:mallory` action=block for 600 s: 8 of 8 requests" in line
    assert "eyJ" not in line, "no token in the log"


def test_a_spike_is_throttled_and_the_throttle_lifts(envoy):
    spiky, steady = as_("spiky"), as_("steady")
    sent, refused = 0, None
    # 40 requests in a minute, from nothing, trip the spike (min_requests 40); the throttle's
    # bucket then holds 2.
    while refused is None and sent < 60:
        resp = envoy.get("/feed", spiky)
        sent += 1
        if resp.status != 200:
            refused = resp
    assert refused is not None and code(refused) == "caller_throttled" and refused.status == 429
    assert sent == 43, sent
    assert 1 <= int(refused.header("retry-after")) <= 5
    assert envoy.get("/feed", steady).status == 200, "another caller is not throttled"
    assert envoy.stats()["tollgate.detection.throttles"] == 1
    time.sleep(5.2)
    for _ in range(5):
        assert envoy.get("/feed", spiky).status == 200


def test_report_only_detectors_count_and_let_requests_through(envoy):
    before = envoy.stats()
    # Every request from the test client has the same address (127.0.0.1): without a principal,
    # it is the caller. `enumeration` is `report` in this policy.
    for i in range(25):
        assert code(envoy.get(f"/wp-admin/{i}.php")) == "route_not_found"
    # The interactive route, without `accept`: the automated-client signal reports...
    for _ in range(6):
        assert envoy.get("/home").status == 200
    # ... but not for known automation.
    for _ in range(6):
        assert envoy.get("/home", {"user-agent": "uptime-probe/3"}).status == 200
    assert envoy.get("/health").status == 200
    after = envoy.stats()
    assert after["tollgate.detection.enumeration"] == before.get("tollgate.detection.enumeration", 0) + 1
    assert after["tollgate.detection.missing_headers"] == before.get("tollgate.detection.missing_headers", 0) + 1
    assert after.get("tollgate.detection.blocks", 0) == before.get("tollgate.detection.blocks", 0)
    wait_until(lambda: "detection `enumeration` caller=`ip:127.0.0.1` action=report" in envoy.logs(),
               what="the enumeration report in the log")


CALLERS = 100_000
WARM_UP = 5_000
SLOTS = 1024
# 100,000 distinct callers against 1,024 slots, from four keep-alive connections.
THREADS = 4


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def send_all(port, start, count):
    """GET /nowhere (Tollgate answers 404 itself, so the upstream sets no pace) from `count`
    distinct addresses (10.x.y.z from `start` on) over keep-alive connections; the statuses seen,
    counted."""
    seen, lock = {}, threading.Lock()

    def worker(offset):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        local = {}
        for n in range(start + offset, start + count, THREADS):
            ip = f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"
            conn.request("GET", "/nowhere", headers={"x-forwarded-for": ip})
            resp = conn.getresponse()
            resp.read()
            local[resp.status] = local.get(resp.status, 0) + 1
        conn.close()
        with lock:
            for k, v in local.items():
                seen[k] = seen.get(k, 0) + v

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return seen


def test_a_hundred_thousand_callers_take_bounded_memory(upstream):
    policy = {
        "rate_limit_options": {"trusted_hops": 2},
        "detection": {"slots": SLOTS},
        "routes": [{"name": "health", "path": "/health", "public": True}],
    }
    envoy = Envoy(policy, upstream.port, concurrency=2).wait_ready()
    try:
        assert send_all(envoy.port, 0, WARM_UP) == {404: WARM_UP}
        before = rss_kib(envoy.proc.pid)
        assert send_all(envoy.port, WARM_UP, CALLERS) == {404: CALLERS}
        after = rss_kib(envoy.proc.pid)
        growth = after - before
        print(f"Envoy RSS {before} KiB after {WARM_UP} callers, {after} KiB after {CALLERS} more "
              f"({growth:+} KiB; the slots' bound is about {SLOTS * 260 // 1024} KiB)")
        # An in-VM table of callers would grow by tens of MiB (100k entries on each worker).
        assert growth < 8 * 1024, growth
        # The slots still keep callers: one address enumerating is reported, as always.
        for i in range(25):
            assert envoy.get(f"/wp-admin/{i}", {"x-forwarded-for": "192.0.2.99"}).status == 404
        assert envoy.stats().get("tollgate.detection.enumeration", 0) >= 1
    finally:
        envoy.stop()
