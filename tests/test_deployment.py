"""What the middleware says about how it is deployed: several workers without a shared revocation store."""

from __future__ import annotations

import logging

import httpx
import pytest

from pkce_middleware import PKCEMiddleware
from pkce_middleware._components import worker_count
from tests.support.hostile_provider import HostileProvider
from tests.support.site import hello_app, make_config


@pytest.mark.parametrize(
    ("environ", "cmdline", "expected"),
    [
        ({}, b"uvicorn\0app:app\0--workers\0004\0", 4),
        ({}, b"uvicorn\0app:app\0--workers=3\0", 3),
        ({}, b"gunicorn\0-w\0002\0-k\0uvicorn.workers.UvicornWorker\0", 2),
        ({"WEB_CONCURRENCY": "5"}, b"", 5),
        ({}, b"uvicorn\0app:app\0--reload\0", 1),
        ({"WEB_CONCURRENCY": "many"}, b"python\0", 1),
    ],
)
def test_worker_count(environ: dict[str, str], cmdline: bytes, expected: int) -> None:
    assert worker_count(environ, cmdline) == expected


async def _started(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, **config: object) -> list[str]:
    monkeypatch.setenv("WEB_CONCURRENCY", "4")
    hostile = HostileProvider()
    caplog.set_level(logging.WARNING, logger="pkce_middleware")
    async with PKCEMiddleware(hello_app, config=make_config(**config), transport=httpx.ASGITransport(app=hostile)):
        pass
    return [r.getMessage() for r in caplog.records if r.name == "pkce_middleware"]


async def test_several_workers_without_a_shared_revocation_store_are_warned_of(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    messages = await _started(monkeypatch, caplog)
    assert any("4 workers share no revocation store" in m and "PKCE_REVOCATION_STORE" in m for m in messages)


async def test_one_worker_is_not_warned_of(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "1")
    hostile = HostileProvider()
    caplog.set_level(logging.WARNING, logger="pkce_middleware")
    async with PKCEMiddleware(hello_app, config=make_config(), transport=httpx.ASGITransport(app=hostile)):
        pass
    assert not any("revocation store" in r.getMessage() for r in caplog.records)
