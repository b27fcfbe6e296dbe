"""Cookie names, attributes, and reading the `Cookie` header without building a `Request`.

With `Secure` on, names carry the `__Host-` prefix: the browser then refuses the cookie unless it
is `Secure`, host-only and `Path=/`, which stops a sibling subdomain from planting a session or
login state (cookie tossing). Every cookie is `HttpOnly` and `SameSite=Lax`: Lax, not Strict,
because the callback is a cross-site top-level navigation from the provider.
"""

from __future__ import annotations

from starlette.requests import cookie_parser
from starlette.responses import Response
from starlette.types import Message, Scope

__all__: list[str] = []


class CookiePolicy:
    def __init__(self, *, secure: bool) -> None:
        self.secure = secure
        prefix = "__Host-" if secure else ""
        # Distinct from the names identity providers use for themselves (`_session`, `_interaction`):
        # browsers ignore ports, so a provider on the same host shares our cookie jar.
        self.session_name = f"{prefix}pkce_session"
        self.flow_prefix = f"{prefix}pkce_flow_"

    def set(self, response: Response | CookieWriter, name: str, value: str, *, max_age: int) -> None:
        response.set_cookie(name, value, max_age=max_age, path="/", secure=self.secure, httponly=True, samesite="lax")

    def delete(self, response: Response | CookieWriter, name: str) -> None:
        response.delete_cookie(name, path="/", secure=self.secure, httponly=True, samesite="lax")


class CookieWriter(Response):
    """Collects `Set-Cookie` headers for a response the app is sending, not one of ours.

    It borrows `Response.set_cookie`/`delete_cookie` (SimpleCookie underneath) so the header
    format is the one starlette writes everywhere else.
    """

    def __init__(self) -> None:
        self.raw_headers = []

    def apply(self, message: Message) -> None:
        """Add the cookies to an `http.response.start` message, and make it uncacheable."""
        headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"cache-control"]
        message["headers"] = [*headers, *self.raw_headers, (b"cache-control", b"no-store")]


def read_cookie(scope: Scope, name: bytes) -> str | None:
    """One cookie's value, found without parsing the whole header (this runs on every request).

    The first occurrence wins: browsers send the most specific cookie first, and `__Host-` names
    cannot be shadowed from a sibling domain anyway.
    """
    value: bytes
    for key, value in scope["headers"]:
        if key != b"cookie":
            continue
        start = 0
        while (found := value.find(name, start)) >= 0:
            after = found + len(name)
            if (found == 0 or value[found - 1] in b"; ") and value[after : after + 1] == b"=":
                end = value.find(b";", after)
                return value[after + 1 : end if end >= 0 else len(value)].strip().decode("latin-1")
            start = after
    return None


def request_cookies(scope: Scope) -> dict[str, str]:
    values = [value for key, value in scope["headers"] if key == b"cookie"]
    if not values:
        return {}
    # HTTP/2 may split the header; RFC 9113 section 8.2.3 says to join the parts with "; ".
    return cookie_parser(b"; ".join(values).decode("latin-1"))
