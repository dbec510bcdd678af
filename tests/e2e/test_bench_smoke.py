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
