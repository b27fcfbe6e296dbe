"""Origins: the sign-out CSRF check, the WebSocket Origin rule, and how origins are compared.

Regression tests for issue #10 findings 4 (cross-site WebSocket hijacking), 7 (logout refused for
valid redirect URIs written with a default port or an upper-case host) and 10 (the middleware's own
sign-out page could not sign anyone out in Chromium: `Origin: null` under `no-referrer`).
"""

from __future__ import annotations

import pytest

from pkce_middleware import ConfigError
from pkce_middleware._origins import Origins, normalise_origin
from tests.support.site import SESSION_COOKIE, Site, login, open_site, seal_session
from tests.support.websocket import Socket
from tests.test_websocket import run


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://app.test", "https://app.test"),
        ("HTTPS://App.Test:443", "https://app.test"),
        ("http://app.test:80", "http://app.test"),
        ("https://app.test:8443", "https://app.test:8443"),
        ("wss://app.test:443", "https://app.test"),
        ("https://[::1]:443", "https://[::1]"),
        ("null", None),
        ("https://app.test/path", None),
        ("https://user@app.test", None),
        ("https://app.test:0", None),
        ("https://app.test:99999", None),
        ("ftp://app.test", None),
        ("", None),
    ],
)
def test_origins_are_compared_in_one_form(value: str, expected: str | None) -> None:
    assert normalise_origin(value) == expected


# -- finding 7: a redirect URI written with a default port or capitals ---------------------------


@pytest.mark.parametrize("redirect_uri", ["https://app.test:443/auth/callback", "https://APP.test/auth/callback"])
async def test_sign_out_works_whatever_way_the_redirect_uri_is_written(redirect_uri: str) -> None:
    async with open_site(redirect_uri=redirect_uri) as site:
        assert (await login(site.client, site.hostile)).status_code == 303
        response = await site.client.post("/auth/logout", headers={"Origin": "https://app.test"})
        assert response.status_code == 303, response.text
        assert SESSION_COOKIE not in site.client.cookies


# -- finding 10: Origin null, Fetch metadata -----------------------------------------------------


async def test_sign_out_with_origin_null_is_decided_by_fetch_metadata(site: Site) -> None:
    """What Chromium sends when the page's referrer policy is `no-referrer`."""
    await login(site.client, site.hostile)
    cross = await site.client.post("/auth/logout", headers={"Origin": "null", "Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403
    assert (await site.client.get("/")).status_code == 200  # still signed in

    same = await site.client.post("/auth/logout", headers={"Origin": "null", "Sec-Fetch-Site": "same-origin"})
    assert same.status_code == 303
    assert SESSION_COOKIE not in site.client.cookies


async def test_sign_out_without_origin_or_fetch_metadata_is_refused(site: Site) -> None:
    await login(site.client, site.hostile)
    assert (await site.client.post("/auth/logout", headers={"Origin": "null"})).status_code == 403
    assert (await site.client.post("/auth/logout")).status_code == 403
    assert (await site.client.post("/auth/logout", headers={"Origin": "https://evil.test"})).status_code == 403


async def test_the_libraries_pages_keep_the_origin_in_the_referrer_and_cannot_be_framed(site: Site) -> None:
    await login(site.client, site.hostile)
    page = await site.client.get("/auth/logout")
    assert "Sign out?" in page.text
    assert page.headers["referrer-policy"] == "same-origin"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    # The button's answer redirects to the provider, which `form-action` governs too (in Chromium
    # a `form-action 'self'` alone left the button doing nothing).
    assert f"form-action 'self' {site.hostile.issuer}" in page.headers["content-security-policy"]

    refusal = await site.client.post("/auth/logout", headers={"Origin": "https://evil.test"})
    assert "frame-ancestors 'none'" in refusal.headers["content-security-policy"]


# -- finding 4: WebSocket handshakes from other origins ------------------------------------------


def _socket(site: Site, origin: bytes | None) -> Socket:
    socket = Socket(cookie=seal_session(site.middleware), denial_extension=True)
    headers = [(k, v) for k, v in socket.scope["headers"] if k != b"origin"]
    socket.scope["headers"] = headers + ([(b"origin", origin)] if origin is not None else [])
    return socket


async def test_a_websocket_handshake_from_another_origin_is_refused_before_accept(site: Site) -> None:
    socket = _socket(site, b"https://sibling.app.test")
    await (await run(site, socket))
    assert socket.sent[0] == {
        "type": "websocket.http.response.start",
        "status": 403,
        "headers": socket.sent[0]["headers"],
    }
    assert b"cross_origin_websocket" in socket.sent[1]["body"]
    assert all(message["type"] != "websocket.accept" for message in socket.sent)


async def test_a_websocket_handshake_from_this_origin_or_none_is_let_through(site: Site) -> None:
    for origin in (b"https://app.test", b"https://APP.test:443", None):
        socket = _socket(site, origin)
        task = await run(site, socket)
        assert socket.sent[0]["type"] == "websocket.accept", origin
        socket.to_app.put_nowait({"type": "websocket.disconnect", "code": 1000})
        await task


async def test_trusted_websocket_origins_come_from_the_configuration() -> None:
    async with open_site(websocket_origins=("https://Other.example:443",)) as site:
        socket = _socket(site, b"https://other.example")
        task = await run(site, socket)
        assert socket.sent[0]["type"] == "websocket.accept"
        socket.to_app.put_nowait({"type": "websocket.disconnect", "code": 1000})
        await task
    with pytest.raises(ConfigError, match="PKCE_WEBSOCKET_ORIGINS"):
        async with open_site(websocket_origins=("https://other.example/path",)):
            pass


def test_without_a_configured_origin_the_requests_host_is_the_apps_origin() -> None:
    origins = Origins(None)
    headers = [(b"host", b"App.test:443")]
    scope = {"type": "websocket", "scheme": "wss", "headers": headers}
    assert origins.of_app(scope) == "https://app.test"
    headers.append((b"origin", b"https://app.test"))
    assert origins.websocket_allowed(scope)
