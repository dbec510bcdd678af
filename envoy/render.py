#!/usr/bin/env python3
"""Renders an Envoy config template from envoy/ with a Tollgate policy embedded.

    envoy/render.py TEMPLATE POLICY OUT [--as struct|string] [--set NAME=VALUE ...]

The policy (a JSON file) becomes the Wasm filter's `configuration`: a google.protobuf.Struct by
default (the policy reads as YAML in the Envoy config), or a StringValue holding the JSON text
(what Istio's WasmPlugin delivers for `pluginConfig`). The filter accepts both.
Placeholders not given with --set take the demo defaults below.
"""
import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULTS = {
    "LISTEN_PORT": "10000",
    "ADMIN_PORT": "9901",
    "UPSTREAM_PORT": "10001",
    "JWKS_PORT": "10002",
    # The rate-limit service of `global` limits (envoyproxy/ratelimit's gRPC port is 8081).
    "RLS_PORT": "10003",
    # Loopback: the demo and the tests are reachable from this machine only. In a container the
    # listener must bind every interface to be reachable through a published port
    # (envoy/docker-compose.yaml sets 0.0.0.0 and publishes on the host's loopback).
    "BIND_ADDRESS": "127.0.0.1",
    "WASM": os.path.join(ROOT, "target/wasm32-wasip1/release/tollgate.wasm"),
    # envoy/mesh.yaml only: the listener that only requests client certificates, and the
    # certificates `make run-mesh` writes with envoy/tools/mesh_certs.py.
    "EDGE_PORT": "10443",
    "TLS_CERT": os.path.join(ROOT, "target/mesh/server.pem"),
    "TLS_KEY": os.path.join(ROOT, "target/mesh/server.key"),
    "TLS_CA": os.path.join(ROOT, "target/mesh/ca.pem"),
}


def render(template: str, policy_text: str, as_type: str, values: dict) -> str:
    if as_type == "struct":
        policy = json.loads(policy_text)  # a Struct must be a JSON object; fails loudly otherwise
        config = {"@type": "type.googleapis.com/google.protobuf.Struct", "value": policy}
    else:
        # Passed as-is: the filter itself reports a policy that is not JSON.
        config = {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": policy_text}
    # The template's own placeholders first, and only then the policy: a policy may hold `@@`
    # itself (GitHub's OpenAPI description quotes diff hunks, `@@ -1,7 +1,7 @@`), which must
    # neither be filled in nor be taken for a placeholder left unfilled.
    out = template
    for name, value in {**DEFAULTS, **values}.items():
        out = out.replace(f"@@{name}@@", json.dumps(value) if name == "WASM" else str(value))
    rest = out.replace("@@POLICY@@", "")
    if "@@" in rest:
        missing = sorted({part.split("@@")[0] for part in rest.split("@@")[1::2]})
        raise SystemExit(f"render.py: unfilled placeholders: {missing}")
    # JSON is YAML: the flow mapping drops into the template as one line.
    return out.replace("@@POLICY@@", json.dumps(config))


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("template")
    p.add_argument("policy")
    p.add_argument("out")
    p.add_argument("--as", dest="as_type", choices=["struct", "string"], default="struct")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    args = p.parse_args(argv)
    values = dict(kv.split("=", 1) for kv in args.set)
    with open(args.template) as f:
        template = f.read()
    with open(args.policy) as f:
        policy_text = f.read()
    text = render(template, policy_text, args.as_type, values)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main(sys.argv[1:])
