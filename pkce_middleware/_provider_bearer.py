"""The provider's part in judging a bearer token: its keys for a JWT, its introspection endpoint
for an opaque token.

These calls serve the resource server (`_resource`), where the provider's trouble and the token's
fault must stay apart: a missing key after a refetch or a refused token is a `BearerError` (401),
while discovery, JWKS or introspection that cannot be reached is a `BearerUnavailable` (503), so
a client is never told to get a new token because the provider is down. The rules a token must
meet are `_bearer`'s, without I/O.

References:
    RFC 9068 section 4 (validating a JWT access token),
    RFC 7662 (introspection), RFC 6749 section 5.2 (an error answer).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import urlencode

from ._bearer import AccessTokenValidator, TokenInfo, check_introspection
from ._config import PKCEConfig
from ._discovery import ProviderMetadata
from ._exceptions import BearerError, BearerUnavailable, IDTokenError, ProviderError, Reason
from ._provider_http import INTROSPECTION, ProviderClient
from ._provider_keys import ProviderKeys

__all__: list[str] = []


class BearerChecks:
    """One provider's answers about access tokens; `discover` is its (cached) discovery."""

    def __init__(
        self,
        config: PKCEConfig,
        http: ProviderClient,
        keys: ProviderKeys,
        discover: Callable[[], Awaitable[ProviderMetadata]],
    ) -> None:
        self._config = config
        self._http = http
        self._keys = keys
        self._discover = discover

    async def verify_access_token(self, raw: str, validator: AccessTokenValidator, *, now: float) -> TokenInfo:
        """A JWT access token checked with the provider's keys (RFC 9068 section 4).

        A token with an unknown `kid` refetches the JWKS at most once per interval, as ID tokens
        do: tokens arrive at an open door, so forged ones must not drive our JWKS traffic. Keys
        that cannot be fetched are the provider's trouble (`BearerUnavailable`, 503), not the token's.
        """
        metadata = await self._metadata()
        try:
            return await self._keys.verify(
                metadata, lambda keys: validator.validate(raw, keys, now=now), error=Reason.BEARER_INVALID
            )
        except IDTokenError as exc:  # the key refetch's verdict: still no key for this token
            raise BearerError(exc.detail, error=Reason.BEARER_INVALID) from None
        except ProviderError as exc:
            raise BearerUnavailable(f"JWKS: {exc.detail}", error=exc.error) from None

    async def introspect(self, token: str, *, resource: str, now: float) -> TokenInfo:
        """RFC 7662 with our client's credentials: the checked answer for an opaque token."""
        metadata = await self._metadata()
        endpoint = metadata.introspection_endpoint
        if endpoint is None:
            raise BearerError("an opaque token, and the provider offers no introspection", error=Reason.BEARER_INVALID)
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        body = urlencode({"token": token, "token_type_hint": "access_token"})
        url, headers, body = self._http.client_auth(metadata).prepare("POST", endpoint, headers, body)
        try:
            response, data = await self._http.call("POST", url, INTROSPECTION, headers=headers, content=body)
        except ProviderError as exc:
            raise BearerUnavailable(exc.detail, error=Reason.INTROSPECTION_UNAVAILABLE) from None
        if response.status_code == 400 and isinstance(data, dict) and isinstance(data.get("error"), str):
            # RFC 7662 section 2.3 / RFC 6749 section 5.2: the provider refuses this token outright
            # (oidc-provider's `unsupported_token_type` for an ID token): a verdict, not an outage.
            raise BearerError(f"introspection refused the token: {data['error'][:40]!r}", error=Reason.BEARER_INVALID)
        if response.status_code != 200:
            raise BearerUnavailable(
                f"introspection answered HTTP {response.status_code}", error=Reason.INTROSPECTION_UNAVAILABLE
            )
        return check_introspection(
            data, issuer=self._config.issuer, resource=resource, now=now, leeway=self._config.clock_leeway
        )

    async def _metadata(self) -> ProviderMetadata:
        try:
            return await self._discover()
        except ProviderError as exc:
            raise BearerUnavailable(f"discovery: {exc.detail}", error=exc.error) from None
