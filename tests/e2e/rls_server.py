"""A stand-in rate-limit service for the end-to-end tests: Envoy's RLS v3 gRPC protocol
(`/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`, HTTP/2 cleartext), counting in a
real Redis.

It stands in for envoyproxy/ratelimit and Limitador, which cannot be installed here (Limitador's
server ships only as a container image; envoyproxy/ratelimit is Go with modules Debian lacks). It is
test support, not a production server: no TLS, no statistics, no configuration reload from files.

Counting follows envoyproxy/ratelimit's Redis fixed-window cache:

- A descriptor's limit comes from the YAML configuration (`domain`, nested `descriptors` with `key`,
  optional `value`, optional `rate_limit: {unit, requests_per_unit}` or `{unlimited: true}`, and
  optional `name`), or from the descriptor's own `limit` override, which takes precedence and keeps
  its rate and unit.
- Matching walks the descriptor's entries down the tree, preferring `key_value` over `key`; it stops
  at the first entry without a match or at a node without children. A node's limit applies only
  when it is reached on the last entry: a descriptor deeper or shallower than the configured limit
  gets none.
- The Redis key is `<domain>_<key1>_<value1>_..._<keyN>_<valueN>_<window start>` (unix seconds,
  the time rounded down to the unit), with the descriptor's own values even where the match was on
  the key alone. `INCRBY key hits` and `EXPIRE key <unit seconds>` for every limited descriptor go
  in one pipeline (not a transaction).
- Hits: the descriptor's `hits_addend` when set (0 only checks), else the request's, 0 meaning 1.
- A descriptor is OVER_LIMIT when its count after the increment exceeds `requests_per_unit`;
  `limit_remaining` is what is left (0 when over); `duration_until_reset` is the time to the end of
  the window, in whole seconds (1 to the unit). The overall code is OVER_LIMIT when any descriptor
  is. A descriptor without a limit is OK without `current_limit`; an unlimited one is OK with
  `limit_remaining` 4294967295. An empty domain or descriptor list is a gRPC UNKNOWN error.

Not supported, and refused when configured: wildcard values (`*`), `shadow_mode`, `quota_mode`,
`replaces`, `detailed_metric`, `value_to_metric`, `share_threshold`, `metadata`. Neither are
envoyproxy/ratelimit's local over-limit cache, expiration jitter, key prefix or custom response
headers, all off by default there.

For tests, `RateLimitServer` serves in a background thread and can be made slow, answer garbage or
UNAVAILABLE, and be stopped and started again on its port; `RedisServer` runs Debian's
redis-server. Standalone:

    python tests/e2e/rls_server.py --port 8081 --redis-port 6379 --config limits.yaml
"""
import argparse
import asyncio
import collections
import dataclasses
import datetime
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import warnings
import weakref

import grpclib
import grpclib.server
import redis
import redis.asyncio
import yaml
from grpclib.encoding.proto import ProtoCodec

with warnings.catch_warnings():
    # envoy-data-plane's generated validators use a form pydantic 2.12 deprecates, and say so at
    # import; importing this module first keeps that out of the tests' output.
    warnings.simplefilter("ignore", DeprecationWarning)
    from envoy_data_plane.envoy.service.ratelimit.v3 import (
        RateLimitRequest,
        RateLimitResponse,
        RateLimitResponseCode,
        RateLimitResponseDescriptorStatus,
        RateLimitResponseRateLimit,
        RateLimitResponseRateLimitUnit,
        RateLimitServiceBase,
    )

METHOD = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
Unit = RateLimitResponseRateLimitUnit
UNIT_SECONDS = {
    Unit.SECOND: 1,
    Unit.MINUTE: 60,
    Unit.HOUR: 3600,
    Unit.DAY: 86400,
    Unit.WEEK: 7 * 86400,
    Unit.MONTH: 30 * 86400,
    Unit.YEAR: 365 * 86400,
}
UNLIMITED_REMAINING = 2**32 - 1
MODES = ("normal", "slow", "garbage", "unavailable", "over_limit")
# A `statuses` field that claims five bytes and carries one. Every protobuf parser refuses it; a
# plain run of 0xff bytes would not do: Envoy refuses it, but betterproto2 reads it as empty.
GARBAGE = b"\x12\x05\x08"
SUPPORTED_KEYS = {"key", "value", "rate_limit", "descriptors"}
SUPPORTED_LIMIT_KEYS = {"unit", "requests_per_unit", "unlimited", "name"}


@dataclasses.dataclass(frozen=True)
class Limit:
    """A configured limit or a descriptor's override."""

    requests_per_unit: int
    unit: Unit
    name: str = ""
    unlimited: bool = False


@dataclasses.dataclass
class Node:
    """One level of a domain's descriptor tree: children by `key_value` or `key`."""

    limit: Limit | None
    children: dict[str, "Node"]


def load_config(config) -> dict[str, Node]:
    """The configuration (one domain's dict in envoyproxy/ratelimit's YAML format, or a list of
    them) as a tree per domain. Raises ValueError as envoyproxy/ratelimit refuses to load, and for
    what the stand-in does not support."""
    domains = {}
    for root in config if isinstance(config, list) else [config]:
        unknown = set(root) - {"domain", "descriptors"}
        if unknown:
            raise ValueError(f"unsupported configuration keys {sorted(unknown)}")
        domain = root.get("domain")
        if not domain:
            raise ValueError("config cannot have an empty domain")
        if domain in domains:
            raise ValueError(f"duplicate domain '{domain}'")
        domains[domain] = Node(None, _load_descriptors(root.get("descriptors") or [], domain))
    return domains


def _load_descriptors(descriptors, parent) -> dict[str, Node]:
    children = {}
    for d in descriptors:
        unknown = set(d) - SUPPORTED_KEYS
        if unknown:
            raise ValueError(f"{parent}: unsupported descriptor keys {sorted(unknown)}")
        if not d.get("key"):
            raise ValueError(f"{parent}: descriptor has empty key")
        name = d["key"] + (f"_{d['value']}" if d.get("value") else "")
        if "*" in name:
            raise ValueError(f"{parent}.{name}: wildcard values are not supported")
        if name in children:
            raise ValueError(f"duplicate descriptor composite key '{parent}.{name}'")
        path = f"{parent}.{name}"
        limit = _load_limit(d.get("rate_limit"), path)
        children[name] = Node(limit, _load_descriptors(d.get("descriptors") or [], path))
    return children


def _load_limit(rate_limit, path) -> Limit | None:
    if rate_limit is None:
        return None
    unknown = set(rate_limit) - SUPPORTED_LIMIT_KEYS
    if unknown:
        raise ValueError(f"{path}: unsupported rate_limit keys {sorted(unknown)}")
    unit = Unit.__members__.get(str(rate_limit.get("unit", "")).upper())
    valid_unit = unit is not None and unit != Unit.UNKNOWN
    unlimited = bool(rate_limit.get("unlimited"))
    if unlimited and valid_unit:
        raise ValueError(f"{path}: should not specify rate limit unit when unlimited")
    if not unlimited and not valid_unit:
        raise ValueError(f"{path}: invalid rate limit unit '{rate_limit.get('unit', '')}'")
    rate = int(rate_limit.get("requests_per_unit", 0))
    return Limit(rate, unit or Unit.UNKNOWN, rate_limit.get("name", ""), unlimited)


def find_limit(domains: dict[str, Node], domain: str, descriptor) -> Limit | None:
    """The limit that applies to one request descriptor, as envoyproxy/ratelimit's GetLimit finds it."""
    root = domains.get(domain)
    if root is None:
        return None
    if descriptor.limit is not None:
        return Limit(descriptor.limit.requests_per_unit, Unit(int(descriptor.limit.unit)))
    found, children, last = None, root.children, len(descriptor.entries) - 1
    for i, entry in enumerate(descriptor.entries):
        node = children.get(f"{entry.key}_{entry.value}") or children.get(entry.key)
        if node is not None and node.limit is not None and i == last:
            found = node.limit
        if node is None or not node.children:
            break
        children = node.children
    return found


def cache_key(domain: str, descriptor, unit_seconds: int, now: int) -> str:
    """envoyproxy/ratelimit's Redis key: domain, every entry's key and value, window start."""
    entries = "".join(f"{e.key}_{e.value}_" for e in descriptor.entries)
    return f"{domain}_{entries}{now // unit_seconds * unit_seconds}"


class _Codec(ProtoCodec):
    """grpclib's protobuf codec, except that a reply given as bytes goes out as it is (the garbage
    mode's body)."""

    def encode(self, message, message_type) -> bytes:
        return message if isinstance(message, bytes) else super().encode(message, message_type)


class _Server(grpclib.server.Server):
    """grpclib's server, which on close also drops the connections it accepted. grpclib alone keeps
    them open, and a client such as Envoy would go on sending on them to a stopped service."""

    def __init__(self, handlers, codec):
        super().__init__(handlers, codec=codec)
        self._protocols = weakref.WeakSet()

    def _protocol_factory(self):
        protocol = super()._protocol_factory()
        self._protocols.add(protocol)
        return protocol

    def close(self) -> None:
        super().close()
        for protocol in list(self._protocols):
            if hasattr(protocol, "connection"):  # set once the connection is made
                protocol.connection.close()


class _Service(RateLimitServiceBase):
    """ShouldRateLimit for one RateLimitServer: records the call, applies its fault mode, counts."""

    def __init__(self, owner: "RateLimitServer", store: redis.asyncio.Redis):
        self._owner = owner
        self._store = store

    async def should_rate_limit(self, message: RateLimitRequest):
        mode, delay_ms = self._owner._record(message)
        if mode == "unavailable":
            raise grpclib.GRPCError(grpclib.Status.UNAVAILABLE, "the stand-in is set to unavailable")
        if mode == "garbage":
            return GARBAGE
        if mode == "slow":
            await asyncio.sleep(delay_ms / 1000)
        if mode == "over_limit":
            return _spent(message)
        return await self._count(message, self._owner._domains)

    async def _count(self, request: RateLimitRequest, domains: dict[str, Node]) -> RateLimitResponse:
        if not request.domain:
            raise grpclib.GRPCError(grpclib.Status.UNKNOWN, "rate limit domain must not be empty")
        if not request.descriptors:
            raise grpclib.GRPCError(grpclib.Status.UNKNOWN, "rate limit descriptor list must not be empty")
        now = int(time.time())
        limits = [find_limit(domains, request.domain, d) for d in request.descriptors]
        counted = [i for i, limit in enumerate(limits) if limit is not None and not limit.unlimited]
        pipeline = self._store.pipeline(transaction=False)
        for i in counted:
            seconds = _unit_seconds(limits[i].unit)
            key = cache_key(request.domain, request.descriptors[i], seconds, now)
            pipeline.incrby(key, _hits(request, i))
            pipeline.expire(key, seconds)
        results = await pipeline.execute() if counted else []
        after = {i: results[2 * n] for n, i in enumerate(counted)}

        statuses = []
        for i, limit in enumerate(limits):
            if limit is None:
                statuses.append(RateLimitResponseDescriptorStatus(code=RateLimitResponseCode.OK))
            elif limit.unlimited:
                statuses.append(
                    RateLimitResponseDescriptorStatus(code=RateLimitResponseCode.OK, limit_remaining=UNLIMITED_REMAINING)
                )
            else:
                seconds = _unit_seconds(limit.unit)
                over = after[i] > limit.requests_per_unit
                statuses.append(
                    RateLimitResponseDescriptorStatus(
                        code=RateLimitResponseCode.OVER_LIMIT if over else RateLimitResponseCode.OK,
                        current_limit=RateLimitResponseRateLimit(
                            name=limit.name, requests_per_unit=limit.requests_per_unit, unit=limit.unit
                        ),
                        limit_remaining=0 if over else limit.requests_per_unit - after[i],
                        duration_until_reset=datetime.timedelta(seconds=seconds - now % seconds),
                    )
                )
        over = any(s.code == RateLimitResponseCode.OVER_LIMIT for s in statuses)
        return RateLimitResponse(
            overall_code=RateLimitResponseCode.OVER_LIMIT if over else RateLimitResponseCode.OK, statuses=statuses
        )


def _spent(request: RateLimitRequest) -> RateLimitResponse:
    """OVER_LIMIT for every descriptor, reset in a minute, nothing counted: a service whose budgets
    are spent (the CLI parity test replays a case's simulated `over_limit` answer with it)."""
    statuses = [RateLimitResponseDescriptorStatus(code=RateLimitResponseCode.OVER_LIMIT,
                                                  duration_until_reset=datetime.timedelta(seconds=60))
                for _ in request.descriptors]
    return RateLimitResponse(overall_code=RateLimitResponseCode.OVER_LIMIT, statuses=statuses)


def _unit_seconds(unit: Unit) -> int:
    if unit not in UNIT_SECONDS:
        raise grpclib.GRPCError(grpclib.Status.UNKNOWN, f"invalid rate limit unit {unit!r}")
    return UNIT_SECONDS[unit]


def _hits(request: RateLimitRequest, index: int) -> int:
    own = request.descriptors[index].hits_addend
    return own if own is not None else max(1, request.hits_addend)


class RateLimitServer:
    """The stand-in service on 127.0.0.1:`port` (a free port unless given), counting in the Redis on
    127.0.0.1:`redis_port`. It serves from its own asyncio loop in a background thread, from
    construction until stop(); start() serves again on the same port. Instances on one Redis share
    their counts, as replicas of envoyproxy/ratelimit do.

    `calls` counts the ShouldRateLimit calls received and `requests` holds the last 1000 requests,
    most recent last, in every mode; reset_counts() clears both (the counts in Redis stay: see
    RedisServer.flushall())."""

    def __init__(self, redis_port: int, config, port: int | None = None):
        self.redis_port = redis_port
        self.port = port or 0
        self._lock = threading.Lock()
        self._calls = 0
        self._requests = collections.deque(maxlen=1000)
        self._mode = ("normal", 0)
        self._domains = load_config(config)
        self._running = None
        self.start()

    @property
    def calls(self) -> int:
        with self._lock:
            return self._calls

    @property
    def requests(self) -> list[RateLimitRequest]:
        with self._lock:
            return list(self._requests)

    def reset_counts(self) -> None:
        with self._lock:
            self._calls = 0
            self._requests.clear()

    def set_config(self, config) -> None:
        """Replaces the configuration; requests already being counted finish with the old one."""
        self._domains = load_config(config)

    def set_mode(self, mode: str, delay_ms: int = 0) -> None:
        """normal; slow (waits delay_ms, then answers normally); garbage (gRPC OK with a body that is
        not a RateLimitResponse); unavailable (gRPC status UNAVAILABLE); over_limit (OVER_LIMIT for
        every descriptor, nothing counted)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        with self._lock:
            self._mode = (mode, delay_ms)

    def _record(self, request: RateLimitRequest) -> tuple[str, int]:
        with self._lock:
            self._calls += 1
            self._requests.append(request)
            return self._mode

    def start(self) -> None:
        """Listens again (on the same port after stop())."""
        if self._running is not None:
            raise RuntimeError("the rate-limit service is already running")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name=f"rls-{self.port}", daemon=True)
        thread.start()
        try:
            server, store = asyncio.run_coroutine_threadsafe(self._serve(), loop).result(timeout=10)
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()
            raise
        self._running = (loop, thread, server, store)

    async def _serve(self):
        store = redis.asyncio.Redis(host="127.0.0.1", port=self.redis_port)
        server = _Server([_Service(self, store)], codec=_Codec())
        # IPPROTO_TCP spelt out: grpclib turns Nagle off only on sockets that say so, and with it
        # on each answer waits for the client's delayed ACK (40 ms, past Envoy's default 20 ms).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        await server.start(sock=sock)
        self.port = sock.getsockname()[1]
        return server, store

    def stop(self) -> None:
        """Closes the listening socket and every open connection: clients are refused until start()."""
        if self._running is None:
            return
        loop, thread, server, store = self._running
        self._running = None

        async def shut():
            server.close()
            await server.wait_closed()
            await store.aclose()

        asyncio.run_coroutine_threadsafe(shut(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


class RedisServer:
    """Debian's redis-server on a free loopback port, persistence off, until stop()."""

    def __init__(self):
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: `make deps` installs it (Debian's redis-server)")
        self.port = _free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="tollgate-redis-")
        self._log = open(f"{self._dir.name}/redis.log", "wb")
        self._proc = subprocess.Popen(
            [binary, "--save", "", "--appendonly", "no", "--bind", "127.0.0.1", "--port", str(self.port),
             "--dir", self._dir.name],
            stdout=self._log, stderr=subprocess.STDOUT,
        )
        self.client = redis.Redis(host="127.0.0.1", port=self.port)
        self._wait_ready()

    def _wait_ready(self, timeout=10) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.client.ping()
                return
            except redis.ConnectionError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    with open(self._log.name, errors="replace") as f:
                        raise RuntimeError(f"redis-server did not answer PING on port {self.port}:\n{f.read()}")
                time.sleep(0.05)

    def flushall(self) -> None:
        self.client.flushall()

    def stop(self) -> None:
        self.client.close()
        if self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
        self._log.close()
        self._dir.cleanup()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description="The test stand-in for a rate-limit service (RLS v3 over gRPC).")
    parser.add_argument("--port", type=int, default=8081, help="gRPC port on 127.0.0.1 (default 8081)")
    parser.add_argument("--redis-port", type=int, default=6379, help="Redis on 127.0.0.1 (default 6379)")
    parser.add_argument("--config", required=True, help="envoyproxy/ratelimit's YAML, one domain per document")
    args = parser.parse_args()
    with open(args.config) as f:
        config = [doc for doc in yaml.safe_load_all(f) if doc]
    server = RateLimitServer(args.redis_port, config, port=args.port)
    print(f"rate-limit service stand-in on 127.0.0.1:{server.port} ({METHOD}), "
          f"counting in Redis on 127.0.0.1:{args.redis_port}; Ctrl-C stops it", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
