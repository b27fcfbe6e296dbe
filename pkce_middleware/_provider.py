"""Everything that talks to the identity provider, through one `ProviderClient` (`_provider_http`).

Discovery is fetched once and cached; the JWKS is cached for at most `JWKS_MAX_AGE`. An ID token
or logout token with an unknown `kid` causes at most one JWKS refetch per `JWKS_REFETCH_INTERVAL`
(logout tokens arrive at an unauthenticated endpoint, so that limit also keeps forged ones from
driving our JWKS traffic), and a failed discovery or JWKS fetch is not retried for a few seconds.
The calls themselves (one deadline each, a size cap, client authentication) are `_provider_http`'s.
What the answers mean is decided without I/O elsewhere: `_discovery` (metadata, JWKS) and
`_tokens` (token answers, JWTs); this module only does the calls between those steps.

References:
    RFC 6749 sections 4.1.3 (token request) and 6 (refresh),
    OpenID Connect Core 1.0 section 12 (refresh; 12.2 for the refreshed ID token),
    OpenID Connect Back-Channel Logout 1.0 section 2.6 (logout token validation),
    OpenID Connect RP-Initiated Logout 1.0 section 2 (the logout request).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

import httpx
from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc6749.parameters import prepare_token_request
from joserfc.jwk import KeySet

from ._bearer import AccessTokenValidator, TokenInfo, check_introspection
from ._config import PKCEConfig
from ._discovery import ProviderMetadata, parse_jwks
from ._exceptions import (
    BearerError,
    BearerUnavailable,
    ConfigError,
    DiscoveryMismatch,
    IDTokenError,
    ProviderError,
    Reason,
    SessionEnded,
    UnknownKeyId,
)
from ._flow import LoginFlow
from ._provider_http import DISCOVERY, INTROSPECTION, JWKS, USERINFO, ProviderClient
from ._provider_http import MAX_RESPONSE_BYTES as MAX_RESPONSE_BYTES  # re-exported: tests may use it here
from ._tokens import (
    CODE_GRANT,
    PLAIN_CODE_GRANT,
    PROTOCOL_CLAIMS,
    REFRESH_GRANT,
    LogoutClaims,
    TokenValidator,
    check_userinfo,
    merged_claims,
    plain_profile,
)

__all__: list[str] = []

logger = logging.getLogger("pkce_middleware")

JWKS_REFETCH_INTERVAL = 60.0
#: After a failed discovery, later logins wait this long before asking again (no retry storms).
DISCOVERY_RETRY_INTERVAL = 5.0
#: The same for a failed JWKS fetch: without it, every callback during an outage would ask again.
JWKS_RETRY_INTERVAL = 5.0
#: A key the provider withdrew (compromised, retired) stops being trusted at most this long after.
#: Discovery has no such limit: its endpoints and issuer are configuration that a provider changes
#: only with its clients' knowledge, and re-checking it while running could only turn a working
#: service into a failing one; the keys are what an attacker who stole one would need us to keep.
JWKS_MAX_AGE = 24 * 3600.0
_T = TypeVar("_T")
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
        self._keys: KeySet | None = None
        self._keys_fetched_at = 0.0
        self._keys_forced_at = -JWKS_REFETCH_INTERVAL
        self._keys_failed_at = -JWKS_RETRY_INTERVAL
        self._lock = asyncio.Lock()
        self._validator: TokenValidator | None = None

    def __repr__(self) -> str:
        return f"Provider(issuer={self._config.issuer!r})"

    async def startup(self) -> None:
        """Load discovery and keys early; an outage now is not fatal, a wrong issuer is."""
        # A server may run the lifespan again after a shutdown closed the client (TestClient does).
        self._http.open()
        try:
            await self.metadata()
            if not self._config.plain_oauth:  # no ID tokens, so no keys
                await self._load_keys(force=False)
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
            return token, await self.userinfo(token["access_token"], sub=None)
        validator = self._validator
        assert validator is not None  # set together with the metadata just awaited
        token = await self._http.post_token(metadata, body, CODE_GRANT)
        # The ID token was minted during that call: judged by the clock after it, or with no
        # leeway one minted as our second turned over would be "from the future".
        now = max(now, int(time.time()))
        claims = await self._verify(
            lambda keys: validator.validate(
                token["id_token"], keys, nonce=flow.nonce, access_token=token["access_token"], now=now
            ),
            error=Reason.ID_TOKEN_INVALID,
        )
        if self._config.userinfo:
            claims = merged_claims(claims, await self.userinfo(token["access_token"], sub=claims["sub"]))
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
            claims = await self._verify(
                lambda keys: validator.validate_refreshed(
                    raw, keys, previous_claims=previous_claims, access_token=token["access_token"], now=now
                ),
                error=Reason.REFRESH_ID_TOKEN_INVALID,
            )
        if self._config.userinfo or self._config.plain_oauth:
            claims = await self._refreshed_userinfo(token["access_token"], claims, previous_claims)
        return token, claims

    async def _refreshed_userinfo(
        self, access_token: str, id_claims: dict[str, Any] | None, previous_claims: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """The claims after a refresh with `PKCE_USERINFO`: userinfo read again, so the user's claims
        (groups, email) follow the provider, not the first login.

        The refresh grant has already happened: its tokens (a rotated refresh token is the only one
        left) must reach the session even when userinfo fails, so an outage keeps the session's user
        claims over the new ID token's protocol claims (or `None`, all of them, without a new ID
        token). A userinfo answer for another `sub`, or a signed one that does not verify, is an
        `IDTokenError`: the session ends, as it does for such an ID token.
        """
        try:
            info = await self.userinfo(access_token, sub=str(previous_claims.get("sub", "")))
        except IDTokenError:
            raise
        except ProviderError as exc:
            logger.warning(
                "userinfo failed at refresh; keeping the session's claims: reason=%s detail=%s", exc.error, exc.detail
            )
            return None if id_claims is None else merged_claims(id_claims, previous_claims)
        if self._config.plain_oauth:
            return info  # the profile is all a plain provider says of its user
        if id_claims is None:
            id_claims = {k: v for k, v in previous_claims.items() if k in PROTOCOL_CLAIMS}
        return merged_claims(id_claims, info)

    async def userinfo(self, access_token: str, *, sub: str | None) -> dict[str, Any]:
        """OIDC Core 5.3: the userinfo answer (JSON, or a JWT signed with the provider's keys), whose
        `sub` must be `sub`. For a plain OAuth 2.0 provider its profile, with `sub` taken from
        `PKCE_USER_ID_CLAIM` (`sub=None`: whoever it is, at login)."""
        metadata = await self.metadata()
        validator = self._validator
        assert metadata.userinfo_endpoint is not None  # discovery, or the configuration, checked it
        response, body = await self._http.call_raw(
            "GET", metadata.userinfo_endpoint, USERINFO, headers={"Authorization": f"Bearer {access_token}"}
        )
        if response.status_code != 200:
            raise ProviderError(f"userinfo answered HTTP {response.status_code}", error=Reason.USERINFO_FAILED)
        media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type == "application/jwt":
            raw = body.decode("ascii", "replace").strip()
            if raw.count(".") == 4:
                raise ProviderError("encrypted userinfo (JWE) is not supported", error=Reason.USERINFO_INVALID)
            if validator is None:
                raise ProviderError("a signed profile from a provider without keys", error=Reason.USERINFO_INVALID)
            data: Any = await self._verify(
                lambda keys: validator.validate_userinfo(raw, keys), error=Reason.USERINFO_INVALID
            )
        else:
            try:
                data = json.loads(body)
            except (ValueError, RecursionError):
                raise ProviderError("userinfo answer is not JSON", error=Reason.USERINFO_INVALID) from None
        try:
            if self._config.plain_oauth:
                return plain_profile(data, id_claim=self._config.user_id_claim, sub=sub)
            assert sub is not None
            return check_userinfo(data, sub=sub)
        except IDTokenError as exc:
            if exc.error == Reason.USERINFO_SUB_MISMATCH:
                # A verdict, not an outage: this access token is another user's (at refresh: the session ends).
                raise
            raise ProviderError(exc.detail, error=exc.error) from None

    async def validate_logout_token(self, raw: str, *, now: int) -> LogoutClaims:
        """Back-Channel Logout 1.0 section 2.6; `IDTokenError` (`logout_token_invalid`, 400) on any rule.

        Fetching the JWKS may still fail with `ProviderError`/`ProviderTimeout` (the provider's trouble,
        not the token's). The `jti` is returned unchecked: replay detection needs the session store.
        """
        await self.metadata()
        validator = self._validator
        if validator is None:
            raise IDTokenError(
                "a plain OAuth 2.0 provider sends no logout tokens", error=Reason.LOGOUT_TOKEN_INVALID, status_code=400
            )
        return await self._verify(
            lambda keys: validator.validate_logout_token(raw, keys, now=now),
            error=Reason.LOGOUT_TOKEN_INVALID,
            status_code=400,
        )

    # -- access tokens (bearer paths) -------------------------------------------------------------

    async def verify_access_token(self, raw: str, validator: AccessTokenValidator, *, now: float) -> TokenInfo:
        """A JWT access token checked with the provider's keys (RFC 9068 section 4).

        A token with an unknown `kid` refetches the JWKS at most once per interval, as ID tokens
        do: tokens arrive at an open door, so forged ones must not drive our JWKS traffic. Keys
        that cannot be fetched are the provider's trouble (`BearerUnavailable`, 503), not the token's.
        """
        await self._bearer_metadata()
        try:
            return await self._verify(lambda keys: validator.validate(raw, keys, now=now), error=Reason.BEARER_INVALID)
        except IDTokenError as exc:  # the key refetch's verdict: still no key for this token
            raise BearerError(exc.detail, error=Reason.BEARER_INVALID) from None
        except ProviderError as exc:
            raise BearerUnavailable(f"JWKS: {exc.detail}", error=exc.error) from None

    async def introspect(self, token: str, *, resource: str, now: float) -> TokenInfo:
        """RFC 7662 with our client's credentials: the checked answer for an opaque token."""
        metadata = await self._bearer_metadata()
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

    async def _bearer_metadata(self) -> ProviderMetadata:
        try:
            return await self.metadata()
        except ProviderError as exc:
            raise BearerUnavailable(f"discovery: {exc.detail}", error=exc.error) from None

    async def _verify(self, check: Callable[[KeySet], _T], *, error: Reason, status_code: int | None = None) -> _T:
        """`check(keys)` with the cached JWKS, and once more with a refetched one for an unknown `kid`.

        Every `IDTokenError` leaves with reason code `error`, so login, refresh and logout tokens
        are told apart in the log.
        """
        try:
            keys = await self._load_keys(force=False)
            try:
                return check(keys)
            except UnknownKeyId as exc:
                kid = exc.kid
            if time.monotonic() - self._keys_forced_at < JWKS_REFETCH_INTERVAL:
                raise IDTokenError(f"kid {kid!r} unknown and the JWKS was refetched moments ago")
            keys = await self._load_keys(force=True)
            try:
                return check(keys)
            except UnknownKeyId:
                raise IDTokenError(f"kid {kid!r} not in the provider's JWKS") from None
        except IDTokenError as exc:
            raise IDTokenError(exc.detail, error=error, status_code=status_code) from None

    async def _load_keys(self, *, force: bool) -> KeySet:
        """The JWKS: cached, refetched when older than `JWKS_MAX_AGE`, or on `force` (an unknown `kid`).

        A failed fetch raises, unless it only meant to renew keys we still hold: those stay in use
        (an outage must not end every login) until a fetch succeeds. Either way the next attempt
        waits `JWKS_RETRY_INTERVAL`.
        """
        if self._keys is not None and not force and not self._keys_expired():
            return self._keys
        metadata = await self.metadata()
        async with self._lock:
            now = time.monotonic()
            if self._keys is not None:
                if force and now - self._keys_forced_at < JWKS_REFETCH_INTERVAL:
                    return self._keys  # another login just refetched while this one waited
                if not force and not self._keys_expired():
                    return self._keys  # another login fetched them while this one waited
            if now - self._keys_failed_at < JWKS_RETRY_INTERVAL:
                if self._keys is not None and not force:
                    return self._keys
                raise ProviderError("JWKS fetch failed moments ago", error=Reason.PROVIDER_UNAVAILABLE)
            if force:
                self._keys_forced_at = now
            try:
                keys = parse_jwks(await self._http.get_json(metadata.jwks_uri, JWKS))
            except ProviderError as exc:
                self._keys_failed_at = time.monotonic()
                if self._keys is None or force:
                    raise
                logger.warning(
                    "JWKS refetch failed (%s); still using the keys fetched %d s ago",
                    exc.error,
                    now - self._keys_fetched_at,
                )
                return self._keys
            self._keys = keys
            self._keys_fetched_at = time.monotonic()
            return keys

    def _keys_expired(self) -> bool:
        return time.monotonic() - self._keys_fetched_at >= JWKS_MAX_AGE
