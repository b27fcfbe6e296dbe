"""The provider's signing keys (its JWKS), and every signature check made with them.

ID tokens, logout tokens, signed userinfo answers and JWT access tokens are all checked here,
through `ProviderKeys.verify`, so they share one cache and one refetch budget. The JWKS is cached
for at most `JWKS_MAX_AGE`. A token with an unknown `kid` causes at most one refetch per
`JWKS_REFETCH_INTERVAL` (logout tokens and access tokens arrive at open doors, so that limit also
keeps forged ones from driving our JWKS traffic), and a failed fetch is not retried for
`JWKS_RETRY_INTERVAL`. Parsing the JWKS is `_discovery`'s; the fetch is `_provider_http`'s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TypeVar

from joserfc.jwk import KeySet

from ._discovery import ProviderMetadata, parse_jwks
from ._exceptions import IDTokenError, ProviderError, Reason, UnknownKeyId
from ._provider_http import JWKS, ProviderClient

__all__: list[str] = []

logger = logging.getLogger("pkce_middleware")

JWKS_REFETCH_INTERVAL = 60.0
#: After a failed JWKS fetch, later logins wait this long: without it, every callback during an
#: outage would ask again.
JWKS_RETRY_INTERVAL = 5.0
#: A key the provider withdrew (compromised, retired) stops being trusted at most this long after.
#: Discovery has no such limit: its endpoints and issuer are configuration that a provider changes
#: only with its clients' knowledge, and re-checking it while running could only turn a working
#: service into a failing one; the keys are what an attacker who stole one would need us to keep.
JWKS_MAX_AGE = 24 * 3600.0
_T = TypeVar("_T")


class ProviderKeys:
    """One provider's JWKS: cached, renewed when old, refetched (rarely) for an unknown `kid`."""

    def __init__(self, http: ProviderClient, *, lock: asyncio.Lock) -> None:
        self._http = http
        # The provider's discovery lock: one fetch from the provider at a time, whichever it is.
        self._lock = lock
        self._keys: KeySet | None = None
        self._fetched_at = 0.0
        self._forced_at = -JWKS_REFETCH_INTERVAL
        self._failed_at = -JWKS_RETRY_INTERVAL

    async def verify(
        self,
        metadata: ProviderMetadata,
        check: Callable[[KeySet], _T],
        *,
        error: Reason,
        status_code: int | None = None,
    ) -> _T:
        """`check(keys)` with the cached JWKS, and once more with a refetched one for an unknown `kid`.

        Every `IDTokenError` leaves with reason code `error`, so login, refresh and logout tokens
        are told apart in the log.
        """
        try:
            keys = await self.load(metadata, force=False)
            try:
                return check(keys)
            except UnknownKeyId as exc:
                kid = exc.kid
            if time.monotonic() - self._forced_at < JWKS_REFETCH_INTERVAL:
                raise IDTokenError(f"kid {kid!r} unknown and the JWKS was refetched moments ago")
            keys = await self.load(metadata, force=True)
            try:
                return check(keys)
            except UnknownKeyId:
                raise IDTokenError(f"kid {kid!r} not in the provider's JWKS") from None
        except IDTokenError as exc:
            raise IDTokenError(exc.detail, error=error, status_code=status_code) from None

    async def load(self, metadata: ProviderMetadata, *, force: bool) -> KeySet:
        """The JWKS: cached, refetched when older than `JWKS_MAX_AGE`, or on `force` (an unknown `kid`).

        A failed fetch raises, unless it only meant to renew keys we still hold: those stay in use
        (an outage must not end every login) until a fetch succeeds. Either way the next attempt
        waits `JWKS_RETRY_INTERVAL`.
        """
        if self._keys is not None and not force and not self._expired():
            return self._keys
        async with self._lock:
            now = time.monotonic()
            if self._keys is not None:
                if force and now - self._forced_at < JWKS_REFETCH_INTERVAL:
                    return self._keys  # another login just refetched while this one waited
                if not force and not self._expired():
                    return self._keys  # another login fetched them while this one waited
            if now - self._failed_at < JWKS_RETRY_INTERVAL:
                if self._keys is not None and not force:
                    return self._keys
                raise ProviderError("JWKS fetch failed moments ago", error=Reason.PROVIDER_UNAVAILABLE)
            if force:
                self._forced_at = now
            try:
                keys = parse_jwks(await self._http.get_json(metadata.jwks_uri, JWKS))
            except ProviderError as exc:
                self._failed_at = time.monotonic()
                if self._keys is None or force:
                    raise
                logger.warning(
                    "JWKS refetch failed (%s); still using the keys fetched %d s ago",
                    exc.error,
                    now - self._fetched_at,
                )
                return self._keys
            self._keys = keys
            self._fetched_at = time.monotonic()
            return keys

    def _expired(self) -> bool:
        return time.monotonic() - self._fetched_at >= JWKS_MAX_AGE
