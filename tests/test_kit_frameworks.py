"""The test kit against every framework's example, in process: no provider, no network, no server.

Each example module builds its `PKCEMiddleware` from the `PKCE_*` variables when it is imported, so
each test sets them, imports the module afresh (and forgets it afterwards), runs the framework's
own lifespan, logs an `httpx.AsyncClient` in with `pkce_login` and reads the user back through the
example's own idiom: Starlette's `request.user` and `@requires`, FastAPI's dependencies, Quart's,
Litestar's and a bare ASGI callable's `get_user(scope)`.

The real login, through a real provider and real servers, is `test_frameworks.py`'s business.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import secrets
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any, NoReturn

import httpx
import pytest
from starlette.types import ASGIApp, Message

from pkce_middleware import PKCEMiddleware
from pkce_middleware.testing import FAKE_ISSUER, PKCELogin

ISSUER = "https://idp.test"
JSON = {"Accept": "application/json"}
BASE_URL = "https://testserver"
#: `examples.<name>`: what each example lists in PKCE_PUBLIC_PATHS (only Starlette's has a public route).
EXAMPLES = {
    "starlette_app": "/health",
    "fastapi_app": "",
    "quart_app": "",
    "litestar_app": "",
    "asgi_app": "",
}
#: How long the framework's lifespan may take to start or stop.
LIFESPAN_TIMEOUT = 5.0


def _params(*names: str) -> list[Any]:
    return [pytest.param(name, id=name.removesuffix("_app")) for name in names]


@dataclass(frozen=True)
class Served:
    module: ModuleType
    middleware: PKCEMiddleware
    client: httpx.AsyncClient
    client_id: str


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any name lookup or connection fails the test: the kit must need neither."""

    def refuse(*args: object, **kwargs: object) -> NoReturn:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


def _set_environment(monkeypatch: pytest.MonkeyPatch, *, public_paths: str, client_id: str, secret_key: str) -> None:
    for name in [name for name in os.environ if name.startswith("PKCE_")]:
        monkeypatch.delenv(name)  # nothing from the caller's shell (a Redis store, another issuer) leaks in
    monkeypatch.setenv("PKCE_ISSUER", ISSUER)
    monkeypatch.setenv("PKCE_CLIENT_ID", client_id)
    monkeypatch.setenv("PKCE_SECRET_KEY", secret_key)
    if public_paths:
        monkeypatch.setenv("PKCE_PUBLIC_PATHS", public_paths)


@contextlib.contextmanager
def _fresh_import(name: str) -> Iterator[ModuleType]:
    """`examples.<name>` imported anew, so its middleware reads the environment as it is now; forgotten after."""
    qualified = f"examples.{name}"

    def forget() -> None:
        sys.modules.pop(qualified, None)
        package = sys.modules.get("examples")
        if package is not None and name in vars(package):
            delattr(package, name)  # the package's attribute would keep the old module (and middleware) alive

    forget()
    try:
        yield importlib.import_module(qualified)
    finally:
        forget()


def _middleware(module: ModuleType) -> PKCEMiddleware:
    # Quart's example wraps `app.asgi_app`, keeping `app` the Quart object; the others wrap the whole app.
    app = module.app
    middleware = app if isinstance(app, PKCEMiddleware) else app.asgi_app
    assert isinstance(middleware, PKCEMiddleware)
    return middleware


async def _next_message(outbox: asyncio.Queue[Message], task: asyncio.Task[None]) -> Message:
    """The lifespan's next message, or the app's exception if it ended without sending one."""
    getter = asyncio.ensure_future(outbox.get())
    done, _ = await asyncio.wait({getter, task}, timeout=LIFESPAN_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
    if getter in done:
        return getter.result()
    getter.cancel()
    if task in done:
        task.result()  # raises what the app raised
        raise AssertionError("the lifespan ended without answering")
    raise AssertionError("the lifespan did not answer in time")


@contextlib.asynccontextmanager
async def _lifespan(app: ASGIApp) -> AsyncIterator[None]:
    """Run `app`'s lifespan by hand (what a server does), startup before the block, shutdown after."""
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    outbox: asyncio.Queue[Message] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}

    async def run() -> None:
        await app(scope, inbox.get, outbox.put)

    task = asyncio.create_task(run())
    try:
        inbox.put_nowait({"type": "lifespan.startup"})
        started = await _next_message(outbox, task)
        assert started["type"] == "lifespan.startup.complete", started
        yield
        inbox.put_nowait({"type": "lifespan.shutdown"})
        stopped = await _next_message(outbox, task)
        assert stopped["type"] == "lifespan.shutdown.complete", stopped
        await asyncio.wait_for(task, LIFESPAN_TIMEOUT)
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@contextlib.asynccontextmanager
async def _serve(monkeypatch: pytest.MonkeyPatch, name: str) -> AsyncIterator[Served]:
    client_id = f"kit-{name}-{secrets.token_hex(4)}"
    secret_key = secrets.token_urlsafe(32)
    assert len(secret_key) == 43
    _set_environment(monkeypatch, public_paths=EXAMPLES[name], client_id=client_id, secret_key=secret_key)
    with _fresh_import(name) as module:
        middleware = _middleware(module)
        # Built now, from this test's environment: not a middleware left over from an earlier import.
        assert middleware.config.issuer == ISSUER == FAKE_ISSUER
        assert middleware.config.client_id == client_id
        assert [str(key) for key in middleware.config.secret_keys] == [secret_key]
        # The framework's own startup, run on the app inside the gate: through the gate, the lifespan
        # would also load the provider's metadata, and there is no provider here. A kit session has
        # no refresh token, so no request below needs one either.
        async with (
            _lifespan(middleware.app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=module.app), base_url=BASE_URL) as client,
        ):
            yield Served(module, middleware, client, client_id)


# -- each example's idiom sees the kit's user ---------------------------------------------------


async def test_starlette_example_shows_the_user(monkeypatch: pytest.MonkeyPatch, pkce_login: PKCELogin) -> None:
    async with _serve(monkeypatch, "starlette_app") as served:
        client = served.client
        # Public at the gate (PKCE_PUBLIC_PATHS=/health), so reachable before signing in.
        health = await client.get("/health")
        assert (health.status_code, health.text) == (200, "ok")

        await pkce_login(
            client,
            served.middleware,
            sub="alice",
            claims={"name": "Alice Liddell", "email": "alice@example.test"},
            scopes=["openid", "profile"],
        )

        page = await client.get("/")
        assert page.status_code == 200, page.text
        assert page.headers["content-type"].startswith("text/html")
        assert "<p>hello alice</p>" in page.text
        assert "Signed in as <b>Alice Liddell</b> with scopes <code>openid profile</code>" in page.text

        me = await client.get("/me")
        assert me.status_code == 200, me.text
        body = me.json()
        assert body["sub"] == "alice"
        claims = body["claims"]
        assert claims["name"] == "Alice Liddell" and claims["email"] == "alice@example.test"
        assert claims["iss"] == ISSUER and claims["aud"] == served.client_id


async def test_starlette_example_shows_me_whatever_the_scopes(
    monkeypatch: pytest.MonkeyPatch, pkce_login: PKCELogin
) -> None:
    async with _serve(monkeypatch, "starlette_app") as served:
        await pkce_login(served.client, served.middleware, sub="bob", scopes=["profile"])

        page = await served.client.get("/")
        assert page.status_code == 200, page.text
        assert "<p>hello bob</p>" in page.text

        me = await served.client.get("/me", headers=JSON)
        # Signed in without `openid` (as at a plain OAuth 2.0 provider): still the user's claims.
        assert me.status_code == 200 and me.json()["sub"] == "bob"


async def test_fastapi_example_dependencies_see_the_user(
    monkeypatch: pytest.MonkeyPatch, pkce_login: PKCELogin
) -> None:
    async with _serve(monkeypatch, "fastapi_app") as served:
        client = served.client
        await pkce_login(client, served.middleware, sub="carol", claims={"preferred_username": "carol.c"})

        page = await client.get("/")
        assert (page.status_code, page.text) == (200, "hello carol")
        assert page.headers["content-type"].startswith("text/plain")

        me = await client.get("/me")
        assert me.status_code == 200, me.text
        assert me.json() == {"sub": "carol", "name": "carol.c", "scopes": ["openid", "profile", "email"]}

        admin = await client.get("/admin")
        assert admin.status_code == 403
        assert admin.json() == {"detail": "missing scope: admin"}


async def test_fastapi_example_admin_with_the_scope(monkeypatch: pytest.MonkeyPatch, pkce_login: PKCELogin) -> None:
    async with _serve(monkeypatch, "fastapi_app") as served:
        await pkce_login(served.client, served.middleware, sub="dave", scopes="openid admin")

        admin = await served.client.get("/admin")
        assert (admin.status_code, admin.text) == (200, "welcome, administrator dave")

        me = await served.client.get("/me")
        assert me.json() == {"sub": "dave", "name": "dave", "scopes": ["openid", "admin"]}


@pytest.mark.parametrize("name", _params("quart_app", "litestar_app", "asgi_app"))
async def test_get_user_examples_see_the_user(
    monkeypatch: pytest.MonkeyPatch, pkce_login: PKCELogin, name: str
) -> None:
    """Quart, Litestar and the bare ASGI callable read the user with `get_user(scope)`."""
    async with _serve(monkeypatch, name) as served:
        client = served.client
        sub = f"{name}-user"
        await pkce_login(client, served.middleware, sub=sub, claims={"name": "Erin Example"}, scopes=["openid", "x"])

        page = await client.get("/")
        assert (page.status_code, page.text) == (200, f"hello {sub}")
        assert page.headers["content-type"].startswith("text/plain")

        me = await client.get("/me")
        assert me.status_code == 200, me.text
        assert me.headers["content-type"].startswith("application/json")
        assert me.json() == {"sub": sub, "name": "Erin Example", "scopes": ["openid", "x"]}


# -- without the kit's cookie -------------------------------------------------------------------


@pytest.mark.parametrize("name", _params(*EXAMPLES))
async def test_without_the_kit_cookie_json_gets_401(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    async with _serve(monkeypatch, name) as served:
        for path in ("/", "/me"):
            response = await served.client.get(path, headers=JSON)
            assert response.status_code == 401, (path, response.text)
            assert response.headers["www-authenticate"].startswith('Cookie realm="pkce_middleware"')
            assert response.json()["error"] == "login_required"
        assert not served.client.cookies  # the gate set no session on the way


@pytest.mark.parametrize("name", _params(*EXAMPLES))
async def test_each_import_builds_its_own_middleware(
    monkeypatch: pytest.MonkeyPatch, pkce_login: PKCELogin, name: str
) -> None:
    """A re-import reads the environment again: the first import's session means nothing to the second."""
    async with _serve(monkeypatch, name) as first:
        await pkce_login(first.client, first.middleware, sub="frank")
        assert (await first.client.get("/", headers=JSON)).status_code == 200
    async with _serve(monkeypatch, name) as second:
        assert second.module is not first.module and second.middleware is not first.middleware
        assert second.client_id != first.client_id
        # A session as the first import's middleware seals it, with that import's key.
        await pkce_login(second.client, first.middleware, sub="frank")
        stale = await second.client.get("/", headers=JSON)
        assert stale.status_code == 401, stale.text
    assert f"examples.{name}" not in sys.modules
