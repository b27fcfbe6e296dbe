"""Fixtures shared by several test modules.

* `site`: the middleware (default configuration) in front of a `HostileProvider`, with one browser;
  modules that need another configuration build theirs with `open_site(...)` under another name.
* `redis_server`: one real `redis-server` for the whole session (started on first use). Tests
  that stop, restart or pause Redis start a `RedisServer` of their own instead.
* `inspector`: a separate client on `redis_server`, after a FLUSHDB (tests/test_shared_refresh.py
  keeps its own, which does not flush).

The oidc-provider fixtures stay in their modules: each registers its own clients (redirect URIs
on its own ports) and token lifetimes, which the provider only reads at startup.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace

import pytest
import redis.asyncio

from pkce_middleware import _lifecycle as lifecycle
from tests.support.clock import Clock
from tests.support.redis_server import RedisServer
from tests.support.site import Site, open_site


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    async with open_site() as opened:
        yield opened


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
async def inspector(redis_server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    """A separate client to look into Redis; every test starts from an empty database."""
    client = redis.asyncio.from_url(redis_server.url)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    clock = Clock()
    monkeypatch.setattr(lifecycle, "time", SimpleNamespace(time=clock.time))
    yield clock
