"""The rate-limit service stand-in (rls_server.py) through a real gRPC client over loopback: counting
as envoyproxy/ratelimit does, its configuration matching, one budget across instances on one Redis,
and the fault modes the global rate-limit tests drive."""
import asyncio
import socket
import statistics
import time

import grpclib
import pytest
import rls_server  # first: it imports envoy-data-plane with its deprecation warnings quieted
from envoy_data_plane.envoy.extensions.common.ratelimit.v3 import (
    RateLimitDescriptor,
    RateLimitDescriptorEntry,
    RateLimitDescriptorRateLimitOverride,
)
from envoy_data_plane.envoy.service.ratelimit.v3 import (
    RateLimitRequest,
    RateLimitResponse,
    RateLimitResponseCode,
    RateLimitResponseRateLimitUnit,
    RateLimitServiceAsyncStub,
)
from envoy_data_plane.envoy.type.v3 import RateLimitUnit
from google.protobuf import empty_pb2
from google.protobuf.message import DecodeError
from grpclib.client import Channel


OK, OVER = RateLimitResponseCode.OK, RateLimitResponseCode.OVER_LIMIT
Unit = RateLimitResponseRateLimitUnit
CONFIG = [
    {
        "domain": "tollgate",
        "descriptors": [
            {"key": "client", "rate_limit": {"unit": "minute", "requests_per_unit": 3, "name": "per-client"}},
            {
                "key": "route",
                "value": "orders",
                "rate_limit": {"unit": "hour", "requests_per_unit": 2},
                "descriptors": [{"key": "client", "rate_limit": {"unit": "minute", "requests_per_unit": 5}}],
            },
            {"key": "route", "rate_limit": {"unit": "hour", "requests_per_unit": 10}},
            {"key": "internal", "rate_limit": {"unlimited": True}},
        ],
    },
    {"domain": "other", "descriptors": [{"key": "client", "rate_limit": {"unit": "hour", "requests_per_unit": 1}}]},
]


@pytest.fixture(scope="module")
def redis_server():
    r = rls_server.RedisServer()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def rls(redis_server):
    s = rls_server.RateLimitServer(redis_server.port, CONFIG)
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def fresh(request, redis_server):
    """Each test starts with empty counts and a normal service."""
    redis_server.flushall()
    if "rls" in request.fixturenames:
        s = request.getfixturevalue("rls")
        s.set_mode("normal")
        s.set_config(CONFIG)
        s.reset_counts()


def descriptor(*entries, hits=None, limit=None):
    return RateLimitDescriptor(
        entries=[RateLimitDescriptorEntry(key=k, value=v) for k, v in entries], hits_addend=hits, limit=limit
    )


def request(*descriptors, domain="tollgate", hits=0):
    return RateLimitRequest(domain=domain, descriptors=list(descriptors), hits_addend=hits)


async def _call(port, req, timeout=5):
    channel = Channel("127.0.0.1", port)
    try:
        return await RateLimitServiceAsyncStub(channel).should_rate_limit(req, timeout=timeout)
    finally:
        channel.close()


def ask(port, req, timeout=5) -> RateLimitResponse:
    """One ShouldRateLimit call on a new HTTP/2 connection."""
    return asyncio.run(_call(port, req, timeout))


def within_one_window(unit_seconds, needed=2.0):
    """Waits for the next window when fewer than `needed` seconds are left in this one, so that a
    test's calls all count in one fixed window."""
    left = unit_seconds - time.time() % unit_seconds
    if left < needed:
        time.sleep(left + 0.05)


def test_counts_a_fixed_window_until_over_limit(rls, redis_server):
    within_one_window(60)
    answers = [ask(rls.port, request(descriptor(("client", "a")))) for _ in range(4)]
    assert [a.overall_code for a in answers] == [OK, OK, OK, OVER]
    assert [a.statuses[0].code for a in answers] == [OK, OK, OK, OVER]
    assert [a.statuses[0].limit_remaining for a in answers] == [2, 1, 0, 0]
    for a in answers:
        status = a.statuses[0]
        assert (status.current_limit.requests_per_unit, status.current_limit.unit) == (3, Unit.MINUTE)
        assert status.current_limit.name == "per-client"
        assert 0 < status.duration_until_reset.total_seconds() <= 60
    # envoyproxy/ratelimit's key and expiry: domain, entries, window start; INCRBY + EXPIRE.
    window = int(time.time()) // 60 * 60
    key = f"tollgate_client_a_{window}"
    assert redis_server.client.keys("*") == [key.encode()]
    assert int(redis_server.client.get(key)) == 4
    assert 0 < redis_server.client.ttl(key) <= 60
    assert rls.calls == 4
    assert rls.requests[-1].descriptors[0].entries[0].value == "a"


def test_hits_addend(rls):
    within_one_window(60)
    assert ask(rls.port, request(descriptor(("client", "h")), hits=2)).statuses[0].limit_remaining == 1
    # A descriptor's own hits_addend wins; 0 only checks.
    assert ask(rls.port, request(descriptor(("client", "h"), hits=0), hits=5)).statuses[0].limit_remaining == 1
    answer = ask(rls.port, request(descriptor(("client", "h"), hits=2), hits=1))
    assert (answer.overall_code, answer.statuses[0].limit_remaining) == (OVER, 0)


def test_another_key_is_independent(rls):
    within_one_window(60)
    for _ in range(4):
        ask(rls.port, request(descriptor(("client", "a"))))
    answer = ask(rls.port, request(descriptor(("client", "b"))))
    assert (answer.overall_code, answer.statuses[0].limit_remaining) == (OK, 2)


def test_limit_override_replaces_the_configuration(rls, redis_server):
    override = RateLimitDescriptorRateLimitOverride(requests_per_unit=1, unit=RateLimitUnit.HOUR)
    within_one_window(3600)
    first = ask(rls.port, request(descriptor(("client", "o"), limit=override)))
    status = first.statuses[0]
    assert (status.current_limit.requests_per_unit, status.current_limit.unit) == (1, Unit.HOUR)
    assert 0 < status.duration_until_reset.total_seconds() <= 3600
    assert ask(rls.port, request(descriptor(("client", "o"), limit=override))).overall_code == OVER
    hour = int(time.time()) // 3600 * 3600
    assert 60 < redis_server.client.ttl(f"tollgate_client_o_{hour}") <= 3600
    # It also limits a descriptor that no configured limit matches, keyed on its entries.
    assert ask(rls.port, request(descriptor(("nowhere", "x"), limit=override))).overall_code == OK
    assert ask(rls.port, request(descriptor(("nowhere", "x"), limit=override))).overall_code == OVER
    assert redis_server.client.exists(f"tollgate_nowhere_x_{hour}")


def test_descriptor_without_a_limit_is_ok(rls):
    for req in (request(descriptor(("unknown", "x"))), request(descriptor(("client", "a")), domain="nowhere")):
        answer = ask(rls.port, req)
        assert answer.overall_code == OK
        assert answer.statuses[0].code == OK
        assert answer.statuses[0].current_limit is None
    # One descriptor over the limit makes the whole answer OVER_LIMIT, the others keep their own.
    ask(rls.port, request(descriptor(("client", "z")), domain="other"))
    answer = ask(rls.port, request(descriptor(("client", "z")), descriptor(("unknown", "x")), domain="other"))
    assert answer.overall_code == OVER
    assert [s.code for s in answer.statuses] == [OVER, OK]


def test_unlimited(rls):
    answer = ask(rls.port, request(descriptor(("internal", "batch"))))
    assert (answer.overall_code, answer.statuses[0].limit_remaining) == (OK, rls_server.UNLIMITED_REMAINING)
    assert answer.statuses[0].current_limit is None


@pytest.mark.parametrize(
    "entries, limit",
    [
        ((("route", "orders"),), (2, Unit.HOUR)),  # key and value preferred over the key alone
        ((("route", "carts"),), (10, Unit.HOUR)),  # the key alone
        ((("route", "orders"), ("client", "a")), (5, Unit.MINUTE)),  # nested, on the last entry
        ((("route", "carts"), ("client", "a")), None),  # deeper than `route`, which has no children
        ((("route", "orders"), ("other", "a")), None),  # no match for the last entry
        ((("client", "a"), ("route", "orders")), None),  # order matters
    ],
)
def test_configuration_matching(rls, entries, limit):
    status = ask(rls.port, request(descriptor(*entries))).statuses[0]
    if limit is None:
        assert status.current_limit is None
    else:
        assert (status.current_limit.requests_per_unit, status.current_limit.unit) == limit


def test_instances_on_one_redis_share_one_budget(rls, redis_server):
    other = rls_server.RateLimitServer(redis_server.port, CONFIG)
    try:
        within_one_window(60)
        servers = [rls, other, rls, other]
        answers = [ask(s.port, request(descriptor(("client", "shared")))) for s in servers]
        assert [a.statuses[0].limit_remaining for a in answers] == [2, 1, 0, 0]
        assert answers[-1].overall_code == OVER
        assert (rls.calls, other.calls) == (2, 2)
    finally:
        other.stop()


def test_empty_domain_is_a_grpc_error(rls):
    with pytest.raises(grpclib.GRPCError) as e:
        ask(rls.port, request(descriptor(("client", "a")), domain=""))
    assert e.value.status == grpclib.Status.UNKNOWN


def test_slow_answers_after_the_delay(rls):
    rls.set_mode("slow", delay_ms=300)
    started = time.monotonic()
    answer = ask(rls.port, request(descriptor(("client", "a"))))
    assert time.monotonic() - started >= 0.3
    assert answer.statuses[0].limit_remaining == 2
    with pytest.raises(asyncio.TimeoutError):
        ask(rls.port, request(descriptor(("client", "a"))), timeout=0.1)


def test_garbage_is_not_a_rate_limit_response(rls):
    rls.set_mode("garbage")
    with pytest.raises(EOFError):
        ask(rls.port, request(descriptor(("client", "a"))))
    with pytest.raises(DecodeError):  # C++-backed protobuf refuses it as Envoy does
        empty_pb2.Empty.FromString(rls_server.GARBAGE)
    assert rls.calls == 1


def test_unavailable(rls):
    rls.set_mode("unavailable")
    with pytest.raises(grpclib.GRPCError) as e:
        ask(rls.port, request(descriptor(("client", "a"))))
    assert e.value.status == grpclib.Status.UNAVAILABLE
    rls.set_mode("normal")
    assert ask(rls.port, request(descriptor(("client", "a")))).overall_code == OK


def test_over_limit_answers_every_descriptor_over_without_counting(rls, redis_server):
    rls.set_mode("over_limit")
    answer = ask(rls.port, request(descriptor(("client", "a")), descriptor(("client", "b"))))
    assert answer.overall_code == OVER
    assert [s.code for s in answer.statuses] == [OVER, OVER]
    assert all(s.duration_until_reset.total_seconds() == 60 for s in answer.statuses)
    assert redis_server.client.dbsize() == 0
    rls.set_mode("normal")
    assert ask(rls.port, request(descriptor(("client", "a")))).overall_code == OK


def test_answers_promptly_on_a_kept_alive_connection(rls):
    """Envoy keeps its connection to the service and waits 20 ms by default. With Nagle's algorithm
    on, each answer waited for the client's delayed ACK (about 40 ms)."""

    async def calls():
        channel = Channel("127.0.0.1", rls.port)
        stub = RateLimitServiceAsyncStub(channel)
        try:
            took = []
            for _ in range(10):
                started = time.perf_counter()
                await stub.should_rate_limit(request(descriptor(("unknown", "x"))), timeout=5)
                took.append(time.perf_counter() - started)
            return took
        finally:
            channel.close()

    assert statistics.median(asyncio.run(calls())[1:]) < 0.020


def test_stop_refuses_and_drops_connections_then_start_serves_again(rls):
    async def call_across_stop():
        channel = Channel("127.0.0.1", rls.port)
        stub = RateLimitServiceAsyncStub(channel)
        try:
            await stub.should_rate_limit(request(descriptor(("client", "s"))), timeout=5)
            await asyncio.get_running_loop().run_in_executor(None, rls.stop)
            with pytest.raises((ConnectionError, grpclib.exceptions.StreamTerminatedError)):
                await stub.should_rate_limit(request(descriptor(("client", "s"))), timeout=5)
        finally:
            channel.close()

    port = rls.port
    asyncio.run(call_across_stop())
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
    rls.start()
    assert rls.port == port
    # The count in Redis survived: this is the service coming back, not a new budget.
    assert ask(rls.port, request(descriptor(("client", "s")))).statuses[0].limit_remaining == 1


@pytest.mark.parametrize(
    "config, message",
    [
        ({"domain": "", "descriptors": []}, "empty domain"),
        ({"domain": "d", "descriptors": [{"key": "k", "rate_limit": {"unit": "fortnight"}}]}, "invalid rate limit"),
        ({"domain": "d", "descriptors": [{"key": "k", "rate_limit": {"unlimited": True, "unit": "day"}}]}, "unlimited"),
        ({"domain": "d", "descriptors": [{"key": "k"}, {"key": "k"}]}, "duplicate descriptor"),
        ([{"domain": "d"}, {"domain": "d"}], "duplicate domain"),
        ({"domain": "d", "descriptors": [{"key": "k", "value": "a*"}]}, "wildcard"),
        ({"domain": "d", "descriptors": [{"key": "k", "shadow_mode": True}]}, "unsupported"),
    ],
)
def test_configuration_errors(config, message):
    with pytest.raises(ValueError, match=message):
        rls_server.load_config(config)


def test_set_config_replaces_the_limits(rls):
    daily = {"key": "client", "rate_limit": {"unit": "day", "requests_per_unit": 7}}
    rls.set_config({"domain": "tollgate", "descriptors": [daily]})
    status = ask(rls.port, request(descriptor(("client", "a")))).statuses[0]
    assert (status.current_limit.requests_per_unit, status.current_limit.unit) == (7, Unit.DAY)
    assert status.limit_remaining == 6
