"""Reading what a browser or provider sends the middleware's endpoints, within fixed bounds.

Shared by the login/callback routes (`_routes`) and the sign-out routes (`_logout_routes`), so
that both read request input the same way and neither has to import the other's module.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.types import Receive, Scope

from ._flow import MAX_TARGET_LENGTH

__all__: list[str] = []

#: The longest login query parsed for `next`: a return target is kept up to `MAX_TARGET_LENGTH`.
MAX_QUERY = 3 * MAX_TARGET_LENGTH


async def read_form(scope: Scope, receive: Receive, *, limit: int, refused: Callable[[str, int], Exception]) -> bytes:
    """The body of a form POST, reading at most `limit` bytes; `refused(detail, status)` otherwise."""
    # RFC 9110 section 8.3.1: the media type is case-insensitive.
    content_type = Headers(scope=scope).get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise refused("not a form post", 400)
    body = b""
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise refused("client went away", 400)
        body += message.get("body", b"")
        more = message.get("more_body", False)
        if len(body) > limit:
            raise refused("body too large", 413)
    return body
