"""How Tollgate's cost grows with the work (part of `make bench`; `bench.py --curves-only` runs just
this): CPU per request and Envoy's start-to-ready time against the number of routes, API keys,
JWKS keys, distinct rate-limit keys, and against the request body's size. Each point is its own
Envoy (`--concurrency 1`) with the policy for that point, started (timed), then loaded with wrk.
The report gives a table per curve and each curve's slope (the least-squares line through the
points, per unit of the x axis), and writes curves.png next to results.md when matplotlib is
installed (`make bench` installs it into .venv).

The question each curve answers: does a request cost more when the policy is larger? Route
matching (hash and segment trie), API-key lookup (hash of the key) and key selection by `kid` are
built not to grow; body checks grow with the body, as parsing must; rate-limit keys are hashed
into a fixed number of slots.
"""
import hashlib
import json
import os
import statistics

DIMENSIONS = {
    "routes": [10, 100, 1000, 10000],
    "api_keys": [10, 1000, 10000, 100000],
    "jwks_keys": [1, 8, 64],
    "body_bytes": [100, 1024, 10240, 102400, 1048576],
    "limit_keys": [1, 100, 10000, 1000000],
}
UNITS = {"routes": "route", "api_keys": "key", "jwks_keys": "key", "body_bytes": "KiB", "limit_keys": "key"}


def policy_for(b, dimension, n):
    """The policy of one point, and the request that exercises it: (policy, path, headers, body)."""
    SCOPE = "bench:call"
    keys = [b.public_jwk("rsa-1")]
    if dimension == "jwks_keys":
        keys = []
        for i in range(n):
            k = dict(b.public_jwk("rsa-1"))
            k["kid"] = "rsa-1" if i == n - 1 else f"copy-{i}"
            keys.append(k)
    provider = {"issuer": b.ISSUER, "audiences": [b.AUDIENCE], "algorithms": ["RS256"], "jwks": {"keys": keys}}
    routes_n = n if dimension == "routes" else 1
    routes = [{"name": f"r{i}", "path": f"/api/v1/resource{i}/{{id}}", "methods": ["POST"],
               "providers": ["corp"], "scopes": {"all": [SCOPE]}} for i in range(routes_n)]
    last = routes[-1]
    path = f"/api/v1/resource{routes_n - 1}/42"
    policy = {"providers": {"corp": provider}, "routes": routes, "audit": {"sample_allowed": 0.0}}
    headers = {}
    body = json.dumps({"item": "book", "quantity": 1})
    if dimension == "api_keys":
        plain = [f"tg_bench_{i:08d}_{'x' * 24}" for i in range(n)]
        policy["api_keys"] = {"header": "x-api-key", "keys": [
            {"id": f"k{i}", "sha256": hashlib.sha256(k.encode()).hexdigest(), "scopes": [SCOPE]}
            for i, k in enumerate(plain)]}
        last.pop("providers")
        last["api_keys"] = True
        headers["x-api-key"] = plain[-1]
    if dimension == "body_bytes":
        item = {"sku": "book-1234", "quantity": 2}
        count = max(1, n // (len(json.dumps(item)) + 2))
        body = json.dumps({"items": [item] * count})
        last["request"] = {"body": {"type": "object", "properties": {"items": {"type": "array", "items": {
            "type": "object", "properties": {"sku": {"type": "string"}, "quantity": {"type": "integer"}}}}}},
            "max_body_bytes": 2 * 1048576}
        policy["payload_options"] = {"max_body_bytes": 2 * 1048576}
    if dimension == "limit_keys":
        policy["rate_limits"] = {"per-client": {"rate": 1000000, "per": "second", "burst": 1000000,
                                                "key": [{"header": "x-client"}], "slots": 65536}}
        last["limits"] = ["per-client"]
    return policy, path, headers, body.encode(), SCOPE


WRK_CURVE = """
wrk.method = "POST"
wrk.path = "%(path)s"
wrk.body = %(body)s
local base = %(headers)s
local n = %(distinct)d
local i = 0
request = function()
  i = i + 1
  local h = {}
  for k, v in pairs(base) do h[k] = v end
  if n > 0 then h["x-client"] = "client-" .. (i %% n) end
  return wrk.format(nil, nil, h)
end
"""


def lua_string(text):
    return "[==[" + text + "]==]"


def measure(b, workdir, up_port, dimension, n, duration, connections):
    import subprocess
    import re
    policy, path, headers, body, scope = policy_for(b, dimension, n)
    token = b.mint("RS256", scope=scope, exp=int(b.time.time()) + 86400)
    h = {"content-type": "application/json", **headers}
    if dimension != "api_keys":
        h["authorization"] = f"Bearer {token}"
    name = f"curve-{dimension}-{n}"
    proxy = b.Proxy(name, b.bootstrap(b.free_port(), b.free_port(), up_port, [b.wasm_filter(b.WASM, policy)]),
                    workdir, log_level="warn")
    try:
        proxy.wait_ready(timeout=300)
        start_s = proxy.ready_after
        script = os.path.join(workdir, f"{name}.lua")
        lua_headers = "{" + ", ".join(f'["{k}"] = {lua_string(v)}' for k, v in h.items()) + "}"
        with open(script, "w") as f:
            f.write(WRK_CURVE % {"path": path, "body": lua_string(body.decode()), "headers": lua_headers,
                                 "distinct": n if dimension == "limit_keys" else 0})
        # Warm-up (JIT, caches), then the measured run.
        subprocess.run(["wrk", "-t1", f"-c{connections}", "-d1s", "-s", script,
                        f"http://127.0.0.1:{proxy.port}{path}"], capture_output=True, check=True)
        cpu0, done0 = proxy.cpu_seconds(), proxy.completed()
        out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "-s", script,
                              f"http://127.0.0.1:{proxy.port}{path}"], capture_output=True, text=True,
                             check=True).stdout
        cpu1, done1 = proxy.cpu_seconds(), proxy.completed()
        if re.search(r"Non-2xx or 3xx responses: (\d+)", out):
            raise RuntimeError(f"{name}: not every request succeeded:\n{out}")
        return {"n": n, "start_s": start_s, "cpu_us": (cpu1 - cpu0) / max(done1 - done0, 1) * 1e6,
                "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    finally:
        proxy.stop()


def slope(points, key, scale=1.0):
    xs = [p["n"] / scale for p in points]
    ys = [p[key] for p in points]
    if len(xs) < 2:
        return 0.0
    mx, my = statistics.mean(xs), statistics.mean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else 0.0


def run(b, workdir, up_port, duration=3, connections=8, only=None, points=None):
    results = {}
    for dimension, values in DIMENSIONS.items():
        if only and dimension not in only:
            continue
        results[dimension] = []
        for n in values[:points]:
            m = measure(b, workdir, up_port, dimension, n, duration, connections)
            results[dimension].append(m)
            print(f"curve {dimension:10} {n:>8}  start {m['start_s']:.2f} s  {m['cpu_us']:7.1f} us/req", flush=True)
    return results


def report(results, out_dir, duration=3):
    lines = [
        "## Scaling",
        "",
        "CPU per request and start-to-ready time as the policy or the request grows (tests/bench/curves.py: "
        f"one Envoy per point, `--concurrency 1`, wrk with 1 thread and 8 connections for {duration} s after a 1-s "
        "warm-up). Slope: the least-squares line through the points, per unit of the x axis. "
        "A slope that is small against the CPU per request means the cost does not grow with that dimension.",
        "",
    ]
    for dimension, points in results.items():
        scale = 1024.0 if dimension == "body_bytes" else 1.0
        unit = UNITS[dimension]
        lines += [f"**{dimension}**: CPU slope {slope(points, 'cpu_us', scale):+.4f} µs per {unit}, start-up slope "
                  f"{slope(points, 'start_s', scale) * 1000:+.4f} ms per {unit}.", "",
                  f"| {dimension} | start to ready s | CPU µs/request | requests/s |", "|---:|---:|---:|---:|"]
        for p in points:
            lines.append(f"| {p['n']:,} | {p['start_s']:.2f} | {p['cpu_us']:.1f} | {p['rps']:.0f} |")
        lines.append("")
    png = chart(results, out_dir)
    if png:
        lines += [f"Chart: [{os.path.basename(png)}]({os.path.basename(png)}).", ""]
    else:
        lines += ["(No chart: matplotlib is not installed in .venv; `make bench` installs it.)", ""]
    return lines


def chart(results, out_dir):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(2, len(results), figsize=(4 * len(results), 6.5), squeeze=False)
    for col, (dimension, points) in enumerate(results.items()):
        xs = [p["n"] for p in points]
        for row, (key, label) in enumerate((("cpu_us", "CPU µs/request"), ("start_s", "start to ready, s"))):
            ax = axes[row][col]
            ax.plot(xs, [p[key] for p in points], marker="o")
            ax.set_xscale("log")
            ax.set_ylim(bottom=0)
            ax.set_xlabel(dimension)
            ax.set_ylabel(label)
            ax.grid(True, alpha=0.3)
    fig.suptitle("Tollgate: cost against policy and request size (make bench)")
    fig.tight_layout()
    path = os.path.join(out_dir, "curves.png")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
