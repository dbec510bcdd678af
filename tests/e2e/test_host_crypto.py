"""Token signatures checked by Envoy's BoringSSL (the `verify_signature` foreign function) and by
Tollgate's own code give the same verdicts: one corpus of RS256/384/512 and ES256/384/512 tokens
(valid, tampered, signatures of the wrong length, out of range, high-S, non-canonical base64,
headers jwt-simple refuses) is sent to two Envoys whose policies differ only in
`signature_verification` (`auto`: the host's crypto; `builtin`: Tollgate's). The counter
`tollgate.jwt.host_signatures` shows which one did the work."""
import base64
import json

import pytest

import tokens
from harness import Envoy, request

ALGS = ["RS256", "RS384", "RS512", "ES256", "ES384", "ES512"]
# Curve orders (SEC 2 / FIPS 186-4) and coordinate sizes, for signatures at the edge of range.
ORDER = {
    "ES256": (0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551, 32),
    "ES384": (int("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973", 16), 48),
    "ES512": ((1 << 521) - 0x5AE79787C40D069948033FEB708F65A2FC44A36477663B851449048E16EC79BF7, 66),
}
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def policy(mode):
    return {
        "signature_verification": mode,
        "token_cache": {"max_entries": 0},
        "providers": {"main": {"issuer": tokens.ISSUER, "audiences": [tokens.AUDIENCE], "algorithms": ALGS,
                               "jwks": {"keys": [tokens.public_jwk(k) for k in ("rsa-1", "rsa-2", "ec256", "ec384", "ec521")]}}},
        "routes": [{"name": "api", "prefix": "/api/", "providers": ["main"]}],
    }


def b64d(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def corpus():
    out = []
    for alg in ALGS:
        good = tokens.mint(alg)
        head, payload, sig_b64 = good.split(".")
        sig = b64d(sig_b64)
        body = f"{head}.{payload}"
        forged = tokens.b64u(json.dumps(tokens.claims(sub="mallory")).encode())
        out += [
            (f"{alg} valid", good),
            (f"{alg} payload changed", f"{head}.{forged}.{sig_b64}"),
            (f"{alg} signature a byte short", f"{body}.{tokens.b64u(sig[:-1])}"),
            (f"{alg} signature a byte long", f"{body}.{tokens.b64u(sig + bytes(1))}"),
            (f"{alg} signature all zero", f"{body}.{tokens.b64u(bytes(len(sig)))}"),
            (f"{alg} signature all ones", f"{body}.{tokens.b64u(bytes([255]) * len(sig))}"),
            (f"{alg} signature with padding", f"{body}.{sig_b64}=="),
            (f"{alg} signature empty", f"{body}."),
            (f"{alg} salt that is not base64", tokens.mint(alg, headers={"salt": "!!"})),
            (f"{alg} cty that is not a string", tokens.mint(alg, headers={"cty": 5})),
        ]
        if len(sig) % 3:
            # The last character carries unused bits; setting one gives the same bytes to a lax
            # decoder and an error to a strict one.
            last = B64[B64.index(sig_b64[-1]) | 1]
            if last != sig_b64[-1]:
                out.append((f"{alg} signature with non-canonical base64", f"{body}.{sig_b64[:-1]}{last}"))
        if alg.startswith("RS"):
            out.append((f"{alg} signed by another key", tokens.mint(alg, kid="rsa-1", signing_kid="rsa-2")))
        else:
            n, size = ORDER[alg]
            r, s = sig[:size], int.from_bytes(sig[size:], "big")
            out += [
                (f"{alg} high-S twin of a valid signature", f"{body}.{tokens.b64u(r + (n - s).to_bytes(size, 'big'))}"),
                (f"{alg} r = 0", f"{body}.{tokens.b64u(bytes(size) + sig[size:])}"),
                (f"{alg} s = n", f"{body}.{tokens.b64u(r + n.to_bytes(size, 'big'))}"),
                (f"{alg} s = n + s", f"{body}.{tokens.b64u(r + ((n + s) % (1 << (8 * size))).to_bytes(size, 'big'))}"),
            ]
    return out


CORPUS = corpus()


@pytest.fixture(scope="module")
def envoys(upstream):
    auto = Envoy(policy("auto"), upstream.port, concurrency=1).wait_ready()
    builtin = Envoy(policy("builtin"), upstream.port, concurrency=1).wait_ready()
    yield auto, builtin
    auto.stop()
    builtin.stop()


def verdict(envoy, token):
    resp = request(envoy.url("/api/x"), headers={"authorization": f"Bearer {token}"})
    if resp.status == 200:
        return 200, None
    return resp.status, resp.json().get("type")


def test_host_and_builtin_checks_agree_on_every_token(envoys):
    auto, builtin = envoys
    before = auto.stats().get("tollgate.jwt.host_signatures", 0)
    differ, verdicts = [], {}
    for name, token in CORPUS:
        a, b = verdict(auto, token), verdict(builtin, token)
        verdicts[name] = a
        if a != b:
            differ.append(f"{name}: host {a}, builtin {b}")
    assert not differ, "\n".join(differ)
    # The corpus is not all one verdict: valid tokens pass and forgeries fail in both.
    for alg in ALGS:
        assert verdicts[f"{alg} valid"] == (200, None), verdicts
        assert verdicts[f"{alg} payload changed"] == (401, "urn:tollgate:problem:signature_invalid"), verdicts
    assert verdicts["RS256 signed by another key"][0] == 401
    # Headers jwt-simple refuses are refused for every algorithm, ES512 (not jwt-simple's) included.
    for alg in ALGS:
        for case in ("salt that is not base64", "cty that is not a string"):
            assert verdicts[f"{alg} {case}"] == (401, "urn:tollgate:problem:token_malformed"), (alg, case)
    # The host did the work in one Envoy and never in the other.
    used = auto.stats().get("tollgate.jwt.host_signatures", 0) - before
    assert used >= len(ALGS) * 4, used
    assert builtin.stats().get("tollgate.jwt.host_signatures", 0) == 0
    assert "no working `verify_signature`" not in auto.logs()
