"""What one request costs in crossings of the VM boundary (part of `make bench`; `bench.py
--calls-only` runs just this): per kind of request, the VM entries (stream callbacks Envoy calls),
the host calls Tollgate makes, and the allocations inside the VM with their bytes. Every crossing
costs time that native filters do not pay (about half a microsecond through V8), and each
allocation Envoy makes to copy data in is a VM entry of its own (`proxy_on_memory_allocate`).

The figures come from the probe build (`--features stage-probe`, src/host/probe.rs), which counts
them and logs the averages on its tick; requests here are sent one at a time on one keep-alive
connection, so nothing but the count matters (no timing is read).
"""
import http.client
import os
import re
import time

REQUESTS = 2000
LINE = re.compile(r"tollgate: probe: requests=(\d+) entries=([\d.]+) host_calls=([\d.]+) "
                  r"allocations=([\d.]+) bytes=(\d+) by=(\S*)")


def kinds(b, rs256, fresh):
    """(name, what, policy, token or token list, expected status)."""
    return [
        ("jwt", "JWT only (RS256, cached verdict), allowed", b.tollgate_policy(False), rs256, 200),
        ("full", "full pipeline: JWT, scope, local rate limit, body schema, allowed", b.tollgate_policy(True), rs256, 200),
        ("full-audit", "full pipeline with an audit line for every request", b.tollgate_policy(True, audit_all=True),
         rs256, 200),
        ("local-limit", "JWT + a per-caller limit in shared data", b.limited_policy("local"), rs256, 200),
        ("fresh", "full pipeline, a new RS256 token each time (Envoy's `verify_signature`)", b.tollgate_policy(True),
         fresh, 200),
        ("refused", "full pipeline, no token: refused with 401", b.tollgate_policy(True), None, 401),
    ]


def send_all(port, token, expect, offset=0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    tokens = list(token) if isinstance(token, list) else [token]
    try:
        for i in range(REQUESTS):
            headers = {"content-type": "application/json"}
            t = tokens[(offset + i) % len(tokens)]
            if t:
                headers["authorization"] = f"Bearer {t}"
            conn.request("POST", "/orders", body=b_body, headers=headers)
            r = conn.getresponse()
            r.read()
            if r.status != expect:
                raise RuntimeError(f"expected {expect}, got {r.status}")
    finally:
        conn.close()


def read_counts(log_path):
    """Weighted averages over every probe line of the log (each covers one tick)."""
    total = {"requests": 0, "entries": 0.0, "host_calls": 0.0, "allocations": 0.0, "bytes": 0.0}
    by = {}
    for m in LINE.finditer(open(log_path).read()):
        n = int(m.group(1))
        total["requests"] += n
        for i, k in enumerate(("entries", "host_calls", "allocations", "bytes"), start=2):
            total[k] += float(m.group(i)) * n
        for part in filter(None, m.group(6).split(",")):
            name, value = part.split(":")
            by[name] = by.get(name, 0.0) + float(value) * n
    n = max(total["requests"], 1)
    counts = {k: (v if k == "requests" else v / n) for k, v in total.items()}
    counts["by_callback"] = {k: v / n for k, v in by.items()}
    return counts


b_body = b""


def run(b, workdir, up_port, rs256, fresh):
    global b_body
    b_body = b.BODY
    results = []
    for name, what, policy, token, expect in kinds(b, rs256, fresh):
        f = b.wasm_filter(b.PROBE_WASM, policy)
        p = b.Proxy(f"calls-{name}", b.bootstrap(b.free_port(), b.free_port(), up_port, [f]), workdir,
                    log_level="warn")
        try:
            p.wait_ready()
            # Warm-up outside the count: the first requests fill caches and define counters.
            send_all(p.port, token, expect)
            time.sleep(1.2)
            mark = os.path.getsize(p.log_path)
            # Fresh tokens: other ones than the warm-up's (the list is longer than both runs).
            send_all(p.port, token, expect, offset=REQUESTS)
            time.sleep(2.2)  # two ticks: the last report covers the last requests
            with open(p.log_path) as log:
                log.seek(mark)
                tail = os.path.join(workdir, f"calls-{name}.tail")
                with open(tail, "w") as out:
                    out.write(log.read())
            counts = read_counts(tail)
        finally:
            p.stop()
        counts.update({"name": name, "what": what})
        results.append(counts)
        print(f"calls {name:12} entries {counts['entries']:5.2f}  host calls {counts['host_calls']:5.2f}  "
              f"allocations {counts['allocations']:6.1f}  bytes {counts['bytes']:7.0f}  "
              f"(over {counts['requests']} requests)  "
              + " ".join(f"{k}={v:.2f}" for k, v in counts["by_callback"].items()), flush=True)
    return results


def report(results):
    lines = [
        "## Crossings per request",
        "",
        "Per kind of request, counted by the probe build (tests/bench/calls.py, src/host/probe.rs): VM entries "
        "(the stream callbacks Envoy calls: context create, request headers, request body, response headers, "
        "response body, log, done, delete), host calls Tollgate makes (header maps read, headers set or removed, "
        "shared data, clock, log, foreign functions, counters handed over on the tick, spread over the requests), "
        "and allocations inside the VM (including the buffers Envoy asks the module for when it copies data in, "
        "each one more VM entry) with their bytes.",
        "",
        "| request | VM entries | of which | host calls | allocations | bytes allocated |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for r in results:
        by = ", ".join(f"{k} {v:.2g}" for k, v in r["by_callback"].items())
        lines.append(f"| {r['what']} (`{r['name']}`) | {r['entries']:.2f} | {by} | {r['host_calls']:.2f} | "
                     f"{r['allocations']:.1f} | {r['bytes']:,.0f} |")
    lines.append("")
    return lines
