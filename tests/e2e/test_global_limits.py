"""Global rate limits in real Envoys: two Envoy instances with two workers each share one budget
through a rate-limit service (RLS v3 gRPC) counting in a real Redis (tests/e2e/rls_server.py, the
stand-in for envoyproxy/ratelimit and Limitador); `local+global` shields the service; descriptors
carry verified identity only; the service down, slow, answering garbage or errors does what the
policy says, and limiting resumes when it is back; brute-force failures counted across proxies.

Figures go to target/global-ratelimit-report.json (policies/README.md, "Global limits")."""
import base64
import http.client
import json
import os
import threading
import time
import uuid

import pytest

from harness import ROOT, Envoy, free_port, request
from rls_server import RateLimitServer, RedisServer
from tokens import AUDIENCE, ISSUER, mint, public_jwk

SHARED = 30          # per minute, across every Envoy
SHIELD_BURST = 5     # local bucket of `shielded`, per Envoy
TIMEOUT_MS = 250

POLICY = {
    "providers": {"main": {"issuer": ISSUER, "audiences": [AUDIENCE], "algorithms": ["RS256"],
                           "jwks": {"keys": [public_jwk("rsa-1")]}}},
    "rate_limit_service": {"cluster": "ratelimit", "domain": "tollgate-e2e", "timeout_ms": TIMEOUT_MS,
                           "response_headers": ["x-ratelimit-limit"]},
    "rate_limits": {
        "shared": {"rate": SHARED, "per": "minute", "burst": SHARED, "key": [{"header": "x-client"}],
                   "backend": "global"},
        "shielded": {"rate": SHIELD_BURST, "per": "hour", "burst": SHIELD_BURST, "key": [{"header": "x-client"}],
                     "backend": "local+global"},
        "open": {"rate": 1000, "per": "minute", "burst": 1000, "key": [{"header": "x-client"}],
                 "backend": "global", "on_service_failure": "allow"},
        "per-caller": {"rate": 100, "per": "minute", "burst": 100, "key": ["identity", {"claim": "tenant"}],
                       "backend": "global"},
    },
    "routes": [
        {"name": "shared", "path": "/shared", "public": True, "limits": ["shared"]},
        {"name": "shielded", "path": "/shielded", "public": True, "limits": ["shielded"]},
        {"name": "open", "path": "/open", "public": True, "limits": ["open"]},
        {"name": "me", "path": "/me", "providers": ["main"], "limits": ["per-caller"]},
        {"name": "upload", "path": "/upload", "methods": ["POST"], "public": True, "limits": ["open"],
         "request": {"body": {"type": "object", "required": ["a"]}}},
    ],
}

REPORT = os.path.join(ROOT, "target", "global-ratelimit-report.json")


def report(**figures):
    data = {}
    if os.path.exists(REPORT):
        with open(REPORT) as f:
            data = json.load(f)
    data.update(figures)
    os.makedirs(os.path.dirname(REPORT), exist_ok=True)
    with open(REPORT, "w") as f:
        json.dump(data, f, indent=1)
    print(json.dumps(figures))


@pytest.fixture(scope="module")
def redis_server():
    r = RedisServer()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def rls(redis_server):
    # No configuration of its own: Tollgate sends each limit's numbers as the descriptor's
    # override (`send_limits`, the default).
    s = RateLimitServer(redis_server.port, {"domain": "tollgate-e2e", "descriptors": []})
    yield s
    s.stop()


@pytest.fixture(scope="module")
def envoys(upstream, rls):
    started = []
    try:
        for _ in range(2):
            started.append(Envoy(POLICY, upstream.port, concurrency=2, rls_port=rls.port))
        for e in started:
            e.wait_ready()
        yield started
    finally:
        for e in started:
            e.stop()


@pytest.fixture(autouse=True)
def service_normal(rls):
    rls.set_mode("normal")
    yield
    rls.set_mode("normal")


def key():
    return uuid.uuid4().hex


def get(envoy, path, client, **headers):
    return envoy.get(path, headers={"x-client": client, **headers})


def fire(envoys, path, client, n, threads=4):
    """`n` requests for `client`, spread over every Envoy by `threads` threads: statuses by count,
    and the seconds since the epoch of the first and last request."""
    statuses = {}
    lock = threading.Lock()
    todo = list(range(n))

    def work(t):
        conns = [http.client.HTTPConnection("127.0.0.1", e.port, timeout=10) for e in envoys]
        while True:
            with lock:
                if not todo:
                    break
                i = todo.pop()
            conn = conns[(i + t) % len(conns)]
            conn.request("GET", path, headers={"x-client": client})
            r = conn.getresponse()
            r.read()
            with lock:
                statuses[r.status] = statuses.get(r.status, 0) + 1
        for c in conns:
            c.close()

    start = time.time()
    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return statuses, start, time.time()


def windows(start, end, seconds=60):
    """Fixed windows of the service the span touched."""
    return int(end // seconds) - int(start // seconds) + 1


def room_in_window(needed=5.0, seconds=60):
    """Wait for the next fixed window when fewer than `needed` seconds are left in this one,
    so that a test counting one budget exactly does not straddle two."""
    left = seconds - time.time() % seconds
    if left < needed:
        time.sleep(left + 0.05)


def test_one_budget_across_two_envoys(envoys):
    ratios = []
    for run in range(3):
        client = key()
        statuses, start, end = fire(envoys, "/shared", client, SHARED * 3)
        allowed = statuses.get(200, 0)
        ceiling = SHARED * windows(start, end)
        assert set(statuses) <= {200, 429}, statuses
        assert allowed <= ceiling, (run, statuses, ceiling)
        # The service counts exactly: inside one window exactly the budget passes.
        assert allowed >= SHARED, (run, statuses)
        ratios.append(allowed / ceiling)
    report(global_two_envoys={"limit_per_minute": SHARED, "sent_per_run": SHARED * 3,
                              "allowed_to_ceiling": [round(r, 3) for r in ratios]})
    # A second key is independent of the exhausted one.
    exhausted = client
    r = get(envoys[0], "/shared", exhausted)
    assert r.status == 429
    assert get(envoys[1], "/shared", key()).status == 200


def test_over_limit_is_a_problem_with_retry_after(envoys):
    client = key()
    room_in_window()
    for _ in range(SHARED):
        assert get(envoys[0], "/shared", client).status == 200
    r = get(envoys[1], "/shared", client)
    assert r.status == 429
    assert r.header("content-type") == "application/problem+json"
    assert r.json()["type"] == "urn:tollgate:problem:rate_limited"
    retry = int(r.header("retry-after"))
    assert 1 <= retry <= 60
    assert r.header("ratelimit") == f'"shared";r=0;t={retry}'
    assert r.header("ratelimit-policy") == f'"shared";q={SHARED};w=60'
    # The service's own headers are not passed unless listed (the stand-in sends none).
    assert r.header("x-ratelimit-limit") is None


def test_allowed_responses_show_the_shared_budget(envoys):
    client = key()
    room_in_window()
    r = get(envoys[0], "/shared", client)
    assert r.status == 200
    assert r.header("ratelimit-policy") == f'"shared";q={SHARED};w=60'
    assert r.header("ratelimit").startswith(f'"shared";r={SHARED - 1};t=')
    r = get(envoys[1], "/shared", client)
    assert r.header("ratelimit").startswith(f'"shared";r={SHARED - 2};t=')


def test_the_local_bucket_shields_the_service(envoys, rls):
    client = key()
    before = rls.calls
    statuses = {}
    for _ in range(40):
        s = get(envoys[0], "/shielded", client).status
        statuses[s] = statuses.get(s, 0) + 1
    calls = rls.calls - before
    report(local_global_shield={"sent": 40, "allowed": statuses.get(200, 0), "rls_calls": calls})
    # Only the requests the local bucket let through were asked about (its burst, shared by the
    # Envoy's two workers).
    assert statuses == {200: SHIELD_BURST, 429: 40 - SHIELD_BURST}, statuses
    assert calls == SHIELD_BURST


def test_descriptors_carry_verified_identity(envoys, rls):
    token = mint(kid="rsa-1", sub="alice", tenant="acme")
    r = envoys[0].get("/me", headers={"authorization": f"Bearer {token}", "x-tollgate-principal": "forged"})
    assert r.status == 200
    entries = [(e.key, e.value) for e in rls.requests[-1].descriptors[0].entries]
    assert entries == [("tollgate_limit", "per-caller"), ("identity", f"jwt:main:alice"),
                       ("claim.tenant", "acme")]
    # A token whose payload was changed after signing: refused before any limit, so the forged
    # claims never reach the service.
    head, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims.update(sub="mallory", tenant="victim")
    forged = ".".join([head, base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode(), sig])
    before = rls.calls
    r = envoys[1].get("/me", headers={"authorization": f"Bearer {forged}"})
    assert r.status == 401
    assert rls.calls == before
    assert not any(v in ("jwt:main:mallory", "victim")
                   for req in rls.requests for d in req.descriptors for v in (e.value for e in d.entries))


def test_a_body_is_held_while_the_service_answers(envoys, upstream, rls):
    rls.set_mode("slow", delay_ms=100)
    conn = http.client.HTTPConnection("127.0.0.1", envoys[0].port, timeout=10)
    conn.request("POST", "/upload", body=b'{"a": 1}',
                 headers={"x-client": key(), "content-type": "application/json"})
    r = conn.getresponse()
    assert r.status == 200
    assert json.loads(r.read())["body"] == '{"a": 1}'
    conn.request("POST", "/upload", body=b'{"b": 1}',
                 headers={"x-client": key(), "content-type": "application/json"})
    r = conn.getresponse()
    assert r.status == 400
    assert json.loads(r.read())["type"] == "urn:tollgate:problem:request_invalid"


def counters(envoys):
    total = {}
    for e in envoys:
        for k, v in e.stats().items():
            total[k] = total.get(k, 0) + v
    return total


@pytest.mark.parametrize("mode,counter", [
    ("slow", "tollgate.ratelimit.service.timeout"),
    ("garbage", "tollgate.ratelimit.service.malformed"),
    ("unavailable", "tollgate.ratelimit.service.error"),
])
def test_service_failures_do_what_the_policy_says(envoys, rls, mode, counter):
    before = counters(envoys)
    rls.set_mode(mode, delay_ms=TIMEOUT_MS + 1000)
    started = time.time()
    refused = get(envoys[0], "/shared", key())
    waited = time.time() - started
    let_through = get(envoys[1], "/open", key())
    after = counters(envoys)
    report(**{f"failure_{mode}": {"refused_status": refused.status, "seconds_to_answer": round(waited, 3)}})
    # `shared` denies on failure (the default), with its own code; `open` allows.
    assert refused.status == 503
    assert refused.json()["type"] == "urn:tollgate:problem:ratelimit_unavailable"
    assert refused.header("retry-after") == "1"
    assert let_through.status == 200
    assert after.get(counter, 0) - before.get(counter, 0) == 2
    assert after.get("tollgate.ratelimit.service.failed_open", 0) - \
        before.get("tollgate.ratelimit.service.failed_open", 0) == 1
    assert "rate-limit service failed" in envoys[0].logs()


def test_service_down_then_back(envoys, rls):
    client = key()
    rls.stop()
    try:
        before = counters(envoys)
        assert get(envoys[0], "/shared", client).status == 503
        assert get(envoys[1], "/open", client).status == 200
        after = counters(envoys)
        assert after["tollgate.ratelimit.service.error"] - before.get("tollgate.ratelimit.service.error", 0) == 2
    finally:
        rls.start()
    # Back: limiting resumes, counted by the service again (Envoy reconnects on its own).
    statuses = {}
    deadline = time.time() + 15
    while time.time() < deadline:
        statuses, start = {}, time.time()
        for _ in range(SHARED + 5):
            s = get(envoys[0], "/shared", client).status
            statuses[s] = statuses.get(s, 0) + 1
        # A batch that straddles the service's minute window gets a second budget: retry it.
        if 503 not in statuses and windows(start, time.time()) == 1:
            break
        client = key()
        time.sleep(0.5)
    assert statuses.get(200) == SHARED and statuses.get(429) == 5, statuses
    # Neither VM failed on the way.
    for e in envoys:
        assert "panicked" not in e.logs() and "wasm_fail_stream" not in e.logs()


def test_an_unknown_cluster_refuses_without_harming_the_vm(upstream):
    policy = json.loads(json.dumps(POLICY))
    policy["rate_limit_service"]["cluster"] = "nowhere"
    e = Envoy(policy, upstream.port, concurrency=1, rls_port=free_port()).wait_ready()
    try:
        for _ in range(3):
            r = get(e, "/shared", key())
            assert r.status == 503, r.body
            assert r.json()["type"] == "urn:tollgate:problem:ratelimit_unavailable"
            assert get(e, "/open", key()).status == 200
        assert e.stats()["tollgate.ratelimit.service.error"] == 6
        logs = e.logs()
        assert "panicked" not in logs and "failed" not in logs.replace("rate-limit service failed", ""), logs[-3000:]
    finally:
        e.stop()


def test_brute_force_blocks_across_proxies(upstream, rls, redis_server):
    """Three failures in total, spread over two Envoys, block the client at the Envoy that sees
    the third; the other blocks it at its next failure."""
    policy = json.loads(json.dumps(POLICY))
    policy["brute_force"] = {"max_failures": 3, "window_seconds": 60, "block_seconds": 30, "global": True}
    proxies = [Envoy(policy, upstream.port, concurrency=1, rls_port=rls.port) for _ in range(2)]
    try:
        for e in proxies:
            e.wait_ready()
        # The service counts in clock minutes: start well inside one.
        if time.time() % 60 > 45:
            time.sleep(61 - time.time() % 60)
        redis_server.flushall()
        a, b = proxies
        good = {"authorization": f"Bearer {mint(kid='rsa-1', tenant='acme')}"}
        bad = {"authorization": f"Bearer {mint(kid='rsa-1', signing_kid='rsa-2', tenant='acme')}"}
        assert [a.get("/me", headers=bad).status for _ in range(2)] == [401, 401]
        assert a.get("/me", headers=good).status == 200
        # B's first failure is the third in total: B blocks the client, A does not know yet.
        assert b.get("/me", headers=bad).status == 401
        blocked = b.get("/me", headers=good)
        assert blocked.status == 429, blocked.body
        assert blocked.json()["type"] == "urn:tollgate:problem:client_blocked"
        assert a.get("/me", headers=good).status == 200
        # A's next failure is over the shared count: A blocks too.
        assert a.get("/me", headers=bad).status == 401
        assert a.get("/me", headers=good).status == 429
        assert b.stats()["tollgate.brute_force.blocks"] == 1
        assert a.stats()["tollgate.brute_force.blocks"] == 1
        report(brute_force_global={"max_failures": 3, "failures_until_both_blocked": 4})
    finally:
        for e in proxies:
            e.stop()
