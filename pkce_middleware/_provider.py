"""The identity provider as the rest of the package sees it: one `Provider` per configured provider.

It is the login client (discovery, the authorization URL, code redemption, refresh, the
end-session URL, logout tokens) and the facade over the provider's other parts, each in its own
module and sharing one `ProviderClient`: the signing keys (`_provider_keys`), the userinfo
endpoint (`_provider_userinfo`) and the bearer-token calls of the resource server
(`_provider_bearer`). Discovery is fetched once and cached, and a failed discovery is not retried
for a few seconds. The calls themselves (one deadline each, a size cap, client authentication)
are `_provider_http`'s. What the answers mean is decided without I/O elsewhere: `_discovery`
(metadata, JWKS) and `_tokens` (token answers, JWTs); this module only does the calls between
those steps.

References:
    RFC 6749 sections 4.1.3 (token request) and 6 (refresh),
    OpenID Connect Core 1.0 section 12 (refresh; 12.2 for the refreshed ID token),
    OpenID Connect Back-Channel Logout 1.0 section 2.6 (logout token validation),
    OpenID Connect RP-Initiated Logout 1.0 section 2 (the logout request).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx
from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc6749.parameters import prepare_token_request

from ._bearer import AccessTokenValidator, TokenInfo
from ._config import PKCEConfig
from ._discovery import ProviderMetadata
from ._exceptions import ConfigError, DiscoveryMismatch, IDTokenError, ProviderError, Reason, SessionEnded
from ._flow import LoginFlow
from ._provider_bearer import BearerChecks
from ._provider_http import DISCOVERY, ProviderClient
from ._provider_http import MAX_RESPONSE_BYTES as MAX_RESPONSE_BYTES  # re-exported: tests may use it here
from ._provider_keys import ProviderKeys
from ._provider_userinfo import Userinfo
from ._tokens import CODE_GRANT, PLAIN_CODE_GRANT, REFRESH_GRANT, LogoutClaims, TokenValidator, merged_claims

__all__: list[str] = []

logger = logging.getLogger("pkce_middleware")

#: After a failed discovery, later logins wait this long before asking again (no retry storms).
DISCOVERY_RETRY_INTERVAL = 5.0
#: Core section 11: offline_access is to be asked for with prompt=consent; providers ignore it
#: otherwise (oidc-provider drops the scope), and the session would get no refresh token.
_OFFLINE_ACCESS = "offline_access"


class Provider:
    def __init__(self, config: PKCEConfig, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._config = config
        self._http = ProviderClient(config, transport=transport)
        self._metadata: ProviderMetadata | None = None
        self._metadata_failed_at = -DISCOVERY_RETRY_INTERVAL
        #: Why the last discovery failed, repeated while later logins wait to ask again.
        self._metadata_failure = ""
        self._lock = asyncio.Lock()
        self._validator: TokenValidator | None = None
        self._keys = ProviderKeys(self._http, lock=self._lock)
        self._userinfo = Userinfo(config, self._http, self._keys)
        self._bearer = BearerChecks(config, self._http, self._keys, self.metadata)

    def __repr__(self) -> str:
        return f"Provider(issuer={self._config.issuer!r})"

    async def startup(self) -> None:
        """Load discovery and keys early; an outage now is not fatal, a wrong issuer is."""
        # A server may run the lifespan again after a shutdown closed the client (TestClient does).
        self._http.open()
        try:
            metadata = await self.metadata()
            if not self._config.plain_oauth:  # no ID tokens, so no keys
                await self._keys.load(metadata, force=False)
        except DiscoveryMismatch as exc:
            # The lifespan fails and will not shut down, so nothing else would close the client.
            await self.aclose()
            raise ConfigError(exc.detail) from None
        except ProviderError as exc:
            logger.warning(
                "provider not usable at startup; will retry on first login: reason=%s detail=%s", exc.error, exc.detail
            )

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def _client(self) -> httpx.AsyncClient:
        """The current HTTP client (tests look at it)."""
        return self._http.client

    async def metadata(self) -> ProviderMetadata:
        if self._metadata is not None:
            return self._metadata
        async with self._lock:
            if self._metadata is not None:
                return self._metadata
            if time.monotonic() - self._metadata_failed_at < DISCOVERY_RETRY_INTERVAL:
                raise ProviderError(
                    f"discovery failed moments ago ({self._metadata_failure})", error=Reason.PROVIDER_UNAVAILABLE
                )
            if self._config.plain_oauth:
                self._metadata = ProviderMetadata.configured(self._config)
                return self._metadata
            url = self._config.issuer.rstrip("/") + "/.well-known/openid-configuration"
            try:
                metadata = ProviderMetadata.parse(await self._http.get_json(url, DISCOVERY), self._config)
            except Exception as exc:
                # Any failure, even one not foreseen here, must not let every login ask again at once.
                self._metadata_failed_at = time.monotonic()
                detail = exc.detail if isinstance(exc, ProviderError) else type(exc).__name__
                self._metadata_failure = detail if url in detail else f"{url}: {detail}"
                if isinstance(exc, DiscoveryMismatch):
                    logger.error("%s", exc)
                raise
            self._metadata = metadata
            self._validator = TokenValidator(
                issuer=metadata.issuer,
                client_id=self._config.client_id,
                algorithms=metadata.id_token_algorithms,
                leeway=self._config.clock_leeway,
            )
            return metadata

    async def authorization_url(self, flow: LoginFlow) -> str:
        metadata = await self.metadata()
        params = [
            ("response_type", "code"),
            ("client_id", self._config.client_id),
            ("redirect_uri", flow.redirect_uri),
            ("scope", " ".join(self._config.scopes)),
            ("state", flow.state),
            ("code_challenge", flow.code_challenge),
            ("code_challenge_method", "S256"),
        ]
        if not self._config.plain_oauth:  # OIDC Core 3.1.2.1; a plain OAuth 2.0 provider issues no ID token
            params.insert(5, ("nonce", flow.nonce))
        prompts = [flow.prompt] if flow.prompt else []
        if _OFFLINE_ACCESS in self._config.scopes:
            prompts.append("consent")
        if prompts:
            params.append(("prompt", " ".join(prompts)))
        if flow.acr_values:
            params.append(("acr_values", " ".join(flow.acr_values)))
        if flow.max_age is not None:
            params.append(("max_age", str(flow.max_age)))
        if self._config.response_mode == "form_post":
            params.append(("response_mode", "form_post"))
        return str(add_params_to_uri(metadata.authorization_endpoint, params))

    @property
    def origins(self) -> set[str]:
        """The provider's own origins (its issuer, its end-session endpoint): who may frame our
        front-channel logout page."""
        found = {self.end_session_origin or ""}
        if self._config.issuer:
            parts = urlsplit(self._config.issuer)
            found.add(f"{parts.scheme}://{parts.netloc}")
        return found - {""}

    @property
    def authorization_origin(self) -> str | None:
        """The origin of the authorization endpoint (discovery's once loaded, else the configured
        endpoint's or the issuer's): where a login form's answer redirects the browser."""
        if self._metadata is not None:
            endpoint = self._metadata.authorization_endpoint
        else:
            endpoint = self._config.authorization_endpoint or self._config.issuer
        if not endpoint:
            return None
        parts = urlsplit(endpoint)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def end_session_origin(self) -> str | None:
        """The origin of the end-session endpoint, once discovery has named one."""
        endpoint = self._metadata.end_session_endpoint if self._metadata is not None else None
        if endpoint is None:
            return None
        parts = urlsplit(endpoint)
        return f"{parts.scheme}://{parts.netloc}"

    def end_session_url(self, *, id_token: str | None, post_logout_redirect_uri: str) -> str | None:
        """RP-Initiated Logout 1.0 section 2, or `None` when the provider has no such endpoint.

        `client_id` goes along even with an `id_token_hint`: the provider needs it to check the
        redirect URI when the hint is absent or expired. `state` is random: nothing comes back
        to check it against (the landing page holds no state), but some providers require one.
        """
        if self._metadata is None or self._metadata.end_session_endpoint is None:
            return None
        params = [
            ("client_id", self._config.client_id),
            ("post_logout_redirect_uri", post_logout_redirect_uri),
            ("state", secrets.token_urlsafe(16)),
        ]
        if id_token:
            params.insert(0, ("id_token_hint", id_token))
        return str(add_params_to_uri(self._metadata.end_session_endpoint, params))

    async def redeem(self, flow: LoginFlow, code: str, *, now: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """Exchange `code` for tokens and validate the ID token: `(token response, ID token claims)`."""
        metadata = await self.metadata()
        body = prepare_token_request(
            "authorization_code", code=code, redirect_uri=flow.redirect_uri, code_verifier=flow.code_verifier
        )
        if self._config.plain_oauth:
            # No ID token: who signed in is what the profile endpoint says for this access token.
            token = await self._http.post_token(metadata, body, PLAIN_CODE_GRANT)
            token.pop("id_token", None)  # nothing here could validate one, so none is kept or sent on
            return token, await self._userinfo.fetch(metadata, None, token["access_token"], sub=None)
        validator = self._validator
        assert validator is not None  # set together with the metadata just awaited
        token = await self._http.post_token(metadata, body, CODE_GRANT)
        # The ID token was minted during that call: judged by the clock after it, or with no
        # leeway one minted as our second turned over would be "from the future".
        now = max(now, int(time.time()))
        claims = await self._keys.verify(
            metadata,
            lambda keys: validator.validate(
                token["id_token"], keys, nonce=flow.nonce, access_token=token["access_token"], now=now
            ),
            error=Reason.ID_TOKEN_INVALID,
        )
        if self._config.userinfo:
            info = await self._userinfo.fetch(metadata, validator, token["access_token"], sub=claims["sub"])
            claims = merged_claims(claims, info)
        return token, claims

    async def refresh(
        self, refresh_token: str, *, previous_claims: Mapping[str, Any], now: int
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Redeem `refresh_token`: `(token response, claims of its ID token or None)`.

        The answer may lack `refresh_token` (keep the old one) and `id_token` (keep the old claims).
        `previous_claims` are the session's; a new ID token must keep their `sub` (Core section 12.2).
        `refresh_rejected` (401) means the refresh token is dead and the session with it; any other
        error is the provider's trouble, and the session may live on while its access token does.
        """
        if not refresh_token:
            raise SessionEnded("no refresh token", error=Reason.REFRESH_REJECTED)
        metadata = await self.metadata()
        validator = self._validator
        body = prepare_token_request("refresh_token", refresh_token=refresh_token)
        token = await self._http.post_token(metadata, body, REFRESH_GRANT)
        now = max(now, int(time.time()))  # as at login: the clock after the call that minted it
        if validator is None:  # a plain OAuth 2.0 provider: no keys to check an ID token with
            token.pop("id_token", None)
        raw = token.get("id_token")
        claims: dict[str, Any] | None = None
        if raw is not None:
            assert validator is not None
            claims = await self._keys.verify(
                metadata,
                lambda keys: validator.validate_refreshed(
                    raw, keys, previous_claims=previous_claims, access_token=token["access_token"], now=now
                ),
                error=Reason.REFRESH_ID_TOKEN_INVALID,
            )
        if self._config.userinfo or self._config.plain_oauth:
            claims = await self._userinfo.after_refresh(
                metadata, validator, token["access_token"], claims, previous_claims
            )
        return token, claims

    async def validate_logout_token(self, raw: str, *, now: int) -> LogoutClaims:
        """Back-Channel Logout 1.0 section 2.6; `IDTokenError` (`logout_token_invalid`, 400) on any rule.

        Fetching the JWKS may still fail with `ProviderError`/`ProviderTimeout` (the provider's trouble,
        not the token's). The `jti` is returned unchecked: replay detection needs the session store.
        """
        metadata = await self.metadata()
        validator = self._validator
        if validator is None:
            raise IDTokenError(
                "a plain OAuth 2.0 provider sends no logout tokens", error=Reason.LOGOUT_TOKEN_INVALID, status_code=400
            )
        return await self._keys.verify(
            metadata,
            lambda keys: validator.validate_logout_token(raw, keys, now=now),
            error=Reason.LOGOUT_TOKEN_INVALID,
            status_code=400,
        )

    # -- access tokens (bearer paths): `_provider_bearer`'s --------------------------------------

    async def verify_access_token(self, raw: str, validator: AccessTokenValidator, *, now: float) -> TokenInfo:
        return await self._bearer.verify_access_token(raw, validator, now=now)

    async def introspect(self, token: str, *, resource: str, now: float) -> TokenInfo:
        return await self._bearer.introspect(token, resource=resource, now=now)
