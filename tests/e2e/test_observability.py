"""The dashboard and alerting rules of envoy/observability/ against a real Prometheus (Debian's
`prometheus`, installed by `make prometheus-deps`) scraping a real Envoy with Tollgate under a
scripted load: every dashboard query and every alert expression is evaluated through Prometheus'
HTTP API and returns the series the load produced; every alert fires. `promtool` checks the rule
file and Envoy's exposition."""
import glob
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.parse

import pytest
import yaml

import tokens
from harness import ROOT, Envoy, JwksServer, free_port, request, stop_process, wait_until

DASHBOARD = os.path.join(ROOT, "envoy/observability/tollgate-dashboard.json")
ALERTS = os.path.join(ROOT, "envoy/observability/tollgate-alerts.yaml")
# The Envoy configs in envoy/ (as tests/e2e/test_envoy_configs.py finds them), envoy/tollgate.yaml first.
TEMPLATES = sorted((t for t in glob.glob(os.path.join(ROOT, "envoy", "*.yaml"))
                    if os.path.basename(t) != "docker-compose.yaml"),
                   key=lambda t: (os.path.basename(t) != "tollgate.yaml", t))

# What the dashboard's Grafana variables stand for here: a rate window a few scrapes (1 s) long
# but longer than the test, every route, and the dashboard's time range.
VARIABLES = {"$__rate_interval": "2m", "$__range": "5m", "$route": ".*", "${datasource}": "prometheus"}

POLICY = {
    "realm": "observability",
    "providers": {
        "corp": {"issuer": tokens.ISSUER, "audiences": [tokens.AUDIENCE], "algorithms": ["RS256"],
                 "jwks": {"keys": [tokens.public_jwk("rsa-1")]}},
        # Its JWKS server answers 503: fetches fail, requests get 503 keys_unavailable.
        "remote": {"issuer": "https://remote.test", "audiences": [tokens.AUDIENCE], "algorithms": ["RS256"],
                   "remote_jwks": {"cluster": "jwks", "uri": "http://idp.test/jwks.json",
                                   "refresh_seconds": 1, "retry_seconds": 1}},
    },
    # The same server fails the revocation list; `allow` keeps the routes serving meanwhile.
    "revocations": {"remote": {"cluster": "jwks", "uri": "http://lists.test/revoked.json",
                               "refresh_seconds": 1, "retry_seconds": 1},
                    "on_unavailable": "allow"},
    # Nothing listens on the `ratelimit` cluster's port: every call is an error.
    "rate_limit_service": {"cluster": "ratelimit", "domain": "observability", "timeout_ms": 200},
    "rate_limits": {
        "two-per-minute": {"rate": 2, "per": "minute", "burst": 2, "key": [{"header": "x-client"}]},
        "shadow": {"rate": 1, "per": "minute", "burst": 1, "key": [{"header": "x-client"}], "shadow": True},
        "service": {"rate": 1000, "per": "minute", "burst": 1000, "key": [{"header": "x-client"}],
                    "backend": "global", "on_service_failure": "allow"},
    },
    "brute_force": {"max_failures": 3, "window_seconds": 60, "block_seconds": 60},
    "detection": {"enumeration": {"min_refusals": 10, "ratio": 0.5, "action": "report"}},
    "responses": {"mask_upstream_errors": True},
    "routes": [
        {"name": "items", "path": "/items", "providers": ["corp"]},
        {"name": "keys", "path": "/keys", "providers": ["remote"]},
        {"name": "limited", "path": "/limited", "public": True, "limits": ["two-per-minute"]},
        {"name": "shadowed", "path": "/shadowed", "public": True, "limits": ["shadow"]},
        {"name": "service", "path": "/service", "public": True, "limits": ["service"]},
        {"name": "flaky", "path": "/flaky", "public": True},
        {"name": "trial", "path": "/trial", "providers": ["corp"], "mode": "dry-run"},
        {"name": "old", "path": "/old", "public": True, "lifecycle": {"deprecated": "2025-01-01T00:00:00Z"}},
    ],
}

# Counters the load below makes non-zero; every other Tollgate counter stays at 0.
PROVOKED = {
    "tollgate_requests_allowed", "tollgate_requests_denied", "tollgate_requests_dry_run",
    "tollgate_route_allowed", "tollgate_route_denied", "tollgate_lifecycle_deprecated_requests",
    "tollgate_jwt_cache_hit", "tollgate_jwt_cache_miss", "tollgate_jwt_host_signatures",
    "tollgate_jwks_fetch_failed", "tollgate_revocations_fetch_failed", "tollgate_ratelimit_shadow_limited",
    "tollgate_ratelimit_service_calls", "tollgate_ratelimit_service_error", "tollgate_ratelimit_service_failed_open",
    "tollgate_response_upstream_masked", "tollgate_brute_force_blocks", "tollgate_detection_enumeration",
}
# Refusal codes and (route, reason) pairs the load produces.
CODES = {"token_missing", "token_expired", "signature_invalid", "route_not_found", "rate_limited", "client_blocked", "keys_unavailable"}
ROUTE_REASONS = {("items", "authentication"), ("items", "rate_limit"), ("_unmatched", "unknown_route"),
                 ("limited", "rate_limit"), ("keys", "config")}
ALLOWED_ROUTES = {"items", "limited", "shadowed", "service", "flaky", "old", "trial"}


def bearer(token):
    return {"authorization": f"Bearer {token}"}


def drive(envoy, round_):
    """One round of the scripted load; each scenario from its own client address
    (`x-forwarded-for`, trusted through the template's `xff_num_trusted_hops`)."""
    def get(path, client, headers=None):
        return envoy.get(path, {"x-forwarded-for": client, "x-client": client, **(headers or {})})

    good = tokens.mint(sub="obs-user")
    for _ in range(6):  # the first verifies the token, the others hit the cache
        assert get("/items", "192.0.2.1", bearer(good)).status == 200
    for path in ("/shadowed", "/shadowed", "/service", "/old", "/flaky"):
        assert get(path, "192.0.2.2").status == 200
    for _ in range(3):  # masked 5xx, counted as allowed
        resp = get("/flaky", "192.0.2.3", {"x-echo-respond": "503"})
        assert resp.status == 503 and resp.json()["type"].endswith(":upstream_error"), resp.body
    assert get("/trial", "192.0.2.4").status == 200  # dry run: would refuse token_missing
    for _ in range(4):
        assert get("/items", "192.0.2.5").status == 401
    for _ in range(22):  # 2 served, 20 rate_limited
        get("/limited", f"192.0.2.{10 + round_}")
    remote = tokens.mint(iss="https://remote.test")
    for _ in range(2):
        assert get("/keys", "192.0.2.6", bearer(remote)).status == 503
    for i in range(12):  # enumeration trips at 10
        assert get(f"/nowhere/{i}", f"192.0.2.{20 + round_}").status == 404
    expired = tokens.mint(sub="obs-user", exp=int(time.time()) - 600)
    assert get("/items", "192.0.2.7", bearer(expired)).status == 401
    if round_ == 0:
        # Three failed attempts (forged signatures) block the address; a valid token is then refused.
        forged = tokens.mint(sub="obs-user", signing_kid="rsa-2")
        for _ in range(3):
            assert get("/items", "192.0.2.30", bearer(forged)).status == 401
        assert get("/items", "192.0.2.30", bearer(good)).status == 429


def for_test(rules_text):
    """The shipped rules with every `for:` cut to 1 s: the test cannot wait minutes. The
    expressions and thresholds are the shipped ones."""
    rules = yaml.safe_load(rules_text)
    alerts = [r for g in rules["groups"] for r in g["rules"] if "alert" in r]
    assert alerts and all("for" in r for r in alerts), "every shipped alert waits with `for:`"
    for r in alerts:
        r["for"] = "1s"
    return yaml.safe_dump(rules), alerts


class Prometheus:
    """Debian's prometheus on a free loopback port, scraping `target` every second."""

    def __init__(self, target, rules_text):
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is not installed: `make prometheus-deps` installs it (Debian's prometheus)")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="tollgate-prometheus-")
        with open(os.path.join(self.dir, "alerts.yaml"), "w") as f:
            f.write(rules_text)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": ["alerts.yaml"],
            "scrape_configs": [{"job_name": "envoy", "metrics_path": "/stats/prometheus",
                                "static_configs": [{"targets": [target]}]}],
        }
        with open(os.path.join(self.dir, "prometheus.yml"), "w") as f:
            yaml.safe_dump(config, f)
        self.log = open(os.path.join(self.dir, "prometheus.log"), "w")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={self.dir}/prometheus.yml", f"--storage.tsdb.path={self.dir}/data",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=self.dir,
        )

    def wait_ready(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if request(f"http://127.0.0.1:{self.port}/-/ready", timeout=1).status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.log.flush()
        with open(self.log.name) as f:
            logs = f.read()
        self.stop()
        raise RuntimeError(f"prometheus not ready:\n{logs[-3000:]}")

    def api(self, path, **params):
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        resp = request(url)
        body = resp.json()
        assert resp.status == 200 and body["status"] == "success", (path, params, resp.body[:2000])
        return body["data"]

    def query(self, expr):
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", (expr, data)
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]

    def stop(self):
        stop_process(self.proc, self.log)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def stack(upstream):
    jwks = JwksServer()
    jwks.fail(503)
    envoy = Envoy(POLICY, upstream.port, jwks.port, concurrency=1, xff_trusted_hops=1).wait_ready()
    rules_text, alerts = for_test(open(ALERTS).read())
    try:
        prom = Prometheus(f"127.0.0.1:{envoy.admin}", rules_text).wait_ready()
    except Exception:
        envoy.stop()
        jwks.stop()
        raise
    try:
        # Counters must have been scraped at 0 before the load: rate() counts increases between
        # samples. Routes' counters appear at a route's first request, so a second round after
        # they were scraped gives them a rate too.
        wait_until(lambda: prom.query('up{job="envoy"} == 1') and prom.query("tollgate_requests_allowed"),
                   timeout=30, what="Prometheus scraping Envoy")
        drive(envoy, 0)
        wait_until(lambda: prom.query('tollgate_route_allowed{route="old"} > 0'), timeout=10,
                   what="the first round scraped")
        drive(envoy, 1)
        time.sleep(1.2 + 2)  # Tollgate's one-second flush, then two scrapes
        yield envoy, prom, alerts
    finally:
        prom.stop()
        envoy.stop()
        jwks.stop()


def metric_names(expr):
    return set(re.findall(r"\btollgate_\w+", expr))


def substitute(expr):
    for var, value in VARIABLES.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, expr
    return expr


def dashboard_targets():
    with open(DASHBOARD) as f:
        dash = json.load(f)
    out = []
    for panel in dash["panels"]:
        for t in panel.get("targets", []):
            out.append((f"{panel['title']} / {t.get('legendFormat', t['refId'])}", t["expr"]))
    return out


def test_dashboard_queries_return_the_load(stack):
    envoy, prom, _ = stack
    targets = dashboard_targets()
    assert len(targets) >= 40
    for name, expr in targets:
        result = prom.query(substitute(expr))
        assert result, f"{name}: no series for {expr}"
        names = metric_names(expr)
        assert names, expr
        values = [v for _, v in result]
        if names & PROVOKED:
            assert any(v > 0 for v in values), (name, expr, result)
        else:  # nothing the load does moves these counters
            assert all(v == 0 for v in values), (name, expr, result)

    by_code = {m["code"] for m, _ in prom.query(substitute(
        next(e for n, e in targets if n.startswith("Refusals by code"))))}
    assert CODES <= by_code, by_code
    assert {m["code"] for m, _ in prom.query(substitute(
        next(e for n, e in targets if n.startswith("Dry run: would refuse"))))} == {"token_missing"}
    pairs = {(m["route"], m["reason"]) for m, _ in prom.query(substitute(
        next(e for n, e in targets if n.startswith("Refused by route and reason"))))}
    assert ROUTE_REASONS <= pairs, pairs
    allowed = {m["route"] for m, v in prom.query(substitute(
        next(e for n, e in targets if n.startswith("Allowed by route")))) if v > 0}
    assert ALLOWED_ROUTES <= allowed, allowed
    ratio = prom.query(substitute(next(e for n, e in targets if n.startswith("JWT cache hit ratio"))))
    assert 0 < ratio[0][1] < 1, ratio  # hits on the repeated token, misses on the others
    blocks = prom.query(substitute(next(e for n, e in targets if n.startswith("Brute-force blocks"))))
    assert blocks[0][1] >= 1, blocks


def test_every_alert_expression_and_alert_fires(stack):
    _, prom, alerts = stack
    for rule in alerts:
        result = prom.query(rule["expr"])
        assert result, f"{rule['alert']}: the load does not provoke {rule['expr']}"
        assert all(m.get("instance") for m, _ in result), result

    want = {r["alert"] for r in alerts}

    def firing():
        got = {a["labels"]["alertname"] for a in prom.api("alerts")["alerts"] if a["state"] == "firing"}
        return got if want <= got else None

    wait_until(firing, timeout=15, what=f"alerts {sorted(want)} firing")


def test_promtool_checks_rules_and_envoys_exposition(stack):
    envoy, _, _ = stack
    out = subprocess.run(["promtool", "check", "rules", ALERTS], capture_output=True, text=True)
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr

    text = request(f"http://127.0.0.1:{envoy.admin}/stats/prometheus").body.decode()
    assert 'tollgate_requests_denied{code="rate_limited"}' in text
    assert "tollgate_route_denied{route=\"items\",reason=\"authentication\"}" in text
    out = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    problems = [l for l in (out.stdout + out.stderr).splitlines() if l.startswith("tollgate_")]
    # Envoy's exposition has no HELP lines and no `_total` on counters, for Envoy's own metrics as
    # for Tollgate's (envoy/README.md, "Dashboard and alerts"); promtool finds nothing else.
    assert problems, out.stdout + out.stderr
    for line in problems:
        name, _, what = line.partition(" ")
        assert what in ('counter metrics should have "_total" suffix', "no help text"), line
    assert 'tollgate_requests_allowed counter metrics should have "_total" suffix' in problems


def test_templates_carry_the_same_stats_tags():
    """The dashboard and the alerts need the `stats_config` that turns codes, routes and reasons
    into labels: every config in envoy/ has the same one, and envoy/README.md shows it."""
    blocks = []
    for path in TEMPLATES:
        with open(path) as f:
            config = yaml.safe_load(f.read().replace("@@", "x"))
        blocks.append(config["stats_config"])
    assert len(blocks) >= 4 and blocks[0]["stats_tags"] and all(b == blocks[0] for b in blocks)
    with open(os.path.join(ROOT, "envoy/README.md")) as f:
        readme = f.read()
    snippet = re.search(r"```yaml\n(stats_config:\n.*?)```", readme, re.S)
    assert snippet, "envoy/README.md shows the stats_config block"
    with open(TEMPLATES[0]) as f:
        assert snippet.group(1) in f.read()
