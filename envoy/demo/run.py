#!/usr/bin/env python3
"""Runs the demo in the foreground: the echo upstream (in this process) and Envoy with the
rendered config. Ctrl-C stops both.

    envoy/demo/run.py target/demo/envoy.yaml [mesh]
"""
import os
import shutil
import signal
import subprocess
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from echo_upstream import serve  # noqa: E402

HELP = """
Tollgate demo: Envoy on http://127.0.0.1:10000 (admin http://127.0.0.1:9901), echo upstream on :10001.
Try, in another terminal:

  curl -i localhost:10000/health                 # public: 200
  curl -i localhost:10000/api/orders             # 401, problem+json, WWW-Authenticate
  TOKEN=$(make -s token)                         # or: make -s token SUB=bob SCOPE="orders:write" TTL=60
  curl -s -H "authorization: Bearer $TOKEN" -H "x-user-id: forged" localhost:10000/api/orders
                                                 # 200: the upstream sees x-user-id from the token
  curl -s localhost:9901/stats | grep tollgate   # decisions and token-cache counters

Policy: policies/demo.json. Ctrl-C stops the demo.
"""

MESH_HELP = """
Tollgate mesh example: mutual TLS on https://localhost:10000 (client certificate required) and
https://localhost:10443 (requested only), admin http://127.0.0.1:9901, echo upstream on :10001.
Certificates in target/mesh (envoy/tools/mesh_certs.py). Try, in another terminal:

  cd target/mesh
  curl -s --cacert ca.pem --cert frontend.pem --key frontend.key \\
       -H "authorization: Bearer $(make -s -C ../.. token)" https://localhost:10000/orders/7
                                        # 200: upstream sees x-tollgate-principal and x-tollgate-peer
  curl -s --cacert ca.pem --cert staging.pem --key staging.key \\
       -H "authorization: Bearer $(make -s -C ../.. token)" https://localhost:10000/orders/7
                                        # 403 peer_not_allowed: another trust domain
  curl -s --cacert ca.pem --cert ops.pem --key ops.key https://localhost:10000/internal/metrics
                                        # 200: the ops workload needs no token
  curl -s --cacert ca.pem https://localhost:10443/orders/7
                                        # 403 client_certificate_required
  curl -s --cacert ca.pem --cert expired.pem --key expired.key https://localhost:10443/health
                                        # handshake refused by Envoy: never reaches Tollgate

Policy: policies/mesh.json. Ctrl-C stops the example.
"""


def envoy_binary() -> str:
    venv = os.path.join(os.path.dirname(sys.executable), "envoy")
    return venv if os.path.exists(venv) else (shutil.which("envoy") or "envoy")


def main() -> int:
    config = sys.argv[1] if len(sys.argv) > 1 else "target/demo/envoy.yaml"
    upstream = serve(10001)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    proc = subprocess.Popen([envoy_binary(), "-c", config, "--log-level", "warn", "--component-log-level", "wasm:info", "--disable-hot-restart"])
    print(MESH_HELP if sys.argv[2:] == ["mesh"] else HELP, flush=True)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGTERM)
        return proc.wait()
    finally:
        upstream.shutdown()


if __name__ == "__main__":
    sys.exit(main())
