"""Request payload checks in a real Envoy with policies/orders.json: body schema (named schemas,
mass assignment), content type, size limits with and without content-length, chunked bodies,
malformed JSON, hostile nesting, path and query parameters. A refused request is answered by
Tollgate (problem+json), not by the echo upstream."""
import json
import os
import socket
import time

import pytest

from harness import ROOT, Envoy, orders_policy, raw_request
from test_authz import token

@pytest.fixture(scope="module")
def envoy(upstream):
    e = Envoy(orders_policy(), upstream.port).wait_ready()
    yield e
    e.stop()


def writer():
    return {"authorization": f"Bearer {token(scope='orders:write')}"}


def post(envoy, body, content_type="application/json", extra=None):
    headers = {**writer(), **(extra or {})}
    if content_type:
        headers["content-type"] = content_type
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return envoy.get("/orders", headers, method="POST", body=data)


def problem(resp):
    return resp.json()["type"].rsplit(":", 1)[1]


def test_valid_body_reaches_the_upstream_intact(envoy):
    order = {"item": "pen", "quantity": 3, "ship_to": {"city": "Oslo", "country": "NO"}}
    resp = post(envoy, order)
    assert resp.status == 200, resp.body
    assert json.loads(resp.json()["body"]) == order


def test_invalid_body_lists_violations_without_echoing_values(envoy):
    resp = post(envoy, {"item": "", "quantity": "secret-value-123", "ship_to": {"city": "Oslo", "country": "norway"}})
    assert resp.status == 422  # orders.json sets invalid_status: 422
    body = resp.json()
    assert body["type"] == "urn:tollgate:problem:request_invalid"
    got = sorted((v["pointer"], v["keyword"]) for v in body["violations"])
    assert got == [("/item", "minLength"), ("/quantity", "type"), ("/ship_to/country", "pattern")]
    assert b"secret-value-123" not in resp.body and b"norway" not in resp.body


def test_mass_assignment_is_refused(envoy):
    resp = post(envoy, {"item": "pen", "quantity": 1, "is_admin": True, "price": 0})
    assert resp.status == 422
    assert [v["keyword"] for v in resp.json()["violations"]] == ["additionalProperties"]


@pytest.mark.parametrize("ct", ["text/plain", "application/x-www-form-urlencoded", "application/xml", None])
def test_wrong_content_type_is_415(envoy, ct):
    resp = post(envoy, {"item": "pen", "quantity": 1}, content_type=ct)
    assert resp.status == 415 and problem(resp) == "unsupported_media_type"


def test_json_suffix_types_are_accepted(envoy):
    assert post(envoy, {"item": "pen", "quantity": 1}, content_type="application/vnd.orders+json; charset=utf-8").status == 200


def test_malformed_and_hostile_bodies_are_400(envoy):
    for body in [b"{not json", b"", b'{"item": "pen", "quantity": 1e999}', b"[" * 3000 + b"]" * 3000]:
        resp = post(envoy, body)
        assert resp.status in (400, 413), (body[:20], resp.status)
        assert problem(resp) in ("body_malformed", "payload_too_large")


def test_oversized_with_content_length_is_413_before_the_body(envoy):
    big = b'{"item": "' + b"x" * 5000 + b'", "quantity": 1}'
    resp = post(envoy, big)
    assert resp.status == 413 and problem(resp) == "payload_too_large"
    # Declared length alone decides: the client sends headers, then waits for the answer.
    with socket.create_connection(("127.0.0.1", envoy.port), timeout=10) as s:
        head = [
            "POST /orders HTTP/1.1", "host: x", f"authorization: {writer()['authorization']}",
            "content-type: application/json", "content-length: 999999", "", "",
        ]
        s.sendall("\r\n".join(head).encode())
        data = s.recv(65536)
    assert data.startswith(b"HTTP/1.1 413"), data[:100]


def chunked(envoy, chunks, pause=0.02):
    head = [
        "POST /orders HTTP/1.1", "host: x", f"authorization: {writer()['authorization']}",
        "content-type: application/json", "transfer-encoding: chunked", "connection: close", "", "",
    ]
    with socket.create_connection(("127.0.0.1", envoy.port), timeout=10) as s:
        s.sendall("\r\n".join(head).encode())
        if pause:
            for c in chunks:
                s.sendall(f"{len(c):x}\r\n".encode() + c + b"\r\n")
                time.sleep(pause)
            s.sendall(b"0\r\n\r\n")
        else:
            s.sendall(b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in chunks) + b"0\r\n\r\n")
        data = b""
        while True:
            try:
                part = s.recv(65536)
            except ConnectionResetError:  # Envoy may reset after answering early
                break
            if not part:
                break
            data += part
    return int(data.split(b" ", 2)[1]), data


def test_chunked_bodies(envoy):
    status, data = chunked(envoy, [b'{"item": "pe', b'n", "quan', b'tity": 7}'])
    assert status == 200, data[:300]
    assert b'\\"quantity\\": 7' in data
    status, data = chunked(envoy, [b'{"item": "pen", ', b'"quantity": 0}'])
    assert status == 422
    # Oversized without content-length: refused once the buffered size passes the limit.
    status, data = chunked(envoy, [b'{"item": "' + b"x" * 3000, b"y" * 3000 + b'", "quantity": 1}'], pause=0)
    assert status == 413, data[:300]


def test_path_and_query_parameters(envoy):
    reader = {"authorization": f"Bearer {token(scope='orders:read')}"}
    assert envoy.get("/orders/42", reader).status == 200
    resp = envoy.get("/orders/abc", reader)
    assert resp.status == 422 and resp.json()["violations"][0]["pointer"] == "/params/id"
    assert envoy.get("/orders?limit=50&status=open", reader).status == 200
    resp = envoy.get("/orders?limit=500&status=lost", reader)
    assert resp.status == 422
    assert sorted(v["pointer"] for v in resp.json()["violations"]) == ["/query/limit", "/query/status"]
