"""The composition root: every part of the middleware, built from the configuration in one place,
and the lifespan that starts and stops them.

This is the only module that chooses a session store or a revocation log; the Redis-backed ones
are imported here, and only when configured, so the `redis` package is needed only by those who
use it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._config import PKCEConfig
from ._cookie_store import REFRESH_RESULT_TTL, CookieStore
from ._cookies import CookiePolicy, CookieWriter
from ._crypto import Sealer
from ._exceptions import ConfigError
from ._flow import FlowCodec, UsedStates
from ._lifecycle import SessionManager
from ._provider import Provider
from ._revocations import MemoryRevocations
from ._rules import Require, Rules
from ._session import Session, SessionCodec
from ._store import SessionStore

__all__: list[str] = []

logger = logging.getLogger("pkce_middleware")

_REDIS_EXTRA = "pip install 'pkce_middleware[redis]'"


@dataclasses.dataclass(frozen=True, slots=True)
class Components:
    config: PKCEConfig
    cookies: CookiePolicy
    flows: FlowCodec
    used_states: UsedStates
    #: Every provider by name ("" for the only one); the first is the one bearer tokens come from.
    providers: Mapping[str, Provider]
    store: SessionStore
    lifecycle: SessionManager
    rules: Rules

    @property
    def provider(self) -> Provider:
        """The first provider: the only one, unless `PKCE_PROVIDERS` names several."""
        return next(iter(self.providers.values()))

    async def startup(self) -> None:
        """Load discovery and keys, connect the store; a `ConfigError` fails the startup."""
        for provider in self.providers.values():
            await provider.startup()
        await self.store.startup()
        workers = worker_count()
        if workers > 1 and self.config.session_store == "cookie" and self.config.revocation_store == "memory":
            logger.warning(
                "%d workers share no revocation store: a session cookie replayed after its logout is still "
                "accepted by the other workers; set PKCE_REVOCATION_STORE to a Redis URL (README, Deployment)",
                workers,
            )

    async def aclose(self) -> None:
        for provider in self.providers.values():
            await provider.aclose()
        await self.store.aclose()

    async def start_session(self, session: Session, scope: Scope, cookies: CookieWriter) -> None:
        """Save the session of a finished login and put its cookie(s) on `cookies`.

        Never adopts a session the browser brought along (fixation): that one is dropped first.
        """
        old = await self.store.load(scope)
        await self.store.discard(old.session if old else None, scope, cookies)
        await self.store.save(session, scope, cookies)

    async def session_in_code(self, claims: Mapping[str, Any], token: Mapping[str, Any]) -> list[str]:
        """`PKCEMiddleware.create_session`: a session started as a login would, its Set-Cookie values."""
        writer = CookieWriter()
        # Of several providers (`PKCE_PROVIDERS`), a session of the first: "" names no provider there.
        session = self.lifecycle.start(claims, token, next(iter(self.providers)))
        # A request that carries no cookie: nothing to replace or delete, as on a first login.
        await self.start_session(session, {"type": "http", "headers": []}, writer)
        return [value.decode("latin-1") for name, value in writer.raw_headers if name == b"set-cookie"]


def worker_count(environ: Mapping[str, str] | None = None, parent_cmdline: bytes | None = None) -> int:
    """How many worker processes the server runs, as far as can be told: `WEB_CONCURRENCY` (read by
    uvicorn and gunicorn), or `--workers N` / `-w N` on the command line of the process that
    started this one (the server's master). 1 when nothing says more."""
    env = os.environ if environ is None else environ
    counts = [env.get("WEB_CONCURRENCY", "")]
    if parent_cmdline is None:
        try:
            parent_cmdline = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
        except OSError:
            parent_cmdline = b""
    args = parent_cmdline.decode("utf-8", "replace").split("\0")
    for index, arg in enumerate(args):
        if arg in ("--workers", "-w") and index + 1 < len(args):
            counts.append(args[index + 1])
        elif arg.startswith("--workers="):
            counts.append(arg.partition("=")[2])
    return max([int(count) for count in counts if count.strip().isdigit()] or [1])


def build(
    config: PKCEConfig,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    session_cache_size: int = 1024,
    rules: Mapping[str, Require] | None = None,
) -> Components:
    keys = [str(key) for key in config.secret_keys]
    cookies = CookiePolicy(secure=config.cookie_secure)
    codec = SessionCodec(
        Sealer(keys, bound_purpose("session", config)),
        cache_size=session_cache_size,
        bindings=config.provider_bindings,
    )
    providers = {name: Provider(own, transport=transport) for name, _, own in config.each_provider}
    id_sealer = Sealer(keys, bound_purpose("session-id", config))
    store = _store(config, codec, cookies, id_sealer, cache_size=session_cache_size)
    return Components(
        config=config,
        cookies=cookies,
        flows=FlowCodec(Sealer(keys, bound_purpose("flow", config))),
        used_states=UsedStates(),
        providers=providers,
        store=store,
        lifecycle=SessionManager(config, store, providers, admissions=session_cache_size),
        rules=Rules(config.require, rules or {}),
    )


def bound_purpose(purpose: str, config: PKCEConfig) -> str:
    """A cookie's sealing purpose, bound to the provider and the client it is for.

    Two apps that share `PKCE_SECRET_KEY` but not their issuer or client id then derive different
    keys and authenticate different data: a session of one is no session of the other, so a user
    admitted to one client cannot walk into the other past the provider's per-client rules.
    """
    return f"{purpose} {config.binding}"


def _store(
    config: PKCEConfig, codec: SessionCodec, cookies: CookiePolicy, id_sealer: Sealer, *, cache_size: int
) -> SessionStore:
    if config.session_store == "cookie":
        return _cookie_store(config, codec, cookies)
    with _needs_redis("PKCE_SESSION_STORE"):
        from ._redis_store import RedisStore
    return RedisStore(
        config.session_store,
        codec,
        cookies,
        id_sealer,
        max_age=config.session_max_age,
        idle_timeout=config.session_idle_timeout,
        # Long enough for discovery, a token call and a key fetch, each with its own deadline.
        lock_timeout=max(30.0, 3 * config.http_timeout + 10),
        cache_size=max(1, cache_size),
    )


def _cookie_store(config: PKCEConfig, codec: SessionCodec, cookies: CookiePolicy) -> CookieStore:
    if config.revocation_store == "memory":
        revocations = MemoryRevocations(max_age=config.session_max_age)
        return CookieStore(codec, cookies, max_age=config.session_max_age, revocations=revocations)
    with _needs_redis("PKCE_REVOCATION_STORE"):
        from ._redis_revocations import SharedRevocations
        from ._shared_refresh import SharedRefresh
    shared = SharedRevocations(config.revocation_store, max_age=config.session_max_age)
    # Where logouts are shared, several processes serve the same sessions: refreshes are made
    # single-flight in the same Redis, over the same client. The results kept there are sealed with
    # a purpose of their own, so Redis holds no cookie that would log anyone in.
    results = SessionCodec(
        Sealer([str(key) for key in config.secret_keys], bound_purpose("refresh-result", config)),
        cache_size=0,
        bindings=config.provider_bindings,
    )
    refresh = SharedRefresh(
        shared,
        results,
        # As long as `RedisStore`'s lock: discovery, a token call and a key fetch, each with its deadline.
        lock_timeout=max(30.0, 3 * config.http_timeout + 10),
        result_ttl=REFRESH_RESULT_TTL,
    )
    return CookieStore(codec, cookies, max_age=config.session_max_age, revocations=shared, shared_refresh=refresh)


@contextlib.contextmanager
def _needs_redis(variable: str) -> Iterator[None]:
    """Turn a missing `redis` package into a `ConfigError` naming the variable and the fix."""
    try:
        yield
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] != "redis":
            raise
        raise ConfigError(f"{variable} is a Redis URL, which needs the redis package: {_REDIS_EXTRA}") from None


async def run_lifespan(components: Components, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Start the components before the app's startup, close them after its shutdown."""
    startup = await receive()
    try:
        await components.startup()
    except ConfigError as exc:
        await components.aclose()  # no shutdown follows a failed startup
        await send({"type": "lifespan.startup.failed", "message": str(exc)})
        return
    replayed = False

    async def receive_after_startup() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return startup
        return await receive()

    async def send_closing(message: Message) -> None:
        if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed", "lifespan.startup.failed"):
            await components.aclose()
        await send(message)

    await app(scope, receive_after_startup, send_closing)
