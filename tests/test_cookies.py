from __future__ import annotations

import pytest
from starlette.responses import Response

from pkce_middleware._cookies import CookiePolicy, read_cookie, request_cookies


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
