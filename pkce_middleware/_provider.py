"""Everything that talks to the identity provider, through one shared `httpx.AsyncClient`.

Discovery and the JWKS are fetched once and cached; an ID token or logout token with an unknown
`kid` causes at most one JWKS refetch per `JWKS_REFETCH_INTERVAL` (logout tokens arrive at an
unauthenticated endpoint, so that limit also keeps forged ones from driving our JWKS traffic).
Each call has one deadline, start to finish (httpx's timeouts are per read, so a provider that
drips bytes would otherwise hold a request open for ever), and a cap on the size of what it reads.

References:
    OpenID Connect Discovery 1.0 sections 3 and 4.3 (issuer must match),
    RFC 6749 sections 2.3.1 (client authentication), 4.1.3/5.1/5.2 (token request and answer)
    and 6 (refreshing an access token),
    OpenID Connect Core 1.0 section 12 (refresh; 12.2 for the refreshed ID token),
    OpenID Connect Back-Channel Logout 1.0 section 2.6 (logout token validation).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import quote_plus, urlsplit

import httpx
from authlib.common.urls import add_params_to_uri
from authlib.oauth2.auth import ClientAuth
from authlib.oauth2.rfc6749.parameters import prepare_token_request
from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry, Key, KeySet

from ._config import PKCEConfig
from ._exceptions import CallbackError, ConfigError, IDTokenError, LoginError, ProviderError, ProviderTimeout
from ._flow import LoginAttempt
from ._tokens import IDTokenValidator, LogoutClaims, UnknownKeyId

__all__: list[str] = []

logger = logging.getLogger("pkce_middleware")

JWKS_REFETCH_INTERVAL = 60.0
#: After a failed discovery, later logins wait this long before asking again (no retry storms).
DISCOVERY_RETRY_INTERVAL = 5.0
MAX_RESPONSE_BYTES = 512 * 1024
_ASYMMETRIC_KEY_TYPES = frozenset({"RSA", "EC", "OKP"})
_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True)
class _Grant:
    """What one grant's token answer must hold, and how its failures are named."""

    #: Prefix of the reason codes (`<prefix>_endpoint_error`, `_response_invalid`, `_invalid`, `_timeout`).
    prefix: str
    required: tuple[str, ...]
    #: The error for an OAuth error answer (RFC 6749 section 5.2): the grant itself was refused.
    rejected: Callable[[str], LoginError]


def _code_rejected(reason: str) -> LoginError:
    # The provider refused this code (used, expired, wrong verifier): a login to redo, not an outage.
    return CallbackError(f"token endpoint said {reason}", error="code_rejected")


def _refresh_rejected(reason: str) -> LoginError:
    # Revoked, expired or already rotated (RFC 9700 section 4.14): retrying cannot help, the session is over.
    return ProviderError(
        f"token endpoint refused the refresh token: {reason}", error="refresh_rejected", status_code=401
    )


_CODE_GRANT = _Grant("token", ("access_token", "id_token", "token_type"), _code_rejected)
#: OIDC Core section 12.2: a refresh answer "might not contain an id_token", nor a new refresh token.
_REFRESH_GRANT = _Grant("refresh", ("access_token", "token_type"), _refresh_rejected)
_OPTIONAL_TOKENS = ("id_token", "refresh_token")


@dataclasses.dataclass(frozen=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    end_session_endpoint: str | None
    id_token_algorithms: tuple[str, ...]
    token_endpoint_auth_methods: tuple[str, ...]
    iss_parameter_supported: bool

    @classmethod
    def parse(cls, data: Any, config: PKCEConfig) -> ProviderMetadata:
        if not isinstance(data, dict):
            raise ProviderError("metadata is not a JSON object", error="discovery_invalid")
        if data.get("issuer") != config.issuer:
            # Discovery 4.3: a mismatch means the wrong provider, or a provider lying about itself.
            raise ConfigError(
                f"PKCE_ISSUER is {config.issuer!r} but the provider's metadata says issuer {data.get('issuer')!r}; "
                "they must be identical"
            )
        endpoints = {}
        for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            endpoints[name] = _endpoint(data, name, required=True)
        offered = data.get("id_token_signing_alg_values_supported") or ["RS256"]
        algorithms = tuple(alg for alg in config.id_token_algorithms if alg in offered)
        if not algorithms:
            raise ConfigError(
                f"PKCE_ID_TOKEN_ALGORITHMS ({', '.join(config.id_token_algorithms)}) shares no algorithm with the "
                f"provider's id_token_signing_alg_values_supported"
            )
        auth_methods = data.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        return cls(
            issuer=config.issuer,
            end_session_endpoint=_endpoint(data, "end_session_endpoint", required=False),
            id_token_algorithms=algorithms,
            token_endpoint_auth_methods=tuple(m for m in auth_methods if isinstance(m, str)),
            iss_parameter_supported=data.get("authorization_response_iss_parameter_supported") is True,
            **endpoints,
        )


def _endpoint(data: dict[str, Any], name: str, *, required: bool) -> Any:
    value = data.get(name)
    if value is None and not required:
        return None
    parts = urlsplit(value) if isinstance(value, str) else None
    if (
        parts is None
        or not parts.hostname
        or not (
            parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in ("localhost", "127.0.0.1", "::1"))
        )
    ):
        raise ProviderError(f"metadata {name} is missing or not an https URL", error="discovery_invalid")
    return value


class Provider:
    def __init__(self, config: PKCEConfig, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._config = config
        self._client = httpx.AsyncClient(
            transport=transport,
            timeout=config.http_timeout,
            follow_redirects=False,
            headers={"Accept": "application/json", "User-Agent": "pkce_middleware"},
        )
        self._metadata: ProviderMetadata | None = None
        self._metadata_failed_at = -DISCOVERY_RETRY_INTERVAL
        self._keys: KeySet | None = None
        self._keys_forced_at = -JWKS_REFETCH_INTERVAL
        self._lock = asyncio.Lock()
        self._validator: IDTokenValidator | None = None

    def __repr__(self) -> str:
        return f"Provider(issuer={self._config.issuer!r})"

    async def startup(self) -> None:
        """Load discovery and keys early; an outage now is not fatal, a wrong issuer is."""
        try:
            await self.metadata()
            await self._load_keys(force=False)
        except ProviderError as exc:
            if exc.error == "discovery_mismatch":
                raise ConfigError(exc.detail) from None
            logger.warning("provider not reachable at startup; will retry on first login: %s", exc.error)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def metadata(self) -> ProviderMetadata:
        if self._metadata is not None:
            return self._metadata
        async with self._lock:
            if self._metadata is not None:
                return self._metadata
            if time.monotonic() - self._metadata_failed_at < DISCOVERY_RETRY_INTERVAL:
                raise ProviderError("discovery failed moments ago", error="provider_unavailable")
            url = self._config.issuer.rstrip("/") + "/.well-known/openid-configuration"
            try:
                metadata = ProviderMetadata.parse(await self._get_json(url, "discovery"), self._config)
            except ConfigError as exc:
                self._metadata_failed_at = time.monotonic()
                logger.error("%s", exc)
                raise ProviderError(exc.detail, error="discovery_mismatch") from None
            except ProviderError:
                self._metadata_failed_at = time.monotonic()
                raise
            self._metadata = metadata
            self._validator = IDTokenValidator(
                issuer=metadata.issuer,
                client_id=self._config.client_id,
                algorithms=metadata.id_token_algorithms,
                leeway=self._config.clock_leeway,
            )
            return metadata

    async def authorization_url(self, attempt: LoginAttempt) -> str:
        metadata = await self.metadata()
        params = [
            ("response_type", "code"),
            ("client_id", self._config.client_id),
            ("redirect_uri", attempt.redirect_uri),
            ("scope", " ".join(self._config.scopes)),
            ("state", attempt.state),
            ("nonce", attempt.nonce),
            ("code_challenge", attempt.code_challenge),
            ("code_challenge_method", "S256"),
        ]
        return str(add_params_to_uri(metadata.authorization_endpoint, params))

    def end_session_url(self, *, id_token: str | None, post_logout_redirect_uri: str) -> str | None:
        """RP-Initiated Logout 1.0 section 2, or `None` when the provider has no such endpoint."""
        if self._metadata is None or self._metadata.end_session_endpoint is None:
            return None
        params = [("client_id", self._config.client_id), ("post_logout_redirect_uri", post_logout_redirect_uri)]
        if id_token:
            params.insert(0, ("id_token_hint", id_token))
        return str(add_params_to_uri(self._metadata.end_session_endpoint, params))

    async def redeem(self, attempt: LoginAttempt, code: str, *, now: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """Exchange `code` for tokens and validate the ID token: `(token response, ID token claims)`."""
        metadata = await self.metadata()
        validator = self._validator
        assert validator is not None  # set together with the metadata just awaited
        body = prepare_token_request(
            "authorization_code", code=code, redirect_uri=attempt.redirect_uri, code_verifier=attempt.code_verifier
        )
        token = await self._post_token(metadata, body, _CODE_GRANT)
        claims = await self._verify(
            lambda keys: validator.validate(
                token["id_token"], keys, nonce=attempt.nonce, access_token=token["access_token"], now=now
            ),
            error="id_token_invalid",
        )
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
            raise _refresh_rejected("no refresh token")
        metadata = await self.metadata()
        validator = self._validator
        assert validator is not None  # set together with the metadata just awaited
        body = prepare_token_request("refresh_token", refresh_token=refresh_token)
        token = await self._post_token(metadata, body, _REFRESH_GRANT)
        raw = token.get("id_token")
        if raw is None:
            return token, None
        claims = await self._verify(
            lambda keys: validator.validate_refreshed(
                raw, keys, previous_claims=previous_claims, access_token=token["access_token"], now=now
            ),
            error="refresh_id_token_invalid",
        )
        return token, claims

    async def validate_logout_token(self, raw: str, *, now: int) -> LogoutClaims:
        """Back-Channel Logout 1.0 section 2.6; `IDTokenError` (`logout_token_invalid`, 400) on any rule.

        Fetching the JWKS may still fail with `ProviderError`/`ProviderTimeout` (the provider's trouble,
        not the token's). The `jti` is returned unchecked: replay detection needs the session store.
        """
        await self.metadata()
        validator = self._validator
        assert validator is not None  # set together with the metadata just awaited
        return await self._verify(
            lambda keys: validator.validate_logout_token(raw, keys, now=now),
            error="logout_token_invalid",
            status_code=400,
        )

    def _client_auth(self, metadata: ProviderMetadata) -> ClientAuth:
        config = self._config
        secret = config.client_secret_value
        method = config.token_endpoint_auth_method
        if method is None:
            if secret is None:
                method = "none"
            elif "client_secret_basic" not in metadata.token_endpoint_auth_methods and (
                "client_secret_post" in metadata.token_endpoint_auth_methods
            ):
                method = "client_secret_post"
            else:
                method = "client_secret_basic"
        if method == "client_secret_basic":
            # RFC 6749 section 2.3.1: both parts are form-encoded before they are joined by ":".
            return ClientAuth(quote_plus(config.client_id), quote_plus(secret or ""), method)
        return ClientAuth(config.client_id, secret, method)

    async def _post_token(self, metadata: ProviderMetadata, body: str, grant: _Grant) -> dict[str, Any]:
        """POST `body` to the token endpoint with our client authentication; the checked answer."""
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        url, headers, body = self._client_auth(metadata).prepare("POST", metadata.token_endpoint, headers, body)
        response, data = await self._call("POST", url, grant.prefix, headers=headers, content=body)
        if response.status_code != 200:
            error = data.get("error") if isinstance(data, dict) else None
            reason = _printable(error) if isinstance(error, str) else f"HTTP {response.status_code}"
            # RFC 6749 section 5.2 answers errors with 400 (401 for client authentication); an OAuth
            # error under another status (403, 429 from a gateway) is not a verdict on the grant.
            if response.status_code in (400, 401) and isinstance(error, str):
                raise grant.rejected(reason)
            raise ProviderError(f"token endpoint answered {reason}", error=f"{grant.prefix}_endpoint_error")
        invalid = f"{grant.prefix}_response_invalid"
        if not isinstance(data, dict):
            raise ProviderError("token answer is not a JSON object", error=invalid)
        for member in _OPTIONAL_TOKENS:
            # Some providers send `null` for what they did not issue; callers then test `in`.
            if member in data and data[member] is None and member not in grant.required:
                del data[member]
        for member in (*grant.required, *(m for m in _OPTIONAL_TOKENS if m in data)):
            if not isinstance(data.get(member), str) or not data[member]:
                raise ProviderError(f"token answer lacks {member}", error=invalid)
        # RFC 6749 section 5.1: token_type is case-insensitive.
        if data["token_type"].lower() != "bearer":
            raise ProviderError("token_type is not Bearer", error=invalid)
        return data

    async def _verify(self, check: Callable[[KeySet], _T], *, error: str, status_code: int | None = None) -> _T:
        """`check(keys)` with the cached JWKS, and once more with a refetched one for an unknown `kid`.

        Every `IDTokenError` leaves with reason code `error`, so login, refresh and logout tokens
        are told apart in the log.
        """
        try:
            keys = await self._load_keys(force=False)
            try:
                return check(keys)
            except UnknownKeyId as exc:
                kid = str(exc)
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
        if self._keys is not None and not force:
            return self._keys
        metadata = await self.metadata()
        async with self._lock:
            if force:
                if time.monotonic() - self._keys_forced_at < JWKS_REFETCH_INTERVAL and self._keys is not None:
                    return self._keys  # another login just refetched while this one waited
                self._keys_forced_at = time.monotonic()
            elif self._keys is not None:
                return self._keys
            self._keys = _parse_jwks(await self._get_json(metadata.jwks_uri, "jwks"))
            return self._keys

    async def _get_json(self, url: str, what: str) -> Any:
        response, data = await self._call("GET", url, what)
        if response.status_code != 200:
            raise ProviderError(f"{what} answered HTTP {response.status_code}", error=f"{what}_failed")
        return data

    async def _call(self, method: str, url: str, what: str, **kwargs: Any) -> tuple[httpx.Response, Any]:
        """One request with one deadline and a size cap; the body parsed as JSON."""
        try:
            async with asyncio.timeout(self._config.http_timeout):
                async with self._client.stream(method, url, **kwargs) as response:
                    chunks = []
                    size = 0
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > MAX_RESPONSE_BYTES:
                            raise ProviderError(
                                f"{what} answer larger than {MAX_RESPONSE_BYTES} bytes", error=f"{what}_invalid"
                            )
                        chunks.append(chunk)
        except (TimeoutError, httpx.TimeoutException):
            raise ProviderTimeout(
                f"{what} took longer than {self._config.http_timeout}s", error=f"{what}_timeout"
            ) from None
        except httpx.HTTPError as exc:
            raise ProviderError(f"{what} failed: {type(exc).__name__}", error="provider_unreachable") from None
        try:
            data = json.loads(b"".join(chunks))
        except ValueError:
            if response.status_code != 200:
                # An error status with an HTML (or empty) body: the status is the news, not the body.
                return response, None
            raise ProviderError(
                f"{what} answer (HTTP {response.status_code}) is not JSON", error=f"{what}_invalid"
            ) from None
        return response, data


def _parse_jwks(data: Any) -> KeySet:
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ProviderError("JWKS is not a key set", error="jwks_invalid")
    keys: list[Key] = []
    for item in data["keys"]:
        # Only public signing keys; a symmetric ("oct") key in a JWKS would be a trap for HS* confusion.
        if (
            not isinstance(item, dict)
            or item.get("kty") not in _ASYMMETRIC_KEY_TYPES
            or item.get("use", "sig") != "sig"
        ):
            continue
        if any(member in item for member in ("d", "p", "q")):
            continue
        try:
            keys.append(JWKRegistry.import_key(item))
        except (JoseError, ValueError, TypeError):
            continue
    return KeySet(keys)


def _printable(value: str) -> str:
    return "".join(ch for ch in value[:40] if ch.isalnum() or ch in "_-.") or "?"
