"""Everything that talks to the identity provider, through one shared `httpx.AsyncClient`.

Discovery is fetched once and cached; the JWKS is cached for at most `JWKS_MAX_AGE`. An ID token
or logout token with an unknown `kid` causes at most one JWKS refetch per `JWKS_REFETCH_INTERVAL`
(logout tokens arrive at an unauthenticated endpoint, so that limit also keeps forged ones from
driving our JWKS traffic), and a failed discovery or JWKS fetch is not retried for a few seconds.
Each call has one deadline, start to finish (httpx's timeouts are per read, so a provider that
drips bytes would otherwise hold a request open for ever), and a cap on the size of what it reads.

References:
    OpenID Connect Discovery 1.0 sections 3 and 4.3 (issuer must match),
    RFC 6749 sections 2.3.1 (client authentication), 4.1.3/5.1/5.2 (token request and answer)
    and 6 (refreshing an access token),
    OpenID Connect Core 1.0 section 12 (refresh; 12.2 for the refreshed ID token),
    OpenID Connect Back-Channel Logout 1.0 section 2.6 (logout token validation),
    OpenID Connect RP-Initiated Logout 1.0 section 2 (the logout request).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import quote_plus, urlsplit

import httpx
from authlib.common.urls import add_params_to_uri
from authlib.oauth2.auth import ClientAuth
from authlib.oauth2.rfc6749.parameters import prepare_token_request
from joserfc.jwk import JWKRegistry, Key, KeySet

from ._config import _LOOPBACK_HOSTS, PKCEConfig
from ._exceptions import CallbackError, ConfigError, IDTokenError, LoginError, ProviderError, ProviderTimeout
from ._flow import LoginAttempt
from ._tokens import IDTokenValidator, LogoutClaims, UnknownKeyId

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
#: Core section 11: offline_access is to be asked for with prompt=consent; providers ignore it
#: otherwise (oidc-provider drops the scope), and the session would get no refresh token.
_OFFLINE_ACCESS = "offline_access"


class DiscoveryMismatch(ProviderError):
    """The provider's metadata contradicts the configuration (its issuer, or no common algorithm).

    Per request a 502 like any bad answer; at startup `Provider.startup` turns it into the
    `ConfigError` that fails the lifespan, since no retry can fix a wrong setting.
    """

    error = "discovery_mismatch"


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
        """Checked metadata; `DiscoveryMismatch` for a contradiction, else `ProviderError` (`discovery_invalid`)."""
        if not isinstance(data, dict):
            raise ProviderError("metadata is not a JSON object", error="discovery_invalid")
        if data.get("issuer") != config.issuer:
            # Discovery 4.3: a mismatch means the wrong provider, or a provider lying about itself.
            raise DiscoveryMismatch(
                f"PKCE_ISSUER is {config.issuer!r} but the provider's metadata says issuer "
                f"{_shown(data.get('issuer'))}; they must be identical"
            )
        endpoints = {
            name: _endpoint(data.get(name), name) for name in ("authorization_endpoint", "token_endpoint", "jwks_uri")
        }
        end_session = data.get("end_session_endpoint")
        # Discovery section 3 makes the algorithm list REQUIRED; RS256 is what Core section 15.1 says every OP supports.
        offered = _strings(data, "id_token_signing_alg_values_supported") or ("RS256",)
        algorithms = tuple(alg for alg in config.id_token_algorithms if alg in offered)
        if not algorithms:
            raise DiscoveryMismatch(
                f"PKCE_ID_TOKEN_ALGORITHMS ({', '.join(config.id_token_algorithms)}) shares no algorithm with the "
                f"provider's id_token_signing_alg_values_supported",
                error="algorithm_mismatch",
            )
        return cls(
            issuer=config.issuer,
            end_session_endpoint=None if end_session is None else _endpoint(end_session, "end_session_endpoint"),
            id_token_algorithms=algorithms,
            # Discovery section 3: the default when the member is absent.
            token_endpoint_auth_methods=_strings(data, "token_endpoint_auth_methods_supported")
            or ("client_secret_basic",),
            iss_parameter_supported=data.get("authorization_response_iss_parameter_supported") is True,
            **endpoints,
        )


def _endpoint(value: object, name: str) -> str:
    if not isinstance(value, str) or not _is_provider_url(value):
        raise ProviderError(f"metadata {name} is missing or not an https URL", error="discovery_invalid")
    return value


def _is_provider_url(value: str) -> bool:
    """https, or http on a loopback host; and parseable by urllib (authlib) and httpx alike.

    A URL only one of them can parse would pass here and fail later, on every login.
    """
    try:
        parts = urlsplit(value)
        port_ok = parts.port != 0  # reading `port` is what validates it
        host_ok = bool(httpx.URL(value).host)  # reading `host` is what decodes an xn-- label
    except (ValueError, httpx.InvalidURL):  # idna's errors are ValueErrors too
        return False
    if not port_ok or not host_ok or not parts.hostname:
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS)


def _strings(data: dict[str, Any], name: str) -> tuple[str, ...] | None:
    """A metadata member that must be a JSON array of strings; `None` when absent.

    A bare string must not pass: `"RS256" in "HS256,RS256"` is true.
    """
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ProviderError(f"metadata {name} is not a list of strings", error="discovery_invalid")
    return tuple(value)


def _shown(value: object) -> str:
    """A value from the provider, short enough for a log line or an error message."""
    if isinstance(value, str):
        return repr(value[:100])
    # Never repr() the rest: a list nested 900 deep parses, but may not repr on a deeper stack.
    return "nothing" if value is None else f"a JSON {type(value).__name__}"


class Provider:
    def __init__(self, config: PKCEConfig, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._config = config
        self._transport = transport
        self._client = self._new_client()
        self._metadata: ProviderMetadata | None = None
        self._metadata_failed_at = -DISCOVERY_RETRY_INTERVAL
        self._keys: KeySet | None = None
        self._keys_fetched_at = 0.0
        self._keys_forced_at = -JWKS_REFETCH_INTERVAL
        self._keys_failed_at = -JWKS_RETRY_INTERVAL
        self._lock = asyncio.Lock()
        self._validator: IDTokenValidator | None = None

    def __repr__(self) -> str:
        return f"Provider(issuer={self._config.issuer!r})"

    async def startup(self) -> None:
        """Load discovery and keys early; an outage now is not fatal, a wrong issuer is."""
        # A server may run the lifespan again after a shutdown closed the client (TestClient does).
        self._open_client()
        try:
            await self.metadata()
            await self._load_keys(force=False)
        except DiscoveryMismatch as exc:
            # The lifespan fails and will not shut down, so nothing else would close the client.
            await self.aclose()
            raise ConfigError(exc.detail) from None
        except ProviderError as exc:
            logger.warning("provider not reachable at startup; will retry on first login: %s", exc.error)

    async def aclose(self) -> None:
        await self._client.aclose()

    def _new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=self._transport,
            timeout=self._config.http_timeout,
            follow_redirects=False,
            headers={"Accept": "application/json", "User-Agent": "pkce_middleware"},
        )

    def _open_client(self) -> httpx.AsyncClient:
        """The client, replaced if closed; never two open at once (no await between test and swap)."""
        if self._client.is_closed:
            self._client = self._new_client()
        return self._client

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
            except Exception as exc:
                # Any failure, even one not foreseen here, must not let every login ask again at once.
                self._metadata_failed_at = time.monotonic()
                if isinstance(exc, DiscoveryMismatch):
                    logger.error("%s", exc)
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
        if _OFFLINE_ACCESS in self._config.scopes:
            params.append(("prompt", "consent"))
        return str(add_params_to_uri(metadata.authorization_endpoint, params))

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
                raise ProviderError("JWKS fetch failed moments ago", error="provider_unavailable")
            if force:
                self._keys_forced_at = now
            try:
                keys = _parse_jwks(await self._get_json(metadata.jwks_uri, "jwks"))
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

    async def _get_json(self, url: str, what: str) -> Any:
        response, data = await self._call("GET", url, what)
        if response.status_code != 200:
            raise ProviderError(f"{what} answered HTTP {response.status_code}", error=f"{what}_failed")
        return data

    async def _call(self, method: str, url: str, what: str, **kwargs: Any) -> tuple[httpx.Response, Any]:
        """One request with one deadline and a size cap; the body parsed as JSON."""
        client = self._open_client()
        try:
            async with asyncio.timeout(self._config.http_timeout):
                async with client.stream(method, url, **kwargs) as response:
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
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise ProviderError(f"{what} failed: {type(exc).__name__}", error="provider_unreachable") from None
        try:
            data = json.loads(b"".join(chunks))
        except (ValueError, RecursionError):  # RecursionError: JSON nested a thousand deep
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
    unusable = 0
    for item in data["keys"]:
        # Only public signing keys; a symmetric ("oct") key in a JWKS would be a trap for HS* confusion.
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("kty"), str)
            or item["kty"] not in _ASYMMETRIC_KEY_TYPES
            or item.get("use", "sig") != "sig"
        ):
            continue
        if any(member in item for member in ("d", "p", "q")):
            continue
        try:
            key = JWKRegistry.import_key(item)
            key.ensure_kid()  # KeySet() would compute a missing kid outside this try
        except Exception:
            # RFC 7517 section 5: a key we cannot use is ignored, not a reason to refuse its
            # neighbours. joserfc raises whatever its parsing meets (KeyError for an unknown
            # curve, binascii.Error for bad base64, ...), so no narrower class would do.
            unusable += 1
            continue
        keys.append(key)
    if unusable:
        logger.warning("JWKS: ignored %d key(s) that could not be imported", unusable)
    return KeySet(keys)


def _printable(value: str) -> str:
    return "".join(ch for ch in value[:40] if ch.isalnum() or ch in "_-.") or "?"
