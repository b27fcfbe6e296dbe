"""What the Redis-backed modules share: the client, key names, and how failures are reported.

Every Redis failure becomes `StoreUnavailable` (a 503 saying so; no session is touched). The
client reconnects by itself: a broken pooled connection is dropped and the command retried once on
a fresh one, so a restarted Redis serves the next request. Every value that comes from outside
(session id, `sid`, `sub`, `jti`) is hashed before it becomes part of a key: unhashed, a client
could choose or collide with arbitrary keys (mod_auth_openidc CVE-2021-32785).

This module, `_redis_store` and `_redis_revocations` import the `redis` package; nothing else in
the package does, so it is needed only by those who configure a Redis URL.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from urllib.parse import urlsplit

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError, RedisError

from ._exceptions import StoreUnavailable

__all__: list[str] = []

PREFIX = "pkce:"


def redis_key(kind: str, value: str) -> str:
    """`pkce:<kind>:<sha256(value)>`."""
    return f"{PREFIX}{kind}:{hashlib.sha256(value.encode('utf-8', 'surrogatepass')).hexdigest()}"


def connect(url: str, *, socket_timeout: float, health_check_interval: int) -> redis.asyncio.Redis:
    return redis.asyncio.from_url(
        url,
        # Short timeouts: a Redis that does not answer should give a quick 503, not hang
        # every request for the library's default.
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_timeout,
        # A pooled connection idle this long is PINGed before use, so one that died with a
        # Redis restart is replaced instead of failing a request.
        health_check_interval=health_check_interval,
        # One immediate retry on a broken connection (a restarted Redis), none on a timeout:
        # the default (10 retries, backoff) would turn an outage into seconds per request.
        retry=Retry(NoBackoff(), 1, supported_errors=(ConnectionError,)),
    )


def text(raw: bytes | str) -> str:
    # latin-1 never fails: a value we did not write is then refused by `SessionCodec.open`.
    return raw if isinstance(raw, str) else raw.decode("latin-1")


@contextlib.contextmanager
def unavailable(what: str) -> Iterator[None]:
    try:
        yield
    except RedisError as exc:
        # Connection refused or reset, timeout, LOADING, READONLY, OOM, NOAUTH: Redis cannot serve,
        # and that is a 503 for this request, never a logout.
        raise StoreUnavailable(f"redis {what}: {type(exc).__name__}: {exc}") from exc


def redacted(url: str) -> str:
    """The URL without credentials or query string (where a password may also be given)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    userinfo = "***@" if "@" in parts.netloc else ""
    return f"{parts.scheme}://{userinfo}{host}{parts.path}"
