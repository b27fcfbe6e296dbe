"""What the middleware answers by itself: 401s, error pages, the logout page.

Browsers get a small HTML page, everything else a small JSON body; both carry a reason code and
nothing from the request except what is escaped. None of them is ever cached.
"""

from __future__ import annotations

import html
from urllib.parse import quote

from starlette.datastructures import Headers
from starlette.responses import HTMLResponse, JSONResponse, Response

from ._exceptions import PKCEMiddlewareError

__all__: list[str] = []

NO_STORE = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
_PAGE_HEADERS = {
    **NO_STORE,
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
}

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{title}</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:34em;margin:4em auto;padding:0 1em;color:#222}}
code{{color:#666}}button{{font:inherit;padding:.4em 1.2em}}</style></head>
<body><h1>{title}</h1>{body}</body></html>
"""


def is_navigation(method: str, headers: Headers) -> bool:
    """Whether a person's browser is loading a page (so a redirect to the login page makes sense).

    A fetch/XHR, a non-GET, or a client asking for JSON gets a 401 instead: a redirect to the
    provider would be followed invisibly and fail on CORS (oauth2-proxy #1522, #987).
    """
    if method not in ("GET", "HEAD"):
        return False
    if headers.get("x-requested-with", "").lower() == "xmlhttprequest":
        return False
    mode = headers.get("sec-fetch-mode")
    if mode is not None and mode != "navigate":
        return False
    accept = headers.get("accept")
    return accept is None or "text/html" in accept or "*/*" in accept


def login_required(login_url: str) -> Response:
    return JSONResponse(
        {"error": "login_required", "message": "Sign in to use this resource.", "login_url": login_url},
        status_code=401,
        headers={
            **NO_STORE,
            "WWW-Authenticate": f'Cookie realm="pkce_middleware", form-action="{quote(login_url, safe="/?=&%")}"',
        },
    )


def error_response(exc: PKCEMiddlewareError, *, browser: bool, retry_url: str = "/") -> Response:
    if not browser:
        return JSONResponse({"error": exc.error, "message": exc.message}, status_code=exc.status_code, headers=NO_STORE)
    body = (
        f"<p>{html.escape(exc.message)}</p>"
        f'<p><a href="{html.escape(retry_url)}">Start again</a></p>'
        f"<p><code>reason: {html.escape(exc.error)}</code></p>"
    )
    return page("Sign-in problem", body, status_code=exc.status_code)


def provider_error_page(error: str, description: str | None) -> Response:
    """The provider sent the browser back with `error=`: show it, escaped (RFC 9207 section 2.4
    reminds that such an answer may not even come from our provider)."""
    text = f"The sign-in service answered <code>{html.escape(error[:60])}</code>."
    if description:
        text += f" It said: {html.escape(description[:300])}"
    body = f'<p>{text}</p><p><a href="/">Start again</a></p><p><code>reason: provider_error</code></p>'
    return page("Sign-in did not complete", body, status_code=400)


def logout_page(action: str, login_path: str, *, signed_in: bool) -> Response:
    if not signed_in:
        return page(
            "You are signed out", f'<p><a href="{html.escape(login_path)}">Sign in again</a></p>', status_code=200
        )
    body = f'<form method="post" action="{html.escape(action)}"><button type="submit">Sign out</button></form>'
    return page("Sign out?", body, status_code=200)


def page(title: str, body: str, *, status_code: int) -> Response:
    return HTMLResponse(
        _PAGE.format(title=html.escape(title), body=body), status_code=status_code, headers=_PAGE_HEADERS
    )
