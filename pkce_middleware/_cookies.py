"""Cookie names, attributes, and reading the `Cookie` header without building a `Request`.

With `Secure` on, names carry the `__Host-` prefix: the browser then refuses the cookie unless it
is `Secure`, host-only and `Path=/`, which stops a sibling subdomain from planting a session or
login state (cookie tossing). Every cookie is `HttpOnly` and `SameSite=Lax`: Lax, not Strict,
because the callback is a cross-site top-level navigation from the provider.
"""

from __future__ import annotations

from typing import Literal

from starlette.responses import Response
from starlette.types import Message, Scope

__all__: list[str] = []

#: What RFC 6265 section 5.2 trims around a cookie's name and value (and all browsers do).
_BLANK = b" \t"
_BLANK_STR = " \t"
_SEMICOLON = b";"[0]
#: `Set-Cookie` headers remembered by `CookiePolicy.set`: a few kilobytes each.
MAX_REMEMBERED_HEADERS = 256


class CookiePolicy:
    def __init__(self, *, secure: bool) -> None:
        self.secure = secure
        prefix = "__Host-" if secure else ""
        # Distinct from the names identity providers use for themselves (`_session`, `_interaction`):
        # browsers ignore ports, so a provider on the same host shares our cookie jar.
        self.session_name = f"{prefix}pkce_session"
        self.flow_prefix = f"{prefix}pkce_flow_"
        self._headers: dict[tuple[str, str, int, bool], bytes] = {}

    def set(
        self, response: Response | CookieWriter, name: str, value: str, *, max_age: int, cross_site: bool = False
    ) -> None:
        """`cross_site`: `SameSite=None` (and always `Secure`, which browsers require with it), for
        the flow cookie that must reach a form_post callback; every other cookie is `Lax`."""
        samesite: Literal["lax", "none"] = "none" if cross_site else "lax"
        secure = self.secure or cross_site
        if type(response) is not CookieWriter:
            response.set_cookie(name, value, max_age=max_age, path="/", secure=secure, httponly=True, samesite=samesite)
            return
        # A client that never stores the re-issued cookie (a health check, a script) gets the
        # session re-issued on every answer, with the same value (`SessionCodec.seal` shares the
        # sealing), and SimpleCookie formatting that header again would cost more than the rest
        # of the request. The value is then the same string object, so its hash is cached too.
        key = (name, value, max_age, cross_site)
        header = self._headers.get(key)
        if header is None:
            scratch = CookieWriter()
            scratch.set_cookie(name, value, max_age=max_age, path="/", secure=secure, httponly=True, samesite=samesite)
            header = scratch.raw_headers[0][1]
            if len(self._headers) >= MAX_REMEMBERED_HEADERS:
                self._headers.clear()
            self._headers[key] = header
        response.raw_headers.append((b"set-cookie", header))

    def delete(self, response: Response | CookieWriter, name: str) -> None:
        response.delete_cookie(name, path="/", secure=self.secure, httponly=True, samesite="lax")


class CookieWriter(Response):
    """Collects `Set-Cookie` headers for a response the app is sending, not one of ours.

    It borrows `Response.set_cookie`/`delete_cookie` (SimpleCookie underneath) so the header
    format is the one starlette writes everywhere else.
    """

    def __init__(self) -> None:
        self.raw_headers = []

    def applied(self, message: Message) -> Message:
        """An `http.response.start` message with the cookies added, made uncacheable.

        A new message: an app may send the same message object on every response, and must not
        find our cookies in it the next time.
        """
        headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"cache-control"]
        return {**message, "headers": [*headers, *self.raw_headers, (b"cache-control", b"no-store")]}


def read_cookie(scope: Scope, name: bytes) -> str | None:
    """The value of the cookie named exactly `name`, found without parsing the whole header (this
    runs on every request); `None` if there is none.

    A cookie is what a browser sends between two `;` (RFC 6265 section 5.4): its name runs to the
    first `=`, and spaces and tabs around name and value do not count. A match anywhere else is
    part of another cookie: in `foo=x __Host-pkce_session=v` there is one cookie, `foo`, whose value
    a sibling subdomain or a plain-http man in the middle may set, so it must never be read as
    ours (that would undo what `__Host-` is for). The first cookie of the name wins, as in
    `request_cookies`: browsers send the most specific cookie first, and `__Host-` names cannot be
    shadowed from a sibling domain anyway.
    """
    header: bytes
    for key, header in scope["headers"]:
        if key != b"cookie":
            continue
        start = 0
        while (found := header.find(name, start)) >= 0:
            start = found + 1
            # "; name=value" is what browsers send; only anything else takes the slower checks.
            if found and header[found - 2 : found] != b"; " and not _after_separator(header, found):
                continue  # inside another cookie's name or value
            equals = found + len(name)
            if header[equals : equals + 1] != b"=":
                equals = _skip_blanks(header, equals)
                if header[equals : equals + 1] != b"=":
                    continue  # a longer name, or no value
            end = header.find(b";", equals)
            return header[equals + 1 : end if end >= 0 else len(header)].strip(_BLANK).decode("latin-1")
    return None


def _after_separator(header: bytes, index: int) -> bool:
    """Whether only spaces and tabs stand between `index` and the start of the header or a `;`."""
    index -= 1
    while index >= 0 and header[index] in _BLANK:
        index -= 1
    return index < 0 or header[index] == _SEMICOLON


def _skip_blanks(header: bytes, index: int) -> int:
    while index < len(header) and header[index] in _BLANK:
        index += 1
    return index


def request_cookies(scope: Scope) -> dict[str, str]:
    """Every cookie, name -> value, parsed as `read_cookie` reads one (the first of a name wins).

    Not starlette's `cookie_parser`: it lets the last cookie of a name win, strips more than
    spaces and tabs, and unquotes values, so the two could disagree on which value is ours.
    """
    values = [value for key, value in scope["headers"] if key == b"cookie"]
    if not values:
        return {}
    cookies: dict[str, str] = {}
    # HTTP/2 may split the header; RFC 9113 section 8.2.3 says to join the parts with "; ".
    for pair in b"; ".join(values).decode("latin-1").split(";"):
        name, equals, value = pair.partition("=")
        if equals:  # without "=" the pair is a nameless cookie, which is never one of ours
            cookies.setdefault(name.strip(_BLANK_STR), value.strip(_BLANK_STR))
    return cookies
