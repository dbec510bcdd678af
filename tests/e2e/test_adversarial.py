"""Adversarial end-to-end suite (issue 13): every authorization, identity-header, body and response
check of Tollgate, run in a real Envoy over every protocol a client can pick, with the spellings
ordinary clients normalise away.

What it proves: no choice of protocol (HTTP/1.1, HTTP/2 cleartext and over TLS, HTTP/3), body
framing (content-length, chunked, chunked with trailers, many small writes; one DATA frame, many,
DATA without END_STREAM followed by trailers), header spelling (case, underscores, repeated or
decorated hosts, forged X-Forwarded-For, method/URL override headers), token time claims, percent-
encoded owner ids, or upstream behaviour (trailers, compression, bodies that cannot be checked)
gets a request or a response past what tests/e2e/adversarial_policy.json says. Each case is one
that got through an earlier module or template (the findings of issue 13) or a variant of one. A
refusal is checked for its status, `application/problem+json` and code (Envoy's own local replies
too, which the template renders as problem+json; an HTTP/2 or HTTP/3 reset has neither), and a
request that must not reach the upstream is looked up in the recording upstream by its `x-probe`
header.

    .venv/bin/python -m pytest tests/e2e/test_adversarial.py -q

It needs the built module (`make build`). Two Envoys are started for the whole module: the first
with the policy minus its `on_unchecked: pass` routes (listeners: the template's, TLS with ALPN
h2/http1.1, QUIC, and a permissive cleartext one), the second with the whole policy, for the
`on_unchecked: pass` cases only - so that everything else also runs against a module from before
`on_unchecked` existed. `ADVERSARIAL_WASM` and `ADVERSARIAL_TEMPLATE` point the suite at another
module or Envoy template (to show a case fails before a fix). HTTP/3 cases are skipped, with the
reason, when the QUIC listener does not answer.
"""
import functools
import gzip
import json
import os
import time
import uuid
import zlib

import jwt
import pytest

import harness
from rawclient import Reply, ScriptedUpstream, adversarial_bootstrap, free_udp_port, http1, http2, http3

from tokens import DEMO_AUDIENCE as AUDIENCE, DEMO_ISSUER as ISSUER, DEMO_KID as KID

WASM = os.environ.get("ADVERSARIAL_WASM", harness.WASM)
TEMPLATE = os.environ.get("ADVERSARIAL_TEMPLATE", harness.TEMPLATE)
POLICY_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "adversarial_policy.json")
with open(os.path.join(harness.ROOT, "envoy/demo/demo-signing-key.pem"), "rb") as f:
    DEMO_KEY = f.read()

API_HOST = "api.example.test"
ADMIN_HOST = "admin.example.test"
PROBLEM = "application/problem+json"
SECRET = b"hunter2"  # the sensitive field's value in every scripted upstream response
PROTECTED = ("x-tollgate-principal", "x-user-id")  # the identity header and the forwarded claim's

PROTOCOLS = ["h1", "h2c", "h2tls", "h3"]
# Body framings per client protocol. `h1lax` is the permissive listener (HTTP/1 trailers passed
# on to the filter), standing for a user's Envoy that differs from the template.
FRAMINGS = {
    "h1": ["cl", "split", "chunked", "chunked_trailers"],
    "h1lax": ["chunked_trailers"],
    "h2c": ["end", "end_empty", "split", "trailers", "split_trailers"],
    "h2tls": ["end", "split", "trailers", "split_trailers"],
    "h3": ["end", "split", "trailers"],
}
BODY_MATRIX = [(p, f) for p, fs in FRAMINGS.items() for f in fs]


# ------------------------------------------------------------------------------------------------
# Tokens: signed raw, so time claims can be any JSON text (`1e30`, `-1`, `"123"`).


def sign(payload_text):
    return jwt.PyJWS().encode(payload_text.encode(), DEMO_KEY, algorithm="ES256", headers={"kid": KID})


def token(sub="alice", scope="", times=None):
    """A correctly signed token; `times` maps `exp`/`nbf`/`iat` to raw JSON text (defaults: valid)."""
    now = int(time.time())
    t = {"iat": str(now), "exp": str(now + 600), **(times or {})}
    members = [f'"iss": {json.dumps(ISSUER)}', f'"aud": {json.dumps(AUDIENCE)}', f'"sub": {json.dumps(sub)}']
    members += [f'"{k}": {v}' for k, v in t.items() if v is not None]
    if scope:
        members.append(f'"scope": {json.dumps(scope)}')
    return sign("{" + ", ".join(members) + "}")


def bearer(tok):
    return [("authorization", f"Bearer {tok}")]


# ------------------------------------------------------------------------------------------------
# The scripted upstream's responses for the response checks.

USER = {"id": 7, "name": "alice", "password": SECRET.decode()}
USER_JSON = json.dumps(USER).encode()
INVALID_USER_JSON = json.dumps({"name": 5, "password": SECRET.decode()}).encode()
JSON_HEADERS = [("content-type", "application/json")]


def nested(depth):
    return b'{"id": 1, "password": "hunter2", "x": ' + b"[" * depth + b"]" * depth + b"}"


# Responses that cannot be checked, so block and redact must refuse them (502 response_unchecked).
UNCHECKABLE = {
    "surrogate": Reply(200, JSON_HEADERS, b'{"id": 1, "name": "\\ud800", "password": "hunter2"}'),
    "deep": Reply(200, JSON_HEADERS, nested(40)),  # policy max_depth: 16
    "bom": Reply(200, JSON_HEADERS, b"\xef\xbb\xbf" + USER_JSON),
    "xssi": Reply(200, JSON_HEADERS, b")]}'\n" + USER_JSON),
    "not_json": Reply(200, JSON_HEADERS, b"<html>password: hunter2</html>"),
    # Route max_body_bytes: 2048.
    "too_large": Reply(200, JSON_HEADERS, json.dumps({**USER, "pad": "x" * 4000}).encode()),
    "too_large_chunked": Reply(200, JSON_HEADERS, json.dumps({**USER, "pad": "x" * 4000}).encode(), chunked=True),
}
# The upstream ignores the (removed) accept-encoding and compresses anyway. br and zstd: a magic
# number and the plain JSON - any bytes do, Tollgate must not read them as JSON either way.
ENCODED = {
    "gzip": gzip.compress(USER_JSON),
    "deflate": zlib.compress(USER_JSON),
    "br": b"\x8b\x03\x80" + USER_JSON + b"\x03",
    "zstd": b"\x28\xb5\x2f\xfd" + USER_JSON,
}
COMPRESSED = {f"encoded_{c}": Reply(200, JSON_HEADERS + [("content-encoding", c)], body) for c, body in ENCODED.items()}
OTHER_REPLIES = {
    "valid": Reply(200, JSON_HEADERS, USER_JSON),
    "identity": Reply(200, JSON_HEADERS + [("content-encoding", "identity")], USER_JSON),
    "trailers_invalid": Reply(200, JSON_HEADERS, INVALID_USER_JSON, trailers=[("x-upstream-check", "1")]),
    "trailers_valid": Reply(200, JSON_HEADERS, USER_JSON, trailers=[("x-upstream-check", "1")]),
}
MODES = ["block", "redact", "report", "pass-block", "pass-redact"]


def script(upstream):
    for mode in MODES:
        for case, reply in {**UNCHECKABLE, **COMPRESSED, **OTHER_REPLIES}.items():
            upstream.reply(f"/resp/{mode}/{case}", reply)


# ------------------------------------------------------------------------------------------------
# Fixtures


class Stack:
    """One Envoy with the suite's listeners, and the upstream behind it."""

    def __init__(self, policy, upstream):
        self.upstream = upstream
        self.ports = {"tls": harness.free_port(), "quic": free_udp_port(), "lax": harness.free_port()}
        self.envoy = harness.Envoy.from_bootstrap(
            lambda e: adversarial_bootstrap(e, policy, upstream.port, WASM, self.ports, TEMPLATE), upstream.port)
        self.envoy.wait_ready()
        try:
            probe = http3(self.ports["quic"], "GET", "/health", API_HOST, [], timeout=5)
        except BaseException:
            self.envoy.stop()
            raise
        self.h3_error = None
        if probe.status != 200:
            self.h3_error = f"the QUIC listener on UDP {self.ports['quic']} did not answer GET /health: {probe!r}"

    def send(self, proto, method, path, headers=(), body=None, framing=None, host=API_HOST, pseudo=None,
             trailers=()):
        """Sends one request; returns (result, probe). `proto`: h1, h2c, h2tls, h3, or h1lax /
        h2clax for the permissive listener. `host` is the Host header (HTTP/1.1) or `:authority`;
        None leaves it out (HTTP/1.1). The probe (`x-probe`) finds the request upstream."""
        probe = uuid.uuid4().hex
        headers = list(headers) + [("x-probe", probe)]
        if proto in ("h1", "h1lax"):
            port = self.envoy.port if proto == "h1" else self.ports["lax"]
            if host is not None:
                headers = [("host", host)] + headers
            res = http1(port, method, path, headers, body, framing or "cl", trailers)
        elif proto in ("h2c", "h2tls", "h2clax"):
            port = {"h2c": self.envoy.port, "h2tls": self.ports["tls"], "h2clax": self.ports["lax"]}[proto]
            res = http2(port, method, path, host, headers, body, framing or "end", trailers, tls=proto == "h2tls",
                        pseudo=pseudo)
        elif proto == "h3":
            if self.h3_error:
                pytest.skip(f"HTTP/3: {self.h3_error}")
            res = http3(self.ports["quic"], method, path, host, headers, body, framing or "end", trailers,
                        pseudo=pseudo)
        else:
            raise ValueError(proto)
        return res, probe

    def delivered(self, probe):
        return self.upstream.by_probe(probe)

    def stop(self):
        self.envoy.stop()


def load_policy():
    with open(POLICY_PATH) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def scripted():
    u = ScriptedUpstream()
    script(u)
    yield u
    u.stop()


@pytest.fixture(scope="module")
def stack(scripted):
    policy = load_policy()
    policy["routes"] = [r for r in policy["routes"] if "on_unchecked" not in r.get("response", {})]
    s = Stack(policy, scripted)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def pass_stack(scripted):
    s = Stack(load_policy(), scripted)
    yield s
    s.stop()


# ------------------------------------------------------------------------------------------------
# Assertions


def assert_problem(res, status, code=None):
    assert res.status == status, res
    assert res.header("content-type") == PROBLEM, res
    if code:
        assert res.problem_code() == code, res


def assert_refused(stack, res, probe, status=400, code=None):
    """Refused before the upstream: by Tollgate (`status`, problem+json, `code`), by Envoy's own
    local reply (`status`, problem+json through the template's `local_reply_config`, type
    `about:blank`), or by Envoy's HTTP/2 or HTTP/3 codec (a reset stream or connection, which has
    no status to check)."""
    assert not stack.delivered(probe), f"reached the upstream: {stack.delivered(probe)}"
    if res.status is None:
        assert res.reset, res
        return
    assert_problem(res, status)
    if res.problem_code() is not None and code:  # Tollgate's own refusal
        assert res.problem_code() == code, res


def folds_to_protected(name):
    """How CGI/WSGI/PHP/Rack read a header name: case and `_`/`-` do not count."""
    return name.lower().replace("_", "-") in PROTECTED


# ------------------------------------------------------------------------------------------------
# Finding 1 and the duplicate-key hardening: request bodies, in every framing.

ORDER_OK = b'{"item": "pen", "quantity": 2}'
BAD_BODIES = {
    "schema_break": (b'{"item": "", "quantity": "lots"}', 422, "request_invalid"),
    "mass_assignment": (b'{"item": "pen", "quantity": 1, "is_admin": true}', 422, "request_invalid"),
    "not_json": (b'{"item": "pen", "quantity": 1', 400, "body_malformed"),
    "deep_5000": (b"[" * 5000 + b"]" * 5000, 400, "body_malformed"),
    "duplicate_keys": (b'{"item": "pen", "quantity": "bad", "quantity": 1}', 400, "body_malformed"),
    # Compressed: Tollgate cannot judge what an upstream that inflates request bodies would read.
    "gzip_encoded": (gzip.compress(b'{"item": "pen", "quantity": 1, "is_admin": true}'), 400, "body_malformed"),
}
BODY_HEADERS = {"gzip_encoded": [("content-encoding", "gzip")]}
@functools.lru_cache(maxsize=1)
def writer_token():
    return token(scope="orders:write")  # valid for 10 minutes, longer than the suite runs


def writer():
    return bearer(writer_token()) + [("content-type", "application/json")]


@pytest.mark.parametrize("case", list(BAD_BODIES))
@pytest.mark.parametrize("proto,framing", BODY_MATRIX)
def test_bad_body_is_refused_in_every_framing(stack, proto, framing, case):
    body, status, code = BAD_BODIES[case]
    res, probe = stack.send(proto, "POST", "/orders", writer() + BODY_HEADERS.get(case, []), body, framing)
    assert_problem(res, status, code)
    assert not stack.delivered(probe), "the upstream received the body"


@pytest.mark.parametrize("proto,framing", BODY_MATRIX)
def test_valid_body_reaches_the_upstream_whole(stack, proto, framing):
    """The control for the refusals above: the same framing delivers a valid body intact."""
    res, probe = stack.send(proto, "POST", "/orders", writer(), ORDER_OK, framing)
    assert res.status == 200, res
    seen = stack.delivered(probe)
    assert len(seen) == 1 and seen[0].body == ORDER_OK, seen


# ------------------------------------------------------------------------------------------------
# Authorization and identity over every protocol, finding 9 (owner ids) and finding 7 (time claims).

ODD_SUB = "x\ufffd"
# An owner id that is not UTF-8 once decoded may be refused as a path (400 path_invalid) or by the
# owner check (403 forbidden); what matters is that `%FF` and `%FE` are not read as U+FFFD.
NOT_UTF8 = ((403, "forbidden"), (400, "path_invalid"))
AUTHZ = {
    # name: (path, token() arguments or None for no token, want status, want code)
    "no_token": ("/users/alice", None, 401, "token_missing"),
    "other_owner": ("/users/bob", {"sub": "alice"}, 403, "forbidden"),
    "owner_invalid_utf8_ff": ("/users/x%FF", {"sub": ODD_SUB}, NOT_UTF8, None),
    "owner_invalid_utf8_fe": ("/users/x%FE", {"sub": ODD_SUB}, NOT_UTF8, None),
    "owner_escape_is_not_literal": ("/users/x%FF", {"sub": "x%FF"}, NOT_UTF8, None),
    "owner_alice": ("/users/alice", {"sub": "alice"}, 200, None),
    "owner_exact_utf8": ("/users/x%EF%BF%BD", {"sub": ODD_SUB}, 200, None),
    "admin_host_needs_token": ("/anything", None, 401, "token_missing"),
}


@pytest.mark.parametrize("case", list(AUTHZ))
@pytest.mark.parametrize("proto", PROTOCOLS)
def test_authorization(stack, proto, case):
    path, tok, status, code = AUTHZ[case]
    host = ADMIN_HOST if case.startswith("admin_host") else API_HOST
    headers = bearer(token(**tok)) if tok else []
    res, probe = stack.send(proto, "GET", path, headers, host=host)
    if status == 200:
        assert res.status == 200, res
        seen = stack.delivered(probe)
        assert len(seen) == 1, seen
        assert seen[0].header("x-tollgate-principal") == f"jwt:corp:{tok['sub']}"
        assert "authorization" not in seen[0].names(), "the token is stripped"
        return
    if isinstance(status, tuple):
        assert (res.status, res.problem_code()) in status, res
        status, code = res.status, res.problem_code()
    assert_problem(res, status, code)
    assert not stack.delivered(probe)


def test_insufficient_scope_over_h2_trailers(stack):
    """Authorization is decided on the headers, whatever the body's framing."""
    headers = bearer(token(scope="orders:read")) + [("content-type", "application/json")]
    res, probe = stack.send("h2c", "POST", "/orders", headers, ORDER_OK, "trailers")
    assert_problem(res, 403, "insufficient_scope")
    assert not stack.delivered(probe)


BAD_TIMES = {"minus_one": "-1", "large_negative": "-9999999999", "huge": "1e30", "fraction": "1.5",
             "string": '"123"'}


@pytest.mark.parametrize("value", list(BAD_TIMES))
@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("proto", PROTOCOLS)
def test_token_time_claims_must_be_sane_numbers(stack, proto, claim, value):
    tok = token(times={claim: BAD_TIMES[value]})
    res, probe = stack.send(proto, "GET", "/users/alice", bearer(tok))
    assert_problem(res, 401)
    assert not stack.delivered(probe)


# ------------------------------------------------------------------------------------------------
# Finding 5: identity headers in every spelling.

UNDERSCORE_NAMES = ["x_tollgate_principal", "x_user_id", "X_Tollgate_Principal", "x-tollgate_principal"]


@pytest.mark.parametrize("name", UNDERSCORE_NAMES)
@pytest.mark.parametrize("proto", PROTOCOLS)
def test_underscore_spellings_are_refused_by_the_template(stack, proto, name):
    """`headers_with_underscores_action: REJECT_REQUEST`: HTTP/1 400, HTTP/2 and HTTP/3 a reset
    (or 400). Either way the forged identity never reaches the upstream."""
    res, probe = stack.send(proto, "GET", "/public/echo", [(name, "jwt:corp:root")])
    assert_refused(stack, res, probe)


@pytest.mark.parametrize("proto,name", [("h1lax", n) for n in UNDERSCORE_NAMES]
                         # HTTP/2 forbids uppercase names (test_uppercase_names_are_refused_over_h2_h3).
                         + [("h2clax", n) for n in UNDERSCORE_NAMES if n == n.lower()])
def test_underscore_spellings_are_removed_where_envoy_allows_them(stack, proto, name):
    """On a listener that lets underscore names through (a user's own Envoy config), the filter
    itself removes every name an upstream framework would fold into a protected one."""
    res, probe = stack.send(proto, "GET", "/public/echo", [(name, "jwt:corp:root")])
    assert res.status == 200, res
    (seen,) = stack.delivered(probe)
    assert not [k for k in seen.names() if folds_to_protected(k)], seen.headers


@pytest.mark.parametrize("proto", ["h1lax", "h2clax"])
def test_underscore_spelling_cannot_shadow_the_verified_identity(stack, proto):
    headers = bearer(token(sub="alice")) + [("x_tollgate_principal", "jwt:corp:root"), ("x_user_id", "root")]
    res, probe = stack.send(proto, "GET", "/users/alice", headers)
    assert res.status == 200, res
    (seen,) = stack.delivered(probe)
    folded = [(k, v) for k, v in seen.headers if folds_to_protected(k)]
    assert sorted(folded) == [("x-tollgate-principal", "jwt:corp:alice"), ("x-user-id", "alice")], seen.headers


@pytest.mark.parametrize("name", ["X-TOLLGATE-PRINCIPAL", "X-Tollgate-Principal", "x-tollgate-principal",
                                  "X-USER-ID", "x-user-id"])
def test_dash_spellings_in_any_case_are_removed_over_h1(stack, name):
    res, probe = stack.send("h1", "GET", "/public/echo", [(name, "jwt:corp:root")])
    assert res.status == 200, res
    (seen,) = stack.delivered(probe)
    assert not [k for k in seen.names() if folds_to_protected(k)], seen.headers


@pytest.mark.parametrize("proto", ["h2c", "h2tls", "h3"])
@pytest.mark.parametrize("name", ["x-tollgate-principal", "x-user-id"])
def test_dash_spellings_are_removed_over_h2_h3(stack, proto, name):
    res, probe = stack.send(proto, "GET", "/public/echo", [(name, "jwt:corp:root")])
    assert res.status == 200, res
    (seen,) = stack.delivered(probe)
    assert not [k for k in seen.names() if folds_to_protected(k)], seen.headers


@pytest.mark.parametrize("proto", ["h2c", "h2tls", "h3"])
@pytest.mark.parametrize("name", ["X-Tollgate-Principal", "X-USER-ID"])
def test_uppercase_names_are_refused_over_h2_h3(stack, proto, name):
    """HTTP/2 and HTTP/3 forbid uppercase names; Envoy must not pass them on in any form."""
    res, probe = stack.send(proto, "GET", "/public/echo", [(name, "jwt:corp:root")])
    assert_refused(stack, res, probe)


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_identity_header_on_authenticated_route_is_the_verified_one(stack, proto):
    headers = bearer(token(sub="alice")) + [("x-tollgate-principal", "jwt:corp:root"), ("x-user-id", "root")]
    res, probe = stack.send(proto, "GET", "/users/alice", headers)
    assert res.status == 200, res
    (seen,) = stack.delivered(probe)
    folded = [(k, v) for k, v in seen.headers if folds_to_protected(k)]
    assert sorted(folded) == [("x-tollgate-principal", "jwt:corp:alice"), ("x-user-id", "alice")], seen.headers


# ------------------------------------------------------------------------------------------------
# Hardening: method and URL override headers.

OVERRIDES = ["X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override", "X-Original-URL", "X-Rewrite-URL"]


@pytest.mark.parametrize("name", OVERRIDES)
@pytest.mark.parametrize("proto", PROTOCOLS)
def test_override_headers_never_reach_the_upstream(stack, proto, name):
    value = "/admin/delete" if "URL" in name else "DELETE"
    sent = name if proto == "h1" else name.lower()
    res, probe = stack.send(proto, "POST", "/public/echo", [(sent, value)])
    assert res.status == 200, res
    (seen,) = stack.delivered(probe)
    assert name.lower() not in seen.names(), seen.headers


# ------------------------------------------------------------------------------------------------
# Findings 6 and 8: hosts.

HOST_VARIANTS = ["admin.example.test.", "ADMIN.Example.Test", "admin.example.test:10000", "admin.example.test.:10000"]


@pytest.mark.parametrize("host", HOST_VARIANTS)
@pytest.mark.parametrize("proto", PROTOCOLS)
def test_host_spellings_are_judged_by_the_host_route(stack, proto, host):
    """The admin host's route needs a token (401); the catch-all public route would answer 200."""
    res, probe = stack.send(proto, "GET", "/anything", host=host)
    assert_problem(res, 401, "token_missing")
    assert not stack.delivered(probe)


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_other_hosts_use_the_public_route(stack, proto):
    """The control for the host cases: the catch-all route serves other hosts."""
    res, probe = stack.send(proto, "GET", "/anything", host=API_HOST)
    assert res.status == 200, res
    assert stack.delivered(probe)


@pytest.mark.parametrize("host", ["admın.example.test", "ädmin.example.test"])
@pytest.mark.parametrize("proto", PROTOCOLS)
def test_non_ascii_host_is_refused(stack, proto, host):
    """Envoy 1.40's codecs refuse these before any filter (HTTP/1 400, HTTP/2 connection reset,
    HTTP/3 `http3.invalid_header_field`); Tollgate's own check (`request_ambiguous`) is the
    second line for a codec that lets them through."""
    res, probe = stack.send(proto, "GET", "/anything", host=host)
    assert_refused(stack, res, probe, 400, "request_ambiguous")


@pytest.mark.parametrize("hosts", [(API_HOST, ADMIN_HOST), (ADMIN_HOST, API_HOST), (API_HOST, API_HOST + ".evil")])
def test_two_host_headers_over_h1_are_ambiguous(stack, hosts):
    headers = [("host", h) for h in hosts]
    res, probe = stack.send("h1", "GET", "/anything", headers, host=None)
    assert_problem(res, 400, "request_ambiguous")
    assert not stack.delivered(probe)


def pseudo(proto, authorities, path="/anything"):
    scheme = "http" if proto == "h2c" else "https"
    return [(":method", "GET"), (":scheme", scheme)] + [(":authority", a) for a in authorities] + [(":path", path)]


@pytest.mark.parametrize("proto", ["h2c", "h2tls", "h3"])
def test_two_authorities_over_h2_h3_are_refused(stack, proto):
    res, probe = stack.send(proto, "GET", "/anything", pseudo=pseudo(proto, [API_HOST, ADMIN_HOST]))
    assert_refused(stack, res, probe, 400, "request_ambiguous")


@pytest.mark.parametrize("proto", ["h2c", "h2tls", "h3"])
def test_authority_and_other_host_header_over_h2_h3(stack, proto):
    """`:authority` of the public host plus `host: admin...`. Refused, or judged and delivered as
    the one host: Envoy 1.40 drops an HTTP/2 `host` header next to `:authority` before any filter
    (runtime `envoy.reloadable_features.http2_discard_host_header`), and QUIC refuses the request."""
    res, probe = stack.send(proto, "GET", "/anything", [("host", ADMIN_HOST)],
                            pseudo=pseudo(proto, [API_HOST]))
    if res.status == 200:
        (seen,) = stack.delivered(probe)
        assert [v for k, v in seen.headers if k.lower() in ("host", ":authority")] == [API_HOST], seen.headers
        assert ADMIN_HOST not in json.dumps(seen.headers), seen.headers
    else:
        assert_refused(stack, res, probe, 400, "request_ambiguous")


@pytest.mark.parametrize("proto", ["h2c", "h2tls", "h3"])
def test_admin_authority_with_public_host_header_over_h2_h3(stack, proto):
    """The reverse: never served as the public host."""
    res, probe = stack.send(proto, "GET", "/anything", [("host", API_HOST)], pseudo=pseudo(proto, [ADMIN_HOST]))
    assert not stack.delivered(probe)
    if res.status == 401:
        assert_problem(res, 401, "token_missing")
    else:
        assert_refused(stack, res, probe, 400, "request_ambiguous")


# ------------------------------------------------------------------------------------------------
# Finding 2: a client's X-Forwarded-For is never its address.

XFF = ["203.0.113.7", "203.0.113.8, 198.51.100.9"]


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_forwarded_for_gets_no_fresh_rate_limit_bucket(stack, proto):
    bucket = [("x-bucket", uuid.uuid4().hex)]
    statuses = [stack.send(proto, "GET", "/limited", bucket)[0].status for _ in range(3)]
    assert statuses == [200, 200, 429], statuses
    for xff in XFF:
        res, probe = stack.send(proto, "GET", "/limited", bucket + [("x-forwarded-for", xff)])
        assert_problem(res, 429, "rate_limited")
        assert not stack.delivered(probe)
    logs = stack.envoy.logs()
    assert '"client_ip":"203.0.113.' not in logs, "the audit log believed x-forwarded-for"


@pytest.mark.parametrize("xff", ["10.1.2.3", "192.0.2.1, 10.1.2.3", None])
@pytest.mark.parametrize("proto", PROTOCOLS)
def test_forwarded_for_does_not_pass_an_ip_allow_list(stack, proto, xff):
    headers = [("x-forwarded-for", xff)] if xff else []
    res, probe = stack.send(proto, "GET", "/internal", headers)
    assert_problem(res, 403, "ip_denied")
    assert not stack.delivered(probe)


# ------------------------------------------------------------------------------------------------
# Findings 1 (responses with trailers), 3 (compression) and 4 (responses that cannot be checked).

def get_response(stack, proto, mode, case, headers=()):
    res, probe = stack.send(proto, "GET", f"/resp/{mode}/{case}", headers)
    assert len(stack.delivered(probe)) == 1, "the request itself must reach the upstream"
    return res, probe


def assert_no_secret(res):
    assert SECRET not in res.body, res
    for inflate in (gzip.decompress, zlib.decompress):
        try:
            assert SECRET not in inflate(res.body), res
        except (OSError, EOFError, zlib.error):
            pass


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_response_with_trailers_is_checked(stack, proto):
    res, _ = get_response(stack, proto, "block", "trailers_invalid")
    assert_problem(res, 502, "response_invalid")
    assert_no_secret(res)
    res, _ = get_response(stack, proto, "redact", "trailers_invalid")
    assert res.status == 200, res
    assert_no_secret(res)
    res, _ = get_response(stack, proto, "redact", "trailers_valid")
    assert res.status == 200 and json.loads(res.body) == {"id": 7, "name": "alice"}, res
    res, _ = get_response(stack, proto, "report", "trailers_invalid")
    assert res.status == 200 and res.body == INVALID_USER_JSON, res


@pytest.mark.parametrize("mode", ["block", "redact", "report"])
@pytest.mark.parametrize("proto", PROTOCOLS)
def test_accept_encoding_is_removed_before_the_upstream(stack, proto, mode):
    res, probe = get_response(stack, proto, mode, "valid", [("accept-encoding", "gzip, deflate, br, zstd")])
    assert res.status == 200, res
    (seen,) = stack.delivered(probe)
    assert "accept-encoding" not in seen.names(), seen.headers


@pytest.mark.parametrize("coding", list(ENCODED))
@pytest.mark.parametrize("mode", ["block", "redact"])
@pytest.mark.parametrize("proto", PROTOCOLS)
def test_compressed_response_is_refused_in_block_and_redact(stack, proto, mode, coding):
    res, _ = get_response(stack, proto, mode, f"encoded_{coding}", [("accept-encoding", "gzip, deflate, br, zstd")])
    assert_problem(res, 502, "response_unchecked")
    assert_no_secret(res)
    assert res.header("content-encoding") in (None, "identity"), res


@pytest.mark.parametrize("coding", list(ENCODED))
@pytest.mark.parametrize("proto", PROTOCOLS)
def test_compressed_response_passes_in_report_mode(stack, proto, coding):
    res, _ = get_response(stack, proto, "report", f"encoded_{coding}")
    assert res.status == 200, res
    assert res.body == ENCODED[coding] and res.header("content-encoding") == coding, res


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_identity_coding_is_checked_normally(stack, proto):
    """The control for the compression cases: `content-encoding: identity` is plain JSON."""
    res, _ = get_response(stack, proto, "redact", "identity")
    assert res.status == 200 and json.loads(res.body) == {"id": 7, "name": "alice"}, res


@pytest.mark.parametrize("case", list(UNCHECKABLE))
@pytest.mark.parametrize("mode", ["block", "redact"])
@pytest.mark.parametrize("proto", PROTOCOLS)
def test_unchecked_response_is_refused_by_default(stack, proto, mode, case):
    res, _ = get_response(stack, proto, mode, case)
    assert_problem(res, 502, "response_unchecked")
    assert_no_secret(res)


def test_unchecked_responses_are_counted_and_logged(stack):
    before = stack.envoy.stats().get("tollgate.response.unchecked", 0)
    res, _ = get_response(stack, "h1", "redact", "surrogate")
    assert_problem(res, 502, "response_unchecked")
    assert stack.envoy.stats().get("tollgate.response.unchecked", 0) == before + 1
    lines = [l for l in stack.envoy.logs().splitlines() if "`resp-redact`" in l and "checked" in l]
    assert lines, "no log line about the unchecked response"
    assert SECRET.decode() not in "\n".join(lines)


PASS_CASES = list(UNCHECKABLE) + ["encoded_gzip", "encoded_br"]


@pytest.mark.parametrize("case", PASS_CASES)
@pytest.mark.parametrize("mode", ["pass-block", "pass-redact"])
@pytest.mark.parametrize("proto", ["h1", "h2c"])
def test_unchecked_response_passes_with_on_unchecked_pass(pass_stack, proto, mode, case):
    reply = {**UNCHECKABLE, **COMPRESSED}[case]
    res, _ = get_response(pass_stack, proto, mode, case)
    assert res.status == 200, res
    assert res.body == reply.body, res


@pytest.mark.parametrize("proto", ["h1", "h2c"])
def test_on_unchecked_pass_still_checks_what_it_can(pass_stack, proto):
    """`pass` is about responses that cannot be checked, not a way out of the checks."""
    res, _ = get_response(pass_stack, proto, "pass-block", "trailers_invalid")
    assert_problem(res, 502, "response_invalid")
    res, _ = get_response(pass_stack, proto, "pass-redact", "valid")
    assert res.status == 200 and json.loads(res.body) == {"id": 7, "name": "alice"}, res
