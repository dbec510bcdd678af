"""Envoy's own local replies (issue 13 hardening): with the shipped template's
`local_reply_config`, a request Envoy refuses before Tollgate sees it - a `%2F` path, a fragment,
oversized headers, an underscore header name, two content lengths - gets an RFC 9457 problem body
and the security headers, like Tollgate's refusals; Tollgate's own replies are left exactly as
Tollgate wrote them (without the config they had neither)."""
import json

import pytest

from harness import Envoy, raw_request

POLICY = {"routes": [{"name": "health", "path": "/health", "public": True}]}


@pytest.fixture(scope="module")
def envoy(upstream):
    e = Envoy(POLICY, upstream.port, concurrency=1).wait_ready()
    yield e
    e.stop()


def raw(port, lines):
    """One hand-written HTTP/1.1 request; returns (status, first value of each header, body)."""
    status, data = raw_request(port, lines)
    top, _, body = data.partition(b"\r\n\r\n")
    headers = {}
    for line in top.decode("latin-1").split("\r\n")[1:]:
        k, _, v = line.partition(":")
        headers.setdefault(k.strip().lower(), v.strip())
    return status, headers, body


def request(target, *extra):
    return [f"GET {target} HTTP/1.1", "host: api.test", "connection: close", *extra]


@pytest.mark.parametrize("name,head,status", [
    ("escaped slash", request("/health%2Fx"), 400),
    ("fragment", request("/health#x"), 400),
    ("underscore header", request("/health", "x_tollgate_principal: root"), 400),
    ("two content lengths", request("/health", "content-length: 1", "content-length: 2"), 400),
    ("oversized headers", request("/health", "x-big: " + "a" * 70000), 431),
])
def test_envoy_replies_are_problems(envoy, name, head, status):
    got, headers, body = raw(envoy.port, head)
    assert got == status, name
    assert headers.get("content-type") == "application/problem+json", (name, headers)
    problem = json.loads(body)
    assert problem["status"] == status and problem["type"] == "about:blank" and problem["title"], problem
    assert headers.get("x-content-type-options") == "nosniff"
    assert headers.get("cache-control") == "no-store"


def test_tollgate_replies_are_untouched(envoy):
    got, headers, body = raw(envoy.port, request("/nowhere"))
    assert got == 404
    problem = json.loads(body)
    assert problem["type"] == "urn:tollgate:problem:route_not_found", problem
    assert headers.get("content-type") == "application/problem+json"
    got, headers, body = raw(envoy.port, request("/users/x%FF"))
    assert got == 400 and json.loads(body)["type"] == "urn:tollgate:problem:path_invalid"
