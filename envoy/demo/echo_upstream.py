#!/usr/bin/env python3
"""Demo upstream: answers every request with the request it received, as JSON
({"method", "path", "headers", "body"}). With `x-echo-respond: <status>` it answers with the
request body itself and that status instead (the tests' configurable upstream response), and with
each `x-echo-header: <name>: <value>` a response header (replacing its default of that name).
Standard library only.

    envoy/demo/echo_upstream.py [--port 10001]
"""
import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "echo"

    def _answer(self):
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            body = self._read_chunked()
        else:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
        respond = self.headers.get("x-echo-respond")
        if respond:
            # Test hook: answer with the request body itself, as JSON, with this status.
            extra = [h.split(":", 1) for h in self.headers.get_all("x-echo-header") or [] if ":" in h]
            extra = [(k.strip().lower(), v.strip()) for k, v in extra]
            self.send_response(int(respond))
            for name, value in [("content-type", "application/json"), ("x-powered-by", "echo")]:
                if all(k != name for k, _ in extra):
                    self.send_header(name, value)
            for name, value in extra:
                self.send_header(name, value)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        doc = {
            "method": self.command,
            "path": self.path,
            # Lists, because a header may repeat.
            "headers": {k.lower(): self.headers.get_all(k) for k in self.headers.keys()},
            "body": body.decode("utf-8", "replace"),
        }
        out = json.dumps(doc, indent=1).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)

    def _read_chunked(self) -> bytes:
        out = b""
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return out
            out += self.rfile.read(size)
            self.rfile.readline()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _answer

    def log_message(self, fmt, *args):
        pass


def serve(port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), Echo)
    server.daemon_threads = True
    return server


if __name__ == "__main__":
    p = argparse.ArgumentParser(description="echo upstream")
    p.add_argument("--port", type=int, default=10001)
    args = p.parse_args()
    serve(args.port).serve_forever()
