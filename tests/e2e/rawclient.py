"""Clients that send requests exactly as written, and a scripted upstream, for the adversarial suite
(tests/e2e/test_adversarial.py). Ordinary client libraries normalise away the very spellings that
matter (header case, underscores, repeated hosts, trailers, how a body is split), so:

- `http1` writes HTTP/1.1 on a raw socket (optionally TLS): content-length, chunked, chunked with
  trailers, or a body split across many small writes; header names go out byte for byte.
- `http2` speaks HTTP/2 at frame level with the `h2` library's header validation and
  normalisation switched off (h2c prior knowledge, or TLS with ALPN h2): DATA frames without
  END_STREAM followed by a trailers HEADERS frame, bodies over many DATA frames, repeated
  pseudo-headers, names in any case.
- `http3` sends one request over QUIC with aioquic, with the same body framings.
- `ScriptedUpstream` is the HTTP/1.1 upstream: it records every request (names as received, body,
  trailers), answers scripted paths with a chosen status, headers, body, framing and trailers, and
  echoes every other request as JSON.
- `adversarial_bootstrap` renders envoy/tollgate.yaml and adds the listeners the suite needs (TLS,
  QUIC, and a permissive one standing for a user's own Envoy config), each with a copy of the
  template's connection manager, so every listener keeps the template's settings.
"""
import asyncio
import copy
import datetime
import ipaddress
import json
import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field

import yaml

import harness

# HTTP/2 and HTTP/3 give no status when the peer resets the stream: `status` is None then.


@dataclass
class Result:
    status: int | None
    headers: list = field(default_factory=list)  # (lowercase name, value) in order received
    body: bytes = b""
    trailers: list = field(default_factory=list)
    reset: bool = False  # the stream or connection was reset / closed without a response
    detail: str = ""  # what ended the exchange when there is no status

    def header(self, name):
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)

    def json(self):
        return json.loads(self.body)

    def problem_code(self):
        """The Tollgate problem code (`urn:tollgate:problem:<code>`), or None."""
        try:
            kind = self.json().get("type", "")
        except (ValueError, AttributeError):
            return None
        prefix = "urn:tollgate:problem:"
        return kind[len(prefix):] if kind.startswith(prefix) else None

    def __repr__(self):
        return (f"Result(status={self.status}, reset={self.reset}, detail={self.detail!r}, "
                f"headers={self.headers[:12]!r}, body={self.body[:300]!r})")


def _b(s):
    return s if isinstance(s, bytes) else str(s).encode("utf-8")


def _pieces(body: bytes, n: int):
    """`body` cut into about `n` pieces (at least one byte each)."""
    if not body:
        return []
    size = max(1, -(-len(body) // n))
    return [body[i:i + size] for i in range(0, len(body), size)]


def client_tls_context(alpn):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the test's own self-signed certificate
    ctx.set_alpn_protocols(alpn)
    return ctx


# ---------------------------------------------------------------------------------------------
# HTTP/1.1


def http1(port, method, path, headers, body=None, framing="cl", trailers=(), tls=False, timeout=10,
          pieces=24, pause=0.001):
    """One HTTP/1.1 request on a new connection, written byte for byte.

    `headers` is a list of (name, value), sent as given (add `host` yourself). `framing`: `cl`
    (content-length, one write), `split` (content-length, the body in `pieces` writes),
    `chunked` (about three chunks), `chunked_trailers` (chunked, then `trailers` - a default one
    if empty). `tls` uses TLS with ALPN http/1.1. The connection is closed after the response
    (`connection: close`)."""
    body = _b(body) if body is not None else None
    lines = [f"{method} {path} HTTP/1.1".encode()]
    for k, v in headers:
        lines.append(_b(k) + b": " + _b(v))
    if body is not None:
        if framing in ("cl", "split"):
            lines.append(b"content-length: " + str(len(body)).encode())
        else:
            lines.append(b"transfer-encoding: chunked")
    lines.append(b"connection: close")
    writes = [b"\r\n".join(lines) + b"\r\n\r\n"]
    if body is not None:
        if framing == "cl":
            writes[0] += body
        elif framing == "split":
            writes += _pieces(body, pieces)
        elif framing in ("chunked", "chunked_trailers"):
            chunks = _pieces(body, 3)
            enc = [f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in chunks]
            if framing == "chunked_trailers":
                tr = list(trailers) or [("x-checksum", "0")]
                end = b"0\r\n" + b"".join(_b(k) + b": " + _b(v) + b"\r\n" for k, v in tr) + b"\r\n"
            else:
                end = b"0\r\n\r\n"
            writes += enc + [end]
        else:
            raise ValueError(f"unknown HTTP/1.1 framing {framing!r}")
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls:
        sock = client_tls_context(["http/1.1"]).wrap_socket(sock, server_hostname="localhost")
    data = b""
    try:
        for i, w in enumerate(writes):
            try:
                sock.sendall(w)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                break  # answered (and closed) before the whole request was written
            if i and pause:
                time.sleep(pause)
        while True:
            try:
                part = sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                break
            except socket.timeout:
                return Result(None, body=data, reset=True, detail="timeout")
            if not part:
                break
            data += part
            # Stop at the end of the response instead of waiting for the close, which Envoy may
            # delay (delayed_close_timeout, 1 s) after a local reply.
            if _http1_complete(data):
                break
    finally:
        sock.close()
    return parse_http1_response(data)


def _http1_complete(data):
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    fields = {}
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        fields[k.strip().lower()] = v.strip()
    if b"chunked" in fields.get(b"transfer-encoding", b"").lower():
        end = rest.find(b"\r\n0\r\n") if not rest.startswith(b"0\r\n") else -2
        return end != -1 and rest.endswith(b"\r\n\r\n") and len(rest) >= end + 7
    if b"content-length" in fields:
        return len(rest) >= int(fields[b"content-length"])
    return False


def parse_http1_response(data):
    if not data.startswith(b"HTTP/1."):
        return Result(None, body=data, reset=True, detail="no HTTP/1 response")
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers = []
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        headers.append((k.strip().lower().decode("latin-1"), v.strip().decode("latin-1")))
    res = Result(status, headers)
    if "chunked" in (res.header("transfer-encoding") or "").lower():
        body, trailers = _dechunk(rest)
        res.body, res.trailers = body, trailers
    elif res.header("content-length") is not None:
        res.body = rest[:int(res.header("content-length"))]
    else:
        res.body = rest
    return res


def _dechunk(data):
    out, trailers = b"", []
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            for line in data.split(b"\r\n"):
                if not line:
                    break
                k, _, v = line.partition(b":")
                trailers.append((k.strip().lower().decode("latin-1"), v.strip().decode("latin-1")))
            break
        out += data[:size]
        data = data[size + 2:]
    return out, trailers


# ---------------------------------------------------------------------------------------------
# HTTP/2


def _h2_connection():
    import h2.config
    import h2.connection

    config = h2.config.H2Configuration(
        client_side=True,
        header_encoding=None,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
        validate_inbound_headers=False,
        normalize_inbound_headers=False,
    )
    return h2.connection.H2Connection(config=config)


def http2(port, method, path, authority, headers, body=None, framing="end", trailers=(), tls=False,
          pseudo=None, timeout=10, pieces=24, pause=0.001):
    """One HTTP/2 request on a new connection (h2c prior knowledge, or TLS with ALPN h2).

    Header names and values go out as given, unvalidated. `pseudo` replaces the default
    pseudo-headers (`:method`, `:scheme`, `:authority`, `:path`), for repeated or odd ones.
    `framing`: `end` (one DATA frame with END_STREAM), `end_empty` (one DATA frame, then an empty
    DATA frame with END_STREAM), `split` (the body over `pieces` DATA frames), `trailers` (one DATA
    frame without END_STREAM, then a trailers HEADERS frame with END_STREAM), `split_trailers`."""
    import h2.events
    import h2.exceptions

    body = _b(body) if body is not None else None
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls:
        sock = client_tls_context(["h2"]).wrap_socket(sock, server_hostname="localhost")
        if sock.selected_alpn_protocol() != "h2":
            sock.close()
            raise AssertionError(f"TLS listener negotiated {sock.selected_alpn_protocol()!r}, not h2")
    conn = _h2_connection()
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    if pseudo is None:
        pseudo = [(":method", method), (":scheme", "https" if tls else "http"), (":authority", authority),
                  (":path", path)]
    all_headers = [(_b(k), _b(v)) for k, v in list(pseudo) + list(headers)]
    sid = conn.get_next_available_stream_id()
    res = Result(None)
    try:
        if body is None:
            conn.send_headers(sid, all_headers, end_stream=True)
            sock.sendall(conn.data_to_send())
        else:
            conn.send_headers(sid, all_headers, end_stream=False)
            sock.sendall(conn.data_to_send())
            with_trailers = framing in ("trailers", "split_trailers")
            frames = _pieces(body, pieces) if framing in ("split", "split_trailers") else [body]
            if framing not in ("end", "end_empty", "split", "trailers", "split_trailers"):
                raise ValueError(f"unknown HTTP/2 framing {framing!r}")
            for i, chunk in enumerate(frames):
                last = i == len(frames) - 1 and framing in ("end", "split")
                conn.send_data(sid, chunk, end_stream=last)
                sock.sendall(conn.data_to_send())
                if len(frames) > 1 and pause:
                    time.sleep(pause)
            if not frames and framing in ("end", "split"):
                conn.send_data(sid, b"", end_stream=True)
            if framing == "end_empty":
                conn.send_data(sid, b"", end_stream=True)
            if with_trailers:
                tr = list(trailers) or [("x-checksum", "0")]
                conn.send_headers(sid, [(_b(k), _b(v)) for k, v in tr], end_stream=True)
            sock.sendall(conn.data_to_send())
    except (BrokenPipeError, ConnectionResetError, ssl.SSLError) as e:
        res.reset, res.detail = True, f"send failed: {e!r}"
    except h2.exceptions.H2Error as e:  # h2's own checks (flow control: bodies here stay under 64 KiB)
        res.detail = f"h2 refused to send: {e!r}"
    done = False
    try:
        while not done:
            try:
                data = sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError) as e:
                res.reset, res.detail = True, res.detail or f"recv: {e!r}"
                break
            except socket.timeout:
                res.reset, res.detail = True, "timeout"
                break
            if not data:
                res.reset = res.status is None or not done
                res.detail = res.detail or "connection closed"
                break
            try:
                events = conn.receive_data(data)
            except h2.exceptions.ProtocolError as e:
                res.reset, res.detail = True, f"protocol error: {e!r}"
                break
            for ev in events:
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                    hdrs = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in ev.headers]
                    res.status = int(dict(hdrs)[":status"])
                    res.headers = [(k, v) for k, v in hdrs if not k.startswith(":")]
                elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                    res.body += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                elif isinstance(ev, h2.events.TrailersReceived) and ev.stream_id == sid:
                    res.trailers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in ev.headers]
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    done = True
                elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                    res.reset, res.detail, done = True, f"RST_STREAM {ev.error_code!r}", True
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    if res.status is None or not done:
                        res.reset = True
                        res.detail = res.detail or f"GOAWAY {ev.error_code!r} {ev.additional_data!r}"
                    done = True
            out = conn.data_to_send()
            if out:
                try:
                    sock.sendall(out)
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    pass
    finally:
        sock.close()
    return res


# ---------------------------------------------------------------------------------------------
# HTTP/3


def http3(port, method, path, authority, headers, body=None, framing="end", trailers=(), pseudo=None,
          timeout=10, pieces=24):
    """One HTTP/3 request over a new QUIC connection (aioquic, certificate not verified).
    `framing` as for `http2` (`end`, `split`, `trailers`, `split_trailers`)."""
    return asyncio.run(_http3(port, method, path, authority, headers, body, framing, trailers, pseudo,
                              timeout, pieces))


async def _http3(port, method, path, authority, headers, body, framing, trailers, pseudo, timeout, pieces):
    from aioquic.asyncio.client import connect
    from aioquic.asyncio.protocol import QuicConnectionProtocol
    from aioquic.h3.connection import H3_ALPN, H3Connection
    from aioquic.h3.events import DataReceived, HeadersReceived
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.events import ConnectionTerminated, StreamReset

    res = Result(None)
    finished = asyncio.Event()

    class Client(QuicConnectionProtocol):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.h3 = H3Connection(self._quic)
            self.sid = None

        def quic_event_received(self, event):
            if isinstance(event, StreamReset) and event.stream_id == self.sid:
                res.reset, res.detail = True, f"RESET_STREAM {event.error_code}"
                finished.set()
            if isinstance(event, ConnectionTerminated):
                if res.status is None or not finished.is_set():
                    res.reset = True
                    res.detail = res.detail or f"CONNECTION_CLOSE {event.error_code} {event.reason_phrase}"
                finished.set()
            for ev in self.h3.handle_event(event):
                if getattr(ev, "stream_id", None) != self.sid:
                    continue
                if isinstance(ev, HeadersReceived):
                    hdrs = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in ev.headers]
                    if res.status is None:
                        res.status = int(dict(hdrs)[":status"])
                        res.headers = [(k, v) for k, v in hdrs if not k.startswith(":")]
                    else:
                        res.trailers = hdrs
                elif isinstance(ev, DataReceived):
                    res.body += ev.data
                if getattr(ev, "stream_ended", False):
                    finished.set()

    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, verify_mode=ssl.CERT_NONE,
                               server_name="localhost", idle_timeout=timeout)
    body = _b(body) if body is not None else None
    try:
        async with connect("127.0.0.1", port, configuration=config, create_protocol=Client,
                           wait_connected=True) as client:
            h3 = client.h3
            sid = client._quic.get_next_available_stream_id()
            client.sid = sid
            if pseudo is None:
                pseudo = [(":method", method), (":scheme", "https"), (":authority", authority), (":path", path)]
            all_headers = [(_b(k), _b(v)) for k, v in list(pseudo) + list(headers)]
            h3.send_headers(sid, all_headers, end_stream=body is None)
            if body is not None:
                frames = _pieces(body, pieces) if framing in ("split", "split_trailers") else [body]
                with_trailers = framing in ("trailers", "split_trailers")
                for i, chunk in enumerate(frames):
                    h3.send_data(sid, chunk, end_stream=(i == len(frames) - 1 and not with_trailers))
                    if len(frames) > 1:
                        client.transmit()
                        await asyncio.sleep(0.001)
                if with_trailers:
                    tr = list(trailers) or [("x-checksum", "0")]
                    h3.send_headers(sid, [(_b(k), _b(v)) for k, v in tr], end_stream=True)
            client.transmit()
            try:
                await asyncio.wait_for(finished.wait(), timeout)
            except asyncio.TimeoutError:
                res.reset, res.detail = True, res.detail or "timeout"
    except (ConnectionError, OSError, asyncio.TimeoutError) as e:
        res.reset, res.detail = True, f"QUIC connect failed: {e!r}"
    return res


# ---------------------------------------------------------------------------------------------
# Upstream


@dataclass
class Reply:
    """What `ScriptedUpstream` answers on a scripted path."""
    status: int = 200
    headers: list = field(default_factory=list)
    body: bytes = b""
    chunked: bool = False  # no content-length; the body in two chunks
    trailers: list = field(default_factory=list)  # sent as chunked trailers (implies chunked)


@dataclass
class Seen:
    method: str
    path: str
    headers: list  # (name as received, value decoded as UTF-8, invalid bytes as surrogate escapes)
    body: bytes
    trailers: list

    def names(self):
        return [k.lower() for k, _ in self.headers]

    def header(self, name):
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


class ScriptedUpstream:
    """An HTTP/1.1 upstream on loopback (keep-alive, content-length and chunked requests with
    trailers). Every request is recorded in `seen`; a request whose path (query removed) is in
    `replies` gets that `Reply`, any other an echo: `{"method", "path", "headers", "body"}` with
    header names as received and repeated headers as lists."""

    def __init__(self):
        self.replies = {}
        self.seen = []
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def reply(self, path, reply):
        with self.lock:
            self.replies[path] = reply

    def by_probe(self, probe):
        """The requests that carried `x-probe: <probe>`."""
        with self.lock:
            return [s for s in self.seen if s.header("x-probe") == probe]

    def stop(self):
        self.running = False
        # shutdown first: a socket closed while another thread blocks in accept() goes on
        # listening (and answering) until that accept returns.
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def _accept(self):
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        f = conn.makefile("rb")
        try:
            while True:
                line = f.readline()
                if not line:
                    return
                if line in (b"\r\n", b"\n"):
                    continue
                method, target, _ = line.decode("latin-1").split(" ", 2)
                headers = []
                while True:
                    h = f.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, _, v = h.decode("utf-8", "surrogateescape").partition(":")
                    headers.append((k, v.strip()))
                low = {k.lower(): v for k, v in headers}
                body, trailers = b"", []
                if "chunked" in low.get("transfer-encoding", "").lower():
                    while True:
                        size = int(f.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while True:
                                t = f.readline()
                                if t in (b"\r\n", b"\n", b""):
                                    break
                                k, _, v = t.decode("utf-8", "surrogateescape").partition(":")
                                trailers.append((k, v.strip()))
                            break
                        body += f.read(size)
                        f.readline()
                elif low.get("content-length"):
                    body = f.read(int(low["content-length"]))
                seen = Seen(method, target, headers, body, trailers)
                with self.lock:
                    self.seen.append(seen)
                    reply = self.replies.get(target.split("?", 1)[0])
                conn.sendall(self._render(seen, reply))
                if low.get("connection", "").lower() == "close":
                    return
        except (OSError, ValueError):
            return
        finally:
            f.close()
            conn.close()

    @staticmethod
    def _render(seen, reply):
        if reply is None:
            doc = {"method": seen.method, "path": seen.path, "headers": {},
                   "body": seen.body.decode("utf-8", "replace"),
                   "trailers": {k.lower(): v for k, v in seen.trailers}}
            for k, v in seen.headers:
                doc["headers"].setdefault(k, []).append(v)
            reply = Reply(200, [("content-type", "application/json")], json.dumps(doc).encode())
        out = [f"HTTP/1.1 {reply.status} Scripted".encode()]
        out += [_b(k) + b": " + _b(v) for k, v in reply.headers]
        chunked = reply.chunked or bool(reply.trailers)
        if chunked:
            out.append(b"transfer-encoding: chunked")
            if reply.trailers:
                out.append(b"trailer: " + b", ".join(_b(k) for k, _ in reply.trailers))
        else:
            out.append(b"content-length: " + str(len(reply.body)).encode())
        data = b"\r\n".join(out) + b"\r\n\r\n"
        if not chunked:
            return data + reply.body
        for c in _pieces(reply.body, 2):
            data += f"{len(c):x}\r\n".encode() + c + b"\r\n"
        data += b"0\r\n" + b"".join(_b(k) + b": " + _b(v) + b"\r\n" for k, v in reply.trailers) + b"\r\n"
        return data


# ---------------------------------------------------------------------------------------------
# Envoy configuration


def self_signed(directory):
    """A self-signed P-256 certificate for localhost / 127.0.0.1: (cert path, key path)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path


def _tls_certificates(cert, key):
    return [{"certificate_chain": {"filename": cert}, "private_key": {"filename": key}}]


def adversarial_bootstrap(envoy, policy, upstream_port, wasm, ports, template=harness.TEMPLATE):
    """The template (envoy/tollgate.yaml by default) rendered with `policy`, plus, each with a copy of the
    template's connection manager (so the template's settings apply to all of them):

    - `tls` on ports["tls"]: TLS with ALPN h2 and http/1.1, `codec_type: AUTO`;
    - `quic` on UDP ports["quic"]: HTTP/3;
    - `lax` on ports["lax"]: cleartext, but with underscore headers allowed and HTTP/1 trailers
      passed on - a user's own Envoy config that differs from the template, to prove the filter
      itself holds there.

    The `upstream` cluster passes HTTP/1 trailers from the upstream (`enable_trailers`), so the
    scripted upstream's trailers reach the filter. `envoy` is the half-made harness.Envoy."""
    with open(template) as f:
        text = harness.render.render(f.read(), json.dumps(policy), "string", {
            "LISTEN_PORT": envoy.port, "ADMIN_PORT": envoy.admin, "UPSTREAM_PORT": upstream_port,
            "JWKS_PORT": harness.free_port(), "WASM": wasm})
    config = yaml.safe_load(text)
    listeners = config["static_resources"]["listeners"]
    api = listeners[0]
    hcm_filter = next(f for f in api["filter_chains"][0]["filters"]
                      if f["name"] == "envoy.filters.network.http_connection_manager")
    cert, key = self_signed(envoy.dir)

    def manager(prefix, **changes):
        f = copy.deepcopy(hcm_filter)
        f["typed_config"]["stat_prefix"] = prefix
        f["typed_config"].update(changes)
        return f

    def address(port, protocol="TCP"):
        return {"socket_address": {"protocol": protocol, "address": "127.0.0.1", "port_value": port}}

    listeners.append({
        "name": "tls", "address": address(ports["tls"]),
        "filter_chains": [{
            "filters": [manager("tls", codec_type="AUTO")],
            "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "common_tls_context": {"alpn_protocols": ["h2", "http/1.1"],
                                       "tls_certificates": _tls_certificates(cert, key)}}},
        }],
    })
    listeners.append({
        "name": "quic", "address": address(ports["quic"], "UDP"),
        "udp_listener_config": {"quic_options": {}},
        "filter_chains": [{
            "filters": [manager("quic", codec_type="HTTP3", http3_protocol_options={})],
            "transport_socket": {"name": "envoy.transport_sockets.quic", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.quic.v3.QuicDownstreamTransport",
                "downstream_tls_context": {"common_tls_context": {
                    "alpn_protocols": ["h3"], "tls_certificates": _tls_certificates(cert, key)}}}},
        }],
    })
    lax = manager("lax", http_protocol_options={"enable_trailers": True})
    lax["typed_config"].setdefault("common_http_protocol_options", {})["headers_with_underscores_action"] = "ALLOW"
    listeners.append({"name": "lax", "address": address(ports["lax"]), "filter_chains": [{"filters": [lax]}]})
    for cluster in config["static_resources"]["clusters"]:
        if cluster["name"] == "upstream":
            cluster["typed_extension_protocol_options"] = {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http_protocol_options": {"enable_trailers": True}},
                }}
    return config


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
