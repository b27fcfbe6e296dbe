"""Issue #10: only a cookie *named* like ours is ours (cookie smuggling must not defeat `__Host-`).

`Cookie: foo=x __Host-pkce_session=<v>` is ONE cookie, named `foo`, whose value a sibling
subdomain (or a man in the middle on plain http) can set; reading it as the session is login CSRF,
an account switch or a lock-out. A browser separates cookies with `;`, a cookie's name runs to its
first `=`, and spaces and tabs around name and value do not count (RFC 6265 sections 5.2, 5.4).
`read_cookie` (the hot path: session, chunk and Redis id cookies) and `request_cookies` (flow
cookies, deletions) must agree on that, and on which cookie wins when a name repeats (the first).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from pkce_middleware import PKCEMiddleware
from pkce_middleware._cookies import read_cookie, request_cookies
from pkce_middleware.testing import FakeProvider, session_cookies

NAME = "__Host-pkce_session"
JSON = {"Accept": "application/json"}


def scope_with(*cookie_headers: bytes) -> dict[str, Any]:
    return {"headers": [(b"host", b"app.test"), *((b"cookie", value) for value in cookie_headers)]}


# -- unit: read_cookie and request_cookies ----------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        b"foo=x __Host-pkce_session=evil",  # the value of `foo` ends with our name and a value
        b"foo=x\t__Host-pkce_session=evil",
        b"foo=x  __Host-pkce_session=evil",
        b"a=1; foo=x __Host-pkce_session=evil; b=2",
        b"foo __Host-pkce_session=evil",  # one cookie named "foo __Host-pkce_session"
        b"foo=__Host-pkce_session=evil",  # `foo`'s value starts with our name
        b"foo==__Host-pkce_session=evil",
        b"foo=x,__Host-pkce_session=evil",
    ],
)
def test_our_name_inside_another_cookie_is_not_our_cookie(header: bytes) -> None:
    scope = scope_with(header)
    assert read_cookie(scope, NAME.encode()) is None
    assert NAME not in request_cookies(scope)


def test_a_smuggled_copy_does_not_shadow_the_real_cookie() -> None:
    scope = scope_with(b"foo=x __Host-pkce_session=evil; __Host-pkce_session=good")
    assert read_cookie(scope, NAME.encode()) == "good"
    assert request_cookies(scope)[NAME] == "good"


@pytest.mark.parametrize(
    "header",
    [
        b"__Host-pkce_session=good",
        b"a=1;__Host-pkce_session=good",
        b"a=1;  \t__Host-pkce_session=good",
        b"; __Host-pkce_session=good",
        b"  __Host-pkce_session=good  ",
        b"__Host-pkce_session = good",  # the name and value are trimmed
        b"a=b c; __Host-pkce_session=good; d=e",
    ],
)
def test_a_cookie_named_exactly_ours_is_read(header: bytes) -> None:
    scope = scope_with(header)
    assert read_cookie(scope, NAME.encode()) == "good"
    assert request_cookies(scope)[NAME] == "good"


def test_chunk_names_are_matched_the_same_way() -> None:
    scope = scope_with(b"__Host-pkce_session=~2; foo=x __Host-pkce_session.0=evil; __Host-pkce_session.0=good")
    assert read_cookie(scope, b"__Host-pkce_session.0") == "good"
    assert read_cookie(scope, b"__Host-pkce_session.1") is None


def test_the_first_cookie_of_a_name_wins_in_both() -> None:
    scope = scope_with(b"a=1; __Host-pkce_flow_s=first", b"__Host-pkce_flow_s=second")
    assert read_cookie(scope, b"__Host-pkce_flow_s") == "first"
    assert request_cookies(scope)["__Host-pkce_flow_s"] == "first"


def test_values_are_taken_as_sent() -> None:
    """No unquoting: what `read_cookie` returns is what `request_cookies` returns."""
    scope = scope_with(b'__Host-pkce_flow_s="\\101bc"')
    assert read_cookie(scope, b"__Host-pkce_flow_s") == request_cookies(scope)["__Host-pkce_flow_s"] == '"\\101bc"'


def test_read_cookie_agrees_with_request_cookies_on_random_headers() -> None:
    pieces = ["pkce", "pkce=", "=", ";", "; ", " ", "\t", "x", "v", "pkce.0", '"', ","]
    rng = random.Random(10)
    for _ in range(20000):
        headers = [
            "".join(rng.choice(pieces) for _ in range(rng.randrange(1, 10))).encode()
            for _ in range(rng.choice((1, 1, 2)))
        ]
        scope = scope_with(*headers)
        parsed = request_cookies(scope)
        for name in ("pkce", "pkce.0"):
            assert read_cookie(scope, name.encode()) == parsed.get(name), headers


# -- through the middleware ---------------------------------------------------------------------------


async def whoami(request: Request) -> Response:
    return PlainTextResponse(request.user.identity)


@pytest.fixture
async def middleware() -> AsyncIterator[PKCEMiddleware]:
    app = Starlette(routes=[Route("/", whoami)])
    middleware = PKCEMiddleware(app, config=FakeProvider().config(), transport=NoProvider())
    yield middleware
    await middleware.aclose()


class NoProvider(httpx.AsyncBaseTransport):
    """None of these requests may reach the provider."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"unexpected call to the provider: {request.url}")


async def get(middleware: PKCEMiddleware, cookie: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=middleware), base_url="https://app.test") as client:
        return await client.get("/", headers={**JSON, "Cookie": cookie})


async def test_a_tossed_session_inside_another_cookie_logs_nobody_in(middleware: PKCEMiddleware) -> None:
    """Login CSRF: a sibling subdomain sets `foo` to the attacker's own session."""
    mallory = (await session_cookies(middleware, sub="mallory"))[NAME]
    response = await get(middleware, f"foo=x {NAME}={mallory}")
    assert response.status_code == 401


async def test_a_tossed_session_does_not_replace_the_users_own(middleware: PKCEMiddleware) -> None:
    """Account switch and lock-out: the browser sends the planted cookie before the real one."""
    mallory = (await session_cookies(middleware, sub="mallory"))[NAME]
    alice = (await session_cookies(middleware, sub="alice"))[NAME]
    for planted in (mallory, "garbage"):
        response = await get(middleware, f"foo=x {NAME}={planted}; {NAME}={alice}")
        assert (response.status_code, response.text) == (200, "alice")


async def test_a_tossed_chunk_does_not_replace_the_users_own(middleware: PKCEMiddleware) -> None:
    large = {"groups": [f"group-{index:03d}-" + "x" * 40 for index in range(120)]}
    cookies = await session_cookies(middleware, sub="alice", claims=large)
    assert cookies[NAME].startswith("~")  # chunked
    real = "; ".join(f"{name}={value}" for name, value in cookies.items())
    response = await get(middleware, f"foo=x {NAME}.0=planted; {real}")
    assert (response.status_code, response.text) == (200, "alice")
