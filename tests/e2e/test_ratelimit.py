"""Rate limiting in a real Envoy with two workers: accuracy of a shared bucket under concurrent
clients, independence of keys, 429 headers, and bounded memory with 100,000 distinct keys."""
import http.client
import json
import os
import threading
import time

import pytest

from harness import ROOT, Envoy, request

RATE, BURST = 20, 10

POLICY = {
    "rate_limits": {
        "per-client": {"rate": RATE, "per": "second", "burst": BURST, "key": [{"header": "x-client"}]},
        "many": {"rate": 1, "per": "minute", "burst": 5, "key": [{"header": "x-client"}], "slots": 4096},
        # Refuses everything after its first token, so the memory test's requests are answered by
        # Envoy (429) after `many` has taken its token, without a round trip to the upstream.
        "closed": {"rate": 1, "per": "hour", "burst": 1, "key": [{"constant": "closed"}]},
    },
    "routes": [
        {"name": "limited", "path": "/limited", "public": True, "limits": ["per-client"]},
        {"name": "many", "path": "/many", "public": True, "limits": ["many", "closed"]},
    ],
}

REPORT = os.path.join(ROOT, "target", "ratelimit-report.json")


@pytest.fixture(scope="module")
def envoy(upstream):
    e = Envoy(POLICY, upstream.port, concurrency=2).wait_ready()
    yield e
    e.stop()


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


def hammer(port, path, key, stop_at, counts, lock):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    ok = limited = 0
    while time.time() < stop_at:
        conn.request("GET", path, headers={"x-client": key})
        r = conn.getresponse()
        r.read()
        if r.status == 200:
            ok += 1
        elif r.status == 429:
            limited += 1
        if r.getheader("connection", "") == "close":
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.close()
    with lock:
        counts["ok"] += ok
        counts["limited"] += limited


def test_shared_bucket_accuracy_with_two_workers(envoy):
    duration = 3.0
    counts = {"ok": 0, "limited": 0}
    cold = {"ok": 0, "limited": 0}
    lock = threading.Lock()
    start = time.time()
    stop_at = start + duration
    threads = [threading.Thread(target=hammer, args=(envoy.port, "/limited", "hot", stop_at, counts, lock)) for _ in range(8)]
    for t in threads:
        t.start()
    # Another key, well under its limit, in the same window: unaffected by the hot one.
    conn = http.client.HTTPConnection("127.0.0.1", envoy.port, timeout=10)
    while time.time() < stop_at:
        conn.request("GET", "/limited", headers={"x-client": "cold"})
        r = conn.getresponse()
        r.read()
        cold["ok" if r.status == 200 else "limited"] += 1
        time.sleep(0.2)
    for t in threads:
        t.join()
    elapsed = time.time() - start
    ceiling = BURST + RATE * elapsed
    floor = BURST + RATE * duration
    report(
        accuracy_workers=2,
        accuracy_window_s=round(elapsed, 2),
        accuracy_allowed=counts["ok"],
        accuracy_refused=counts["limited"],
        accuracy_ceiling=round(ceiling, 1),
        accuracy_ratio=round(counts["ok"] / ceiling, 3),
    )
    assert counts["limited"] > 100, "the hot key was pushed well past its limit"
    # Never above burst + rate * elapsed (+1 for a refill that lands during the last request) ...
    assert counts["ok"] <= ceiling + 1, (counts, ceiling)
    # ... and not far below it.
    assert counts["ok"] >= 0.9 * floor, (counts, floor)
    assert cold["limited"] == 0 and cold["ok"] > 5, cold


def test_429_and_ratelimit_headers(envoy):
    ok = request(envoy.url("/limited"), headers={"x-client": "headers"})
    assert ok.status == 200
    assert ok.header("ratelimit-policy") == f'"per-client";q={BURST};w=1'
    assert ok.header("ratelimit").startswith('"per-client";r=')
    for _ in range(500):  # refill is 20/s, so keep going until the bucket is empty
        resp = request(envoy.url("/limited"), headers={"x-client": "headers"})
        if resp.status != 200:
            break
    assert resp.status == 429
    assert resp.header("content-type") == "application/problem+json"
    assert resp.json()["type"] == "urn:tollgate:problem:rate_limited"
    assert int(resp.header("retry-after")) >= 1
    assert resp.header("ratelimit") == '"per-client";r=0;t=1'
    assert resp.header("ratelimit-policy") == f'"per-client";q={BURST};w=1'


def allocated(envoy):
    return int(request(f"http://127.0.0.1:{envoy.admin}/memory").json()["allocated"])


def spray(port, keys):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for k in keys:
        conn.request("GET", "/many", headers={"x-client": k})
        r = conn.getresponse()
        r.read()
        assert r.status in (200, 429)
    conn.close()


def test_memory_is_bounded_with_100k_distinct_keys(envoy):
    start = allocated(envoy)
    # Warm-up: 5,000 keys already reach most of the 4,096 slots; Envoy's own per-connection state
    # is allocated too.
    spray(envoy.port, [f"warm-{i}" for i in range(5000)])
    before = allocated(envoy)
    total = 100_000
    threads = [threading.Thread(target=spray, args=(envoy.port, [f"k{t}-{i}" for i in range(t, total, 4)])) for t in range(4)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = allocated(envoy)
    growth = after - before
    report(memory_distinct_keys=total, memory_slots=4096, memory_growth_bytes=growth,
           memory_growth_from_start_bytes=after - start,
           memory_allocated_after_bytes=after, memory_spray_seconds=round(time.time() - t0, 1))
    # 4096 slots of ~64-byte keys and 16-byte values: about 0.5 MiB in the worst case. One entry
    # per key would be 100,000 entries (well over 10 MiB). Allow Envoy's own noise on top.
    assert growth < 2 * 1024 * 1024, growth
    assert after - start < 4 * 1024 * 1024, after - start
