"""What the middleware answers by itself: 401s, error pages, the logout page.

Browsers get a small HTML page, everything else a small JSON body; both carry a reason code and
nothing from the request except what is escaped. None of them is ever cached.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from urllib.parse import quote

from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.responses import HTMLResponse, JSONResponse, Response

from ._exceptions import (
    AccessDenied,
    BearerError,
    ChooseProvider,
    LoginError,
    LoginRequired,
    PKCEMiddlewareError,
    ProviderRefused,
    StepUpRequired,
)

__all__ = ["wants_html"]

NO_STORE = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
_PAGE_HEADERS = {
    **NO_STORE,
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
    ),
    # Not `no-referrer`: with it Chromium sends `Origin: null` with the sign-out form's POST.
    "Referrer-Policy": "same-origin",
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

    Browsers say so: `Sec-Fetch-Mode: navigate` (or `Sec-Fetch-Dest: document`) since 2020, and
    `text/html` in `Accept` for every page load before that. Everything else gets a 401 instead:
    a fetch/XHR, a non-GET, a client asking for JSON, and curl or an SDK whose `Accept: */*` (or no
    `Accept`) says nothing; a redirect to the provider would be followed invisibly and fail on
    CORS, or hand a script an HTML login form (oauth2-proxy #1522, #987).
    """
    if method not in ("GET", "HEAD"):
        return False
    if headers.get("x-requested-with", "").lower() == "xmlhttprequest":
        return False
    mode = headers.get("sec-fetch-mode")
    if mode is not None:
        return mode == "navigate"
    dest = headers.get("sec-fetch-dest")
    if dest is not None:
        return dest in ("document", "iframe")
    return "text/html" in headers.get("accept", "")


def wants_html(connection: HTTPConnection) -> bool:
    """Whether an error for this request should be a page (a browser) rather than JSON.

    The rule the middleware's own error answers follow, for an `on_error` hook that renders both:
    a page for anything a browser would show, a form POST included; JSON for scripts.
    """
    return is_navigation("GET", connection.headers)


def error_response(exc: PKCEMiddlewareError, *, browser: bool, form_targets: Iterable[str] = ()) -> Response:
    """The default answer for `exc`: a page for a browser, JSON for everything else.

    `form_targets`: origins the choice page's form may lead to (the providers' authorization endpoints).
    """
    headers = dict(NO_STORE)
    body: dict[str, str] = {"error": exc.error, "message": exc.message}
    if isinstance(exc, BearerError):
        return bearer_error_response(exc, headers)
    if isinstance(exc, ChooseProvider):
        return (
            choice_page(exc, form_targets)
            if browser
            else JSONResponse(
                {"error": exc.error, "message": exc.message, "providers": [name for name, _ in exc.providers]},
                status_code=401,
                headers=headers,
            )
        )
    if isinstance(exc, LoginRequired):
        body["login_url"] = exc.login_url
        headers["WWW-Authenticate"] = (
            f'Cookie realm="pkce_middleware", form-action="{quote(exc.login_url, safe="/?=&%")}"'
        )
    elif isinstance(exc, AccessDenied):
        # The OAuth error code scripts already know; the reason code says which rule.
        body = {"error": "access_denied", "reason": exc.error, "message": exc.message}
    elif isinstance(exc, StepUpRequired):
        body = {"error": "insufficient_user_authentication", "reason": exc.error, "message": exc.message}
        body["login_url"] = exc.login_url
        headers["WWW-Authenticate"] = step_up_challenge(exc)
    if not browser:
        return JSONResponse(body, status_code=exc.status_code, headers=headers)
    if isinstance(exc, AccessDenied):
        signed_in = f"<p>You are signed in as <strong>{html.escape(exc.who)}</strong>.</p>" if exc.who else ""
        switch = f'<p><a href="{html.escape(exc.switch_url)}">Sign in as someone else</a></p>' if exc.switch_url else ""
        body_html = f"{signed_in}<p>{html.escape(exc.message)}</p>{switch}<p><code>reason: {exc.error}</code></p>"
        return page(exc.title, body_html, status_code=exc.status_code, headers=headers)
    if isinstance(exc, ProviderRefused):
        text = f"The sign-in service answered <code>{html.escape(exc.provider_error[:60])}</code>."
        if exc.provider_description:
            text += f" It said: {html.escape(exc.provider_description[:300])}"
    else:
        text = html.escape(exc.message)
    if isinstance(exc, LoginRequired | StepUpRequired):
        action = f'<p><a href="{html.escape(exc.login_url)}">Sign in</a></p>'
    elif isinstance(exc, LoginError):
        action = f'<p><a href="{html.escape(exc.retry_url)}">Start again</a></p>'
    else:
        action = '<p><a href="">Try again</a></p>'
    body_html = f"<p>{text}</p>{action}<p><code>reason: {html.escape(exc.error)}</code></p>"
    return page(exc.title, body_html, status_code=exc.status_code, headers=headers)


def bearer_error_response(exc: BearerError, headers: dict[str, str]) -> Response:
    """JSON for an API client, whatever it accepts, with one `WWW-Authenticate` per challenge."""
    body = {"error": exc.oauth_error or "unauthorized", "reason": exc.error, "message": exc.message}
    if exc.status_code >= 500:
        body["error"] = "temporarily_unavailable"
        headers = {**headers, "Retry-After": "5"}
    response = JSONResponse(body, status_code=exc.status_code, headers=headers)
    response.raw_headers.extend((b"www-authenticate", value.encode("latin-1")) for value in exc.challenges)
    return response


def choice_page(choice: ChooseProvider, form_targets: Iterable[str] = ()) -> Response:
    """One button per provider, in one form: `GET <login path>?provider=<name>&next=<target>`.

    The form's answer redirects to the provider, and browsers hold that redirect to `form-action`
    (as for the sign-out page): `form_targets`, the providers' origins, are allowed beside ours.
    """
    buttons = "".join(
        f'<li><button type="submit" name="provider" value="{html.escape(name)}">'
        f"Sign in with {html.escape(display)}</button></li>"
        for name, display in choice.providers
    )
    body = (
        f"<p>{html.escape(choice.message)}</p>"
        f'<form method="get" action="{html.escape(choice.login_path)}">'
        f'<input type="hidden" name="next" value="{html.escape(choice.next_path)}">'
        f'<ul style="list-style:none;padding:0;display:grid;gap:.6em">{buttons}</ul></form>'
    )
    targets = " ".join(["'self'", *sorted(set(form_targets))])
    csp = f"default-src 'none'; style-src 'unsafe-inline'; form-action {targets}; frame-ancestors 'none'"
    return page(choice.title, body, status_code=200, headers={"Content-Security-Policy": csp})


def step_up_challenge(exc: StepUpRequired) -> str:
    """RFC 9470 section 3: what the login lacks, in a `WWW-Authenticate` challenge."""
    challenge = 'Bearer error="insufficient_user_authentication", error_description="'
    challenge += "A stronger login is required" if exc.error == "acr_not_allowed" else "A more recent login is required"
    challenge += '"'
    if exc.acr_values:
        challenge += f', acr_values="{" ".join(exc.acr_values)}"'
    if exc.max_age is not None:
        challenge += f", max_age={exc.max_age}"
    return challenge


def logout_page(action: str, login_path: str, *, signed_in: bool, provider_origin: str | None) -> Response:
    """The sign-out button (or, signed out, the way back in).

    The form's answer redirects to the provider's end-session endpoint, and browsers hold such a
    redirect to `form-action` too: that origin is allowed beside ours, or the button would do nothing.
    """
    if not signed_in:
        return page(
            "You are signed out", f'<p><a href="{html.escape(login_path)}">Sign in again</a></p>', status_code=200
        )
    body = f'<form method="post" action="{html.escape(action)}"><button type="submit">Sign out</button></form>'
    targets = "'self'" if provider_origin is None else f"'self' {provider_origin}"
    csp = f"default-src 'none'; style-src 'unsafe-inline'; form-action {targets}; frame-ancestors 'none'"
    return page("Sign out?", body, status_code=200, headers={"Content-Security-Policy": csp})


def page(title: str, body: str, *, status_code: int, headers: dict[str, str] | None = None) -> Response:
    return HTMLResponse(
        _PAGE.format(title=html.escape(title), body=body),
        status_code=status_code,
        headers={**_PAGE_HEADERS, **(headers or {})},
    )
