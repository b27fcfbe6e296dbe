"""`Admissions`: a request's session found again by its `Cookie` header, for the answer of a
request that brought the same header before.

In a server, every call and object on the per-request path costs about twice what it does in a
microbenchmark; the steps of `SessionManager.current_now` (read the cookie, open it from the codec's
cache, check expiry, idle time, revocation, refresh and re-issue) add up to a tenth of a hello
app's throughput. An admission skips them: the header a request carries, compared byte for byte
with one a request brought earlier, gives that request's session.

It holds only while that answer cannot change, which `SessionManager` makes sure of:

* time: an entry has a deadline, the first moment the answer could differ (absolute or idle
  expiry, a refresh or a re-issue due), and is not used past it;
* logouts: the store calls `clear` whenever it records an ended session, from this process or
  learned from another (`SessionStore.watch`); a store that cannot tell when a session ends
  elsewhere (the Redis store, whose sessions change on the server) gets no admissions at all;
* everything else the answer depends on is fixed for the life of the process (keys, providers).

Only a request with exactly one `Cookie` header is admitted or answered: with several (HTTP/2
may split it), the one compared would not be all the request says. Its value must be `bytes`, as
ASGI says: a server that passed a `bytearray` (unhashable) gets the full path instead of an error.
"""

from __future__ import annotations

from starlette.types import Scope

from ._session import Session

__all__: list[str] = []

#: The end of the header, where the key is read: the session cookie's value (its AEAD tag, random
#: per sealing) is usually last or near it. Sessions whose headers end alike share a key and push
#: each other out (no wrong answer: the whole header is compared), so it is long enough for a
#: short cookie after ours to leave part of our value in it.
KEY_BYTES = 64
#: Longer headers are not admitted: what is kept is the whole header, and a client with a session
#: could otherwise pad it with cookies of its own to make each entry as large as the server allows.
#: Room for a session in all its chunks (`_cookie_store.MAX_CHUNK_LENGTH`) beside a site's others.
MAX_HEADER_BYTES = 16 * 1024


class Admissions:
    """Cookie header -> (deadline, session), at most `size` entries (`size` 0: none are kept)."""

    __slots__ = ("_entries", "_size")

    def __init__(self, size: int) -> None:
        self._size = size
        #: header[-KEY_BYTES:] -> (the whole header, deadline as Unix time, session)
        self._entries: dict[bytes, tuple[bytes, float, Session]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, scope: Scope) -> tuple[float, Session] | None:
        """The deadline and session admitted for this request's `Cookie` header, if any."""
        header = _sole_cookie_header(scope)
        if header is None:
            return None
        entry = self._entries.get(header[-KEY_BYTES:])
        if entry is None or entry[0] != header:
            return None
        return entry[1], entry[2]

    def admit(self, scope: Scope, session: Session, until: float) -> None:
        """Answer requests with this request's `Cookie` header with `session`, until `until`."""
        if self._size <= 0:
            return
        header = _sole_cookie_header(scope)
        if header is None or len(header) > MAX_HEADER_BYTES:
            return
        if len(self._entries) >= self._size:
            self._entries.clear()
        self._entries[header[-KEY_BYTES:]] = (header, until, session)

    def clear(self) -> None:
        self._entries.clear()


def _sole_cookie_header(scope: Scope) -> bytes | None:
    found = None
    for key, value in scope["headers"]:
        if key == b"cookie":
            if found is not None:
                return None
            found = value
    return found if found.__class__ is bytes else None
