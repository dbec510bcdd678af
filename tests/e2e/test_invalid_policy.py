"""An invalid policy makes the plugin refuse to start: Envoy reports the plugin failure and the log
names each bad field. Never a panic."""
import pytest

import tokens
from harness import Envoy

CASES = [
    (
        {"providers": {"corp": {"issuer": "i", "audiences": ["a"], "algorithms": ["RS256"],
                                "jwks": {"keys": [tokens.public_jwk("rsa-1")]}}},
         "routes": [{"prefix": "/", "providers": ["auth0"]}]},
        ["policy `routes[0].providers[0]`: unknown provider `auth0`; expected one of [`corp`]"],
    ),
    (
        {"providers": {"corp": {"issuer": "", "audiences": [], "algorithms": ["none"],
                                "jwks": {"keys": [tokens.public_jwk("rsa-1")]}}},
         "routes": [{"prefix": "/", "providers": ["corp"]}]},
        ["policy `providers.corp.issuer`: must not be empty",
         "policy `providers.corp.audiences`",
         "policy `providers.corp.algorithms[0]`: `none` means unsigned tokens and is never accepted"],
    ),
    (
        {"routes": [{"prefix": "/", "public": True, "methdos": ["GET"]}]},
        ["policy `routes[0].methdos`: unknown field `methdos`, expected one of"],
    ),
    ("routes: []", ["policy: not a JSON object or protobuf Struct"]),
]


@pytest.mark.parametrize("policy,messages", CASES)
def test_invalid_policy_refuses_to_start(upstream, policy, messages):
    envoy = Envoy(policy, upstream.port)
    try:
        code = envoy.wait_exit(timeout=60)
        logs = envoy.logs()
        assert code != 0
        assert "Unable to create Wasm plugin tollgate" in logs, logs[-3000:]
        for m in messages:
            assert f"tollgate: invalid policy: {m}" in logs, logs[-3000:]
        assert "panicked" not in logs
    finally:
        envoy.stop()
