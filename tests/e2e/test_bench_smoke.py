"""The machinery of `make bench` (tests/bench/bench.py), run briefly so it cannot rot between
benchmarks: one short round of JWT only, a local and a global limit, and Envoy's own `ratelimit`
filter (the stand-in rate-limit service on Redis), and a report with their rows. The figures of so short a run mean
nothing and are not checked; `make bench` measures."""
import os
import shutil
import subprocess
import sys

from harness import ROOT

VARIANTS = ["tollgate-jwt", "tollgate-local-limit", "tollgate-global-limit", "native-global-limit"]


def test_a_short_benchmark_runs_and_reports(tmp_path):
    assert shutil.which("wrk"), "wrk is missing: `make deps` installs it"
    out = tmp_path / "results.md"
    run = subprocess.run(
        [sys.executable, "-W", "ignore", os.path.join(ROOT, "tests/bench/bench.py"), "--rounds", "1",
         "--duration", "1", "--latency-duration", "1", "--connections", "2", "--rate", "50",
         "--only", ",".join(VARIANTS), "--no-stages", "--no-extras", "--out", str(out)],
        capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    report = out.read_text()
    for name in ["floor"] + VARIANTS:
        assert f"(`{name}`) |" in report, report
    assert "A `global` limit instead of a `local` one" in report
    assert "Envoy's own `ratelimit` filter" in report
    assert (tmp_path / "results.json").exists()


def test_the_scaling_curves_run_and_report(tmp_path):
    """Two points of two curves, one second each: the machinery of `make bench`'s curves."""
    out = tmp_path / "curves.md"
    run = subprocess.run(
        [sys.executable, "-W", "ignore", os.path.join(ROOT, "tests/bench/bench.py"), "--curves-only",
         "routes,body_bytes", "--curve-points", "2", "--duration", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    report = out.read_text()
    assert "**routes**: CPU slope" in report and "**body_bytes**: CPU slope" in report, report
    assert "| 100 |" in report and "| 1,024 |" in report, report


def test_crossings_are_read_from_the_probe_lines(tmp_path):
    """`calls.py` averages the probe build's lines (src/host/probe.rs `report`), weighted by the
    requests each covers. The Envoy run itself needs the probe build, which only `make bench` makes."""
    sys.path.insert(0, os.path.join(ROOT, "tests", "bench"))
    import calls
    log = tmp_path / "envoy.log"
    prefix = "[2026-12-05 12:00:00.000][1][warning][wasm] wasm log tollgate: "
    log.write_text(
        prefix + "tollgate: probe: requests=300 entries=10.00 host_calls=12.00 allocations=60.00 bytes=3500 "
                 "by=create:1.00,request_headers:1.00,request_body:2.00,log:1.00\n"
        + "unrelated line\n"
        + prefix + "tollgate: probe: requests=100 entries=6.00 host_calls=8.00 allocations=100.00 bytes=7500 "
                   "by=create:1.00,request_headers:1.00,log:1.00\n")
    counts = calls.read_counts(str(log))
    assert counts["requests"] == 400
    assert counts["entries"] == 9.0 and counts["host_calls"] == 11.0
    assert counts["allocations"] == 70.0 and counts["bytes"] == 4500.0
    assert counts["by_callback"] == {"create": 1.0, "request_headers": 1.0, "request_body": 1.5, "log": 1.0}
    counts.update({"name": "jwt", "what": "JWT only"})
    table = "\n".join(calls.report([counts]))
    assert "| JWT only (`jwt`) | 9.00 | create 1, request_headers 1, request_body 1.5, log 1 | 11.00 | 70.0 | 4,500 |" in table, table
