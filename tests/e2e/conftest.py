import os

import pytest

from harness import WASM, JwksServer, Upstream


def pytest_sessionstart(session):
    if not os.path.exists(WASM):
        raise pytest.UsageError(f"{WASM} is missing: run `make build` (or `make test-e2e`)")


@pytest.fixture(scope="session")
def upstream():
    u = Upstream()
    yield u
    u.stop()


@pytest.fixture(scope="module")
def jwks_server():
    s = JwksServer()
    yield s
    s.stop()
