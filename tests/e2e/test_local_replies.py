"""Envoy's own local replies (issue 13 hardening): with the shipped template's
`local_reply_config`, a request Envoy refuses before Tollgate sees it - a `%2F` path, a fragment,
oversized headers, an underscore header name, two content lengths - gets an RFC 9457 problem body
and the security headers, like Tollgate's refusals; Tollgate's own replies are left exactly as
Tollgate wrote them (without the config they had neither)."""
import json
import socket

import pytest

from harness import Envoy

POLICY = {"routes": [{"name": "health", "path": "/health", "public": True}]}


@pytest.fixture(scope="module")
def envoy(upstream):
    e = Envoy(POLICY, upstream.port, concurrency=1).wait_ready()
    yield e
    e.stop()


def raw(port, head: bytes):
    """One HTTP/1.1 request as bytes; returns (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            top, sep, rest = data.partition(b"\r\n\r\n")
            if sep:
                length = next((int(l.split(b":", 1)[1]) for l in top.split(b"\r\n")[1:]
                               if l.lower().startswith(b"content-length:")), None)
                if length is not None and len(rest) >= length:
                    break
    top, _, body = data.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers.setdefault(k.strip().lower(), v.strip())
    return int(lines[0].split()[1]), headers, body


def request(target, extra=b""):
    return b"GET " + target + b" HTTP/1.1\r\nhost: api.test\r\nconnection: close\r\n" + extra + b"\r\n"


@pytest.mark.parametrize("name,head,status", [
    ("escaped slash", request(b"/health%2Fx"), 400),
    ("fragment", request(b"/health#x"), 400),
    ("underscore header", request(b"/health", b"x_tollgate_principal: root\r\n"), 400),
    ("two content lengths", request(b"/health", b"content-length: 1\r\ncontent-length: 2\r\n"), 400),
    ("oversized headers", request(b"/health", b"x-big: " + b"a" * 70000 + b"\r\n"), 431),
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
    got, headers, body = raw(envoy.port, request(b"/nowhere"))
    assert got == 404
    problem = json.loads(body)
    assert problem["type"] == "urn:tollgate:problem:route_not_found", problem
    assert headers.get("content-type") == "application/problem+json"
    got, headers, body = raw(envoy.port, request(b"/users/x%FF"))
    assert got == 400 and json.loads(body)["type"] == "urn:tollgate:problem:path_invalid"
