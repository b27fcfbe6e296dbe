"""What the Redis-backed modules share: the client, key names, and how failures are reported.

Every Redis failure becomes `StoreUnavailable` (a 503 saying so; no session is touched). The
client reconnects by itself: a broken pooled connection is dropped and the command retried once on
a fresh one, so a restarted Redis serves the next request. Every value that comes from outside
(session id, `sid`, `sub`, `jti`) is hashed before it becomes part of a key: unhashed, a client
could choose or collide with arbitrary keys (mod_auth_openidc CVE-2021-32785).

Three deployments, told apart by the URL's scheme (`check_url` says what is wrong with one):

* one server: `redis://`, `rediss://` (TLS) or `unix://`, read by redis-py's `from_url`; a rediss
  URL's query may carry `ssl_ca_certs`, `ssl_certfile`, `ssl_keyfile`, `ssl_cert_reqs`,
  `ssl_check_hostname` and the other `ssl_*` options of redis-py's connections;
* Sentinel: `redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/<master name>[/<db>]`
  (or `rediss+sentinel://`, TLS to the sentinels and the servers alike); the credentials are the
  servers', `?sentinel_username=...&sentinel_password=...` the sentinels'; port 26379 by default;
* Cluster: `redis+cluster://[[user]:password@]host[:port][,host[:port]...]/` (or `rediss+cluster://`),
  any reachable nodes to discover the others from; database 0 only; port 6379 by default.

The query string works alike for all (`?socket_timeout=0.5`) and wins over the defaults here.

This module and the Redis-backed ones (`_redis_store`, `_redis_writes`, `_redis_cache`,
`_redis_revocations`, `_shared_refresh`) import the `redis` package (and `_config`
imports this one, only to check a Redis URL it was given), so the package is needed only by those
who configure a Redis URL.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import logging
from collections.abc import Callable, Iterator
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    ConnectionPool,
    SSLConnection,
    UnixDomainSocketConnection,
    parse_url,
)
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError, RedisClusterException, RedisError

from ._exceptions import StoreUnavailable

__all__: list[str] = []

logger = logging.getLogger("pkce_middleware")

#: What a Redis that cannot serve raises: `RedisError`s, and what a Cluster client raises when no
#: node it knows of answers (`RedisClusterException` is no `RedisError`).
REDIS_DOWN = (RedisError, RedisClusterException)

PREFIX = "pkce:"

SERVER_SCHEMES = ("redis", "rediss", "unix")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SCHEMES = (*SERVER_SCHEMES, *SENTINEL_SCHEMES, *CLUSTER_SCHEMES)
_SENTINEL_PORT = 26379
_SERVER_PORT = 6379
#: Options for the sentinels' own connections, not the servers'.
_SENTINEL_CREDENTIALS = ("sentinel_username", "sentinel_password")
#: How much of an error's message goes into `StoreUnavailable` (and so the log line): redis-py's
#: can run to kilobytes of connection reprs, and what happened is said in its first few hundred.
_MESSAGE_LIMIT = 300


def redis_key(kind: str, value: str) -> str:
    """`pkce:<kind>:<sha256(value)>`."""
    return f"{PREFIX}{kind}:{hashlib.sha256(value.encode('utf-8', 'surrogatepass')).hexdigest()}"


def connect(url: str, *, socket_timeout: float, health_check_interval: int) -> redis.asyncio.Redis:
    """A client for `url` (see the module docstring), which must have passed `check_url`.

    A Cluster client is typed as `redis.asyncio.Redis`: `RedisCluster` is not a subclass, but it has
    the same command methods, and the few the stores use (single-key commands, and scripts and
    pipelines on one key) are tested against a real cluster. `is_cluster` tells them apart
    where commands must differ (no multi-key command across hash slots).
    """
    defaults: dict[str, Any] = {
        # Short timeouts: a Redis that does not answer should give a quick 503, not hang
        # every request for the library's default.
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_timeout,
        # A pooled connection idle this long is PINGed before use, so one that died with a
        # Redis restart is replaced instead of failing a request.
        "health_check_interval": health_check_interval,
        # One immediate retry on a broken connection (a restarted Redis, a failed-over master, a
        # cluster node that moved), none on a timeout (a Cluster client retries that once too, so
        # up to twice the timeout there): the default (retries with backoff) would turn an outage
        # into seconds per request.
        "retry": Retry(NoBackoff(), 1, supported_errors=(ConnectionError,)),
    }
    scheme = urlsplit(url).scheme
    if scheme in SENTINEL_SCHEMES:
        return _sentinel_master(_Topology.parse(url), defaults)
    if scheme in CLUSTER_SCHEMES:
        topology = _Topology.parse(url)
        cluster = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in topology.nodes],
            **{**defaults, **topology.options},
        )
        return cast(redis.asyncio.Redis, cluster)
    return redis.asyncio.from_url(url, **defaults)


def is_cluster(client: redis.asyncio.Redis) -> bool:
    """Whether `client` talks to a Redis Cluster, where one command (or MULTI, or script) may only
    touch keys of one hash slot."""
    return isinstance(client, RedisCluster)  # a `Redis` by its type only: see `connect`


def check_url(url: str) -> str | None:
    """What is wrong with `url` as a Redis URL, or `None`; for the configuration's error message."""
    scheme = urlsplit(url).scheme
    if scheme not in SCHEMES:
        return f"the scheme must be one of {', '.join(f'{s}://' for s in SCHEMES)}"
    try:
        if scheme in SERVER_SCHEMES:
            parse_url(url)  # redis-py's own form; this checks the options' values
        else:
            _Topology.parse(url)
    except ValueError as exc:
        return str(exc)
    # redis-py passes any option on to the connections, and an unknown one would then fail every
    # request (a TypeError, not a Redis error): refused here instead, at startup.
    known = _CLUSTER_OPTIONS if scheme in CLUSTER_SCHEMES else _CONNECTION_OPTIONS
    if scheme in SENTINEL_SCHEMES:
        known = known | set(_SENTINEL_CREDENTIALS)
    unknown = sorted(set(parse_qs(urlsplit(url).query)) - known)
    if unknown:
        return f"unknown option(s) in the query string: {', '.join(unknown)}"
    return None


def _parameters(*functions: Callable[..., object]) -> frozenset[str]:
    names = {name for function in functions for name in inspect.signature(function).parameters}
    return frozenset(names - {"self", "kwargs"})


_CONNECTION_OPTIONS = _parameters(
    AbstractConnection.__init__,
    Connection.__init__,
    SSLConnection.__init__,
    UnixDomainSocketConnection.__init__,
    ConnectionPool.__init__,
) - {"connection_class"}
_CLUSTER_OPTIONS = _parameters(RedisCluster.__init__)


@dataclasses.dataclass(frozen=True)
class _Topology:
    """A sentinel or cluster URL taken apart: where to start, the master's name, client options."""

    nodes: tuple[tuple[str, int], ...]
    master: str
    options: dict[str, Any]
    sentinel_options: dict[str, Any]

    @classmethod
    def parse(cls, url: str) -> _Topology:
        # redis-py has no URL form for either, so the host list and path are ours; the userinfo
        # and query go through redis-py's own parser (percent-decoding, typed options).
        parts = urlsplit(url)
        sentinel = parts.scheme in SENTINEL_SCHEMES
        userinfo, _, hosts = parts.netloc.rpartition("@")
        default_port = _SENTINEL_PORT if sentinel else _SERVER_PORT
        nodes = tuple(_host_port(host, default_port) for host in hosts.split(","))
        segments = parts.path.split("/")[1:] if parts.path else []
        if sentinel:
            if not segments or not segments[0]:
                raise ValueError("a sentinel URL names the master after the hosts: /<master name>[/<db>]")
            if len(segments) > 2:
                raise ValueError("a sentinel URL's path is /<master name>[/<db>]")
            master, db = unquote(segments[0]), (segments[1] if len(segments) == 2 else "0")
        else:
            if segments not in ([], [""], ["0"]):
                raise ValueError("a cluster URL has no path (a cluster has database 0 only)")
            master, db = "", "0"
        if not db.isdigit():
            raise ValueError(f"the database must be a number, not {db!r}")
        tls = parts.scheme.startswith("rediss")
        placeholder = f"{'rediss' if tls else 'redis'}://{userinfo + '@' if userinfo else ''}localhost/{db}"
        options: dict[str, Any] = dict(parse_url(f"{placeholder}?{parts.query}" if parts.query else placeholder))
        for name in ("host", "port", "path"):
            options.pop(name, None)
        if options.pop("connection_class", None) is SSLConnection:
            options["ssl"] = True
        sentinel_options: dict[str, Any] = {}
        for name in _SENTINEL_CREDENTIALS:
            if name in options:
                sentinel_options[name.removeprefix("sentinel_")] = options.pop(name)
        if not sentinel:
            if sentinel_options:
                raise ValueError("sentinel_username and sentinel_password are for sentinel URLs")
            if options.pop("db", 0) != 0:
                raise ValueError("a cluster has database 0 only")
        return cls(nodes, master, options, sentinel_options)


def _host_port(text: str, default_port: int) -> tuple[str, int]:
    if text.startswith("["):  # [IPv6]:port
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    if not host:
        raise ValueError(f"a host is missing in the host list (`{text}`)")
    if not port:
        return host, default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"`{port}` is not a port (in `{text}`)")
    return host, int(port)


class _SentinelMaster(redis.asyncio.Redis):
    """The master's client, which also closes the clients of the sentinels that name the master."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        await cast(SentinelConnectionPool, self.connection_pool).sentinel_manager.aclose()


class _SentinelClient(redis.asyncio.Redis):
    """A sentinel's client, which keeps the error of its last command (`None` after a success)."""

    failure: RedisError | None = None

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        try:
            result = await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        except RedisError as exc:
            self.failure = exc
            raise
        self.failure = None
        return result


class _Sentinel(Sentinel):
    """Sentinels whose `MasterNotFoundError` says why no master was found.

    redis-py's names each sentinel by its client's repr (some 800 characters each) and each failure
    by its type only, and chains no cause: an untrusted CA or a wrong password would be nowhere in
    the log, behind kilobytes of noise.
    """

    def __init__(self, nodes: list[tuple[str, int]], *, sentinel_kwargs: dict[str, Any], **options: Any) -> None:
        super().__init__(nodes, sentinel_kwargs=sentinel_kwargs, **options)  # type: ignore[no-untyped-call]
        # The same clients redis-py makes (it has no hook for their class), never connected yet.
        self.sentinels = [_SentinelClient(host=host, port=port, **sentinel_kwargs) for host, port in nodes]

    async def discover_master(self, service_name: str) -> Any:
        try:
            return await super().discover_master(service_name)
        except MasterNotFoundError:
            failures: list[tuple[str, RedisError | None]] = []
            for client in self.sentinels:
                where = client.connection_pool.connection_kwargs
                failures.append((f"{where['host']}:{where['port']}", getattr(client, "failure", None)))
            said = ", ".join(
                f"{address} {'knows no master in good state' if failure is None else type(failure).__name__}"
                for address, failure in failures
            )
            cause = next((failure for _, failure in failures if failure is not None), None)
            raise MasterNotFoundError(f"No master found for {service_name!r} ({said})") from cause


def _sentinel_master(topology: _Topology, defaults: dict[str, Any]) -> redis.asyncio.Redis:
    options = {**defaults, **topology.options}
    # The sentinels get the same timeouts, retry and TLS settings, but their own credentials: the
    # URL's are the servers'.
    to_sentinels = {
        name: value
        for name, value in options.items()
        if name.startswith(("socket_", "ssl")) or name in ("retry", "health_check_interval")
    }
    to_sentinels.update(topology.sentinel_options)
    sentinel = _Sentinel(list(topology.nodes), sentinel_kwargs=to_sentinels, **options)
    # The pool asks the sentinels for the master whenever it connects, so after a failover the
    # first command on a connection to the old master (now a replica: READONLY, or gone: refused)
    # is retried once on a connection to the new one.
    return cast(redis.asyncio.Redis, sentinel.master_for(topology.master, redis_class=_SentinelMaster))


def text(raw: bytes | str) -> str:
    # latin-1 never fails: a value we did not write is then refused by `SessionCodec.open`.
    return raw if isinstance(raw, str) else raw.decode("latin-1")


@contextlib.contextmanager
def unavailable(what: str) -> Iterator[None]:
    try:
        yield
    except REDIS_DOWN as exc:
        # Connection refused or reset, timeout, LOADING, READONLY, OOM, NOAUTH: Redis cannot serve,
        # and that is a 503 for this request, never a logout.
        detail = f"redis {what}: {described(exc)}"
        if isinstance(exc, RedisClusterException):
            # No `RedisError`: the cluster client was asked what no cluster serves (keys of two
            # slots in one command: a bug here) or reached none of the nodes it knows. Either
            # needs an operator's look, and the stack tells which.
            logger.warning("redis cluster client failed: %s", detail, exc_info=exc)
        raise StoreUnavailable(detail) from exc


def described(exc: BaseException) -> str:
    """`Type: message`, bounded, and the error that caused it when that says more (a refused TLS
    handshake under a `ConnectionError`, a sentinel's failure under `MasterNotFoundError`)."""
    said = f"{type(exc).__name__}: {_bounded(str(exc))}"
    cause = exc.__cause__
    if cause is None and not exc.__suppress_context__:
        cause = exc.__context__
    if cause is not None and str(cause) and str(cause) not in str(exc):
        said += f" (cause: {type(cause).__name__}: {_bounded(str(cause))})"
    return said


def _bounded(message: str) -> str:
    return message if len(message) <= _MESSAGE_LIMIT else message[:_MESSAGE_LIMIT] + "..."


def redacted(url: str) -> str:
    """The URL without credentials or query string (where a password may also be given)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    userinfo = "***@" if "@" in parts.netloc else ""
    return f"{parts.scheme}://{userinfo}{host}{parts.path}"
