"""Which origin a request comes from, and whether that is this app's (RFC 6454, Fetch's `Sec-Fetch-Site`).

Origins are compared in one form: scheme and host lower-case, the scheme's default port left out
(`https://App.test:443` is `https://app.test`), so a redirect URI written either way still matches
what browsers send. The configured origins are normalised once, at startup.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import Scope

__all__: list[str] = []

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_HTTP_SCHEME = {"ws": "http", "wss": "https"}


def normalise_origin(value: str) -> str | None:
    """`scheme://host[:port]` in canonical form, or `None` when `value` is no tuple origin
    (`null`, a path, garbage)."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port  # reading it is what validates it
    except ValueError:
        return None
    scheme, host = parts.scheme, parts.hostname  # both lower-cased by urlsplit
    if scheme not in _DEFAULT_PORTS or not host or parts.username is not None or port == 0:
        return None
    if parts.path or parts.query or parts.fragment or "\\" in parts.netloc or " " in parts.netloc:
        return None
    host = f"[{host}]" if ":" in host else host  # an IPv6 literal keeps its brackets
    scheme = _HTTP_SCHEME.get(scheme, scheme)
    if port is None or port == _DEFAULT_PORTS[parts.scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


class Origins:
    """This app's origin (the configured one, or the request's), plus any other trusted ones."""

    def __init__(self, configured: str | None, trusted: Iterable[str] = ()) -> None:
        self._configured = normalise_origin(configured) if configured else None
        self._trusted = frozenset(origin for origin in map(normalise_origin, trusted) if origin is not None)

    def of_app(self, scope: Scope) -> str:
        """This app's origin: the configured redirect URI's when there is one (so a proxy that
        terminates TLS or rewrites Host changes nothing), else what the request says."""
        if self._configured is not None:
            return self._configured
        host = Headers(scope=scope).get("host") or "{}:{}".format(*scope.get("server") or ("localhost", 80))
        scheme = scope.get("scheme", "http")
        return normalise_origin(f"{scheme}://{host}") or f"{_HTTP_SCHEME.get(scheme, scheme)}://{host}"

    def same_origin(self, scope: Scope) -> bool:
        """CSRF check for a state-changing POST: the browser's `Origin` must be this app's.

        Browsers send `Origin: null` (or none) where a referrer policy such as `no-referrer`
        hides it; then Fetch metadata decides: `Sec-Fetch-Site: same-origin` is set by the browser
        and cannot be forged by a page. Cross-site and absent both refuse.
        """
        headers = Headers(scope=scope)
        sent = headers.get("origin")
        if sent is not None and sent.strip() != "null":
            return normalise_origin(sent) == self.of_app(scope)
        return headers.get("sec-fetch-site") == "same-origin"

    def websocket_allowed(self, scope: Scope) -> bool:
        """Cross-site WebSocket hijacking defence: a handshake whose `Origin` is neither this app's
        nor a trusted one is refused. A handshake without `Origin` is no browser's (browsers
        always send it, RFC 6455 section 10.2), and a non-browser client holds its own cookies."""
        sent = Headers(scope=scope).get("origin")
        if sent is None:
            return True
        origin = normalise_origin(sent)
        return origin is not None and (origin == self.of_app(scope) or origin in self._trusted)
