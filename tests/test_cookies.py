from __future__ import annotations

import pytest
from starlette.responses import Response

from pkce_middleware._cookies import CookiePolicy, CookieWriter, read_cookie, request_cookies


def scope_with(*cookie_headers: bytes) -> dict[str, object]:
    return {"headers": [(b"host", b"app.test"), *((b"cookie", value) for value in cookie_headers)]}


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ((b"pkce_session=abc",), "abc"),
        ((b"a=1; pkce_session=abc; b=2",), "abc"),
        ((b"a=1;pkce_session=abc",), "abc"),
        ((b"a=1", b"pkce_session=abc"), "abc"),  # HTTP/2 may split the header
        ((b"xpkce_session=evil; pkce_session=abc",), "abc"),  # a longer name that ends like ours
        ((b"pkce_session_old=evil; pkce_session=abc",), "abc"),
        ((b"pkce_session=abc; pkce_session=later",), "abc"),
        ((b"pkce_session=",), ""),
        ((b"pkce_session",), None),
        ((b"other=pkce_session",), None),
        ((), None),
    ],
)
def test_read_cookie_finds_exactly_our_cookie(headers: tuple[bytes, ...], expected: str | None) -> None:
    assert read_cookie(scope_with(*headers), b"pkce_session") == expected


def test_request_cookies_parses_all() -> None:
    assert request_cookies(scope_with(b"a=1; b=2", b"c=3")) == {"a": "1", "b": "2", "c": "3"}


@pytest.mark.parametrize("secure", [True, False])
def test_cookie_attributes(secure: bool) -> None:
    policy = CookiePolicy(secure=secure)
    assert policy.session_name == ("__Host-pkce_session" if secure else "pkce_session")
    response = Response()
    policy.set(response, policy.session_name, "v", max_age=60)
    policy.delete(response, policy.flow_prefix + "x")
    set_cookie, deleted = response.headers.getlist("set-cookie")
    for header in (set_cookie, deleted):
        assert "HttpOnly" in header and "Path=/" in header and "SameSite=lax" in header
        assert ("Secure" in header) is secure
        assert "Domain" not in header
    assert "Max-Age=60" in set_cookie and "Max-Age=0" in deleted


@pytest.mark.parametrize("secure", [True, False])
@pytest.mark.parametrize("cross_site", [True, False])
def test_a_response_of_ours_gets_the_header_set_cookie_would_write(secure: bool, cross_site: bool) -> None:
    """The session re-issued on every answer to a client that keeps the old cookie: the header is
    formatted once per value, and is what starlette's `set_cookie` writes."""
    policy = CookiePolicy(secure=secure)
    expected, first, second = Response(), CookieWriter(), CookieWriter()
    value = "v" * 3000
    for response in (expected, first, second):
        policy.set(response, policy.session_name, value, max_age=60, cross_site=cross_site)
    assert first.raw_headers == second.raw_headers == [h for h in expected.raw_headers if h[0] == b"set-cookie"]
    assert first.raw_headers[0][1] is second.raw_headers[0][1]  # formatted once
    other = CookieWriter()
    policy.set(other, policy.session_name, "w" * 3000, max_age=60, cross_site=cross_site)
    policy.set(other, policy.session_name, value, max_age=30, cross_site=cross_site)
    assert [v for _, v in other.raw_headers] == [
        first.raw_headers[0][1].replace(b"v" * 3000, b"w" * 3000),
        first.raw_headers[0][1].replace(b"Max-Age=60", b"Max-Age=30"),
    ]
