"""The checks of `PKCEConfig` that only say yes or no: ranges, choices, the stores' URLs, the
bearer options. `PKCEConfig.__post_init__` runs them once the values are normalised; those that
also normalise a value (keys, scopes, paths, algorithms, rules, providers) stay with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol
from urllib.parse import urlsplit

from starlette.datastructures import Secret

from ._config_values import _check_url
from ._exceptions import ConfigError

__all__: list[str] = []


class Checked(Protocol):
    """What these checks read of a `PKCEConfig` (a protocol: `_config` imports this module)."""

    @property
    def providers(self) -> Sequence[object]: ...
    @property
    def issuer(self) -> str | None: ...
    @property
    def client_id(self) -> str | None: ...
    @property
    def client_secret(self) -> str | Secret | None: ...
    @property
    def authorization_endpoint(self) -> str | None: ...
    @property
    def token_endpoint(self) -> str | None: ...
    @property
    def userinfo_endpoint(self) -> str | None: ...
    @property
    def user_id_claim(self) -> str: ...
    @property
    def response_mode(self) -> str: ...
    @property
    def public_paths(self) -> tuple[str, ...]: ...
    @property
    def session_max_age(self) -> int: ...
    @property
    def session_idle_timeout(self) -> int: ...
    @property
    def refresh_margin(self) -> int: ...
    @property
    def session_store(self) -> str: ...
    @property
    def revocation_store(self) -> str: ...
    @property
    def clock_leeway(self) -> int: ...
    @property
    def http_timeout(self) -> float: ...
    @property
    def token_endpoint_auth_method(self) -> str | None: ...
    @property
    def resource(self) -> str | None: ...
    @property
    def bearer_paths(self) -> tuple[str, ...]: ...
    @property
    def bearer_required_scopes(self) -> tuple[str, ...]: ...
    @property
    def introspection_cache_ttl(self) -> int: ...


_REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster")


def _check_redis_url(variable: str, url: str, alternative: str) -> None:
    if urlsplit(url).scheme not in _REDIS_SCHEMES:
        schemes = ", ".join(f"{scheme}://" for scheme in _REDIS_SCHEMES)
        raise ConfigError(f"{variable} must be `{alternative}` or a Redis URL ({schemes})")
    try:
        from ._redis import check_url
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] != "redis":
            raise
        return  # `_components` says which package is missing, naming the variable too
    problem = check_url(url)
    if problem is not None:
        # Not the URL itself: it may hold a password.
        raise ConfigError(f"{variable} is not a usable Redis URL: {problem}")


def check_provider(config: Checked) -> None:
    """Which provider the options name (several, one plain OAuth 2.0 one, or one OpenID provider),
    and that everything it needs is there."""
    endpoints = (config.authorization_endpoint, config.token_endpoint, config.userinfo_endpoint)
    if config.providers:
        # A global client secret would go to every provider without one of its own.
        if config.issuer or config.client_id or config.client_secret is not None or any(endpoints):
            raise ConfigError(
                "PKCE_PROVIDERS is set: each provider is configured by PKCE_PROVIDER_<NAME>_ISSUER, "
                "_CLIENT_ID, _CLIENT_SECRET, ..., not by PKCE_ISSUER, PKCE_CLIENT_ID or PKCE_CLIENT_SECRET"
            )
    elif any(endpoints):
        # Plain OAuth 2.0: the endpoints are the provider; there is no discovery. A `PKCE_ISSUER`
        # beside them is only the issuer it names in RFC 9207's `iss` (checked when sent).
        if config.issuer:
            _check_url("PKCE_ISSUER", config.issuer)
        names = ("PKCE_AUTHORIZATION_ENDPOINT", "PKCE_TOKEN_ENDPOINT", "PKCE_USERINFO_ENDPOINT")
        for name, value in zip(names, endpoints, strict=True):
            if value is None:
                raise ConfigError(f"{name} is required for a plain OAuth 2.0 provider")
            _check_url(name, value)
        if not config.user_id_claim:
            raise ConfigError("PKCE_USER_ID_CLAIM must name a member of the profile")
        for name, set_value in (("PKCE_RESOURCE", config.resource), ("PKCE_BEARER_PATHS", config.bearer_paths)):
            if set_value:
                raise ConfigError(f"{name} needs an OpenID provider (PKCE_ISSUER): tokens are checked with its keys")
    elif not config.issuer:
        raise ConfigError(
            "PKCE_ISSUER is required but not set (or, for a plain OAuth 2.0 provider, PKCE_AUTHORIZATION_ENDPOINT, "
            "PKCE_TOKEN_ENDPOINT and PKCE_USERINFO_ENDPOINT)"
        )
    else:
        _check_url("PKCE_ISSUER", config.issuer)
    if not config.client_id and not config.providers:
        raise ConfigError("PKCE_CLIENT_ID is required but not set")


def check_limits(config: Checked) -> None:
    """Raise `ConfigError`, naming the variable, for the first value out of its range or choices."""
    if config.response_mode not in ("query", "form_post"):
        raise ConfigError("PKCE_RESPONSE_MODE must be query or form_post")
    if "/" in config.public_paths:
        raise ConfigError("PKCE_PUBLIC_PATHS must not contain / (that would make every path public)")
    if config.session_max_age < 60:
        raise ConfigError("PKCE_SESSION_MAX_AGE must be at least 60 seconds")
    if config.session_idle_timeout < 60:
        raise ConfigError("PKCE_SESSION_IDLE_TIMEOUT must be at least 60 seconds")
    if not 0 <= config.refresh_margin <= 3600:
        raise ConfigError("PKCE_REFRESH_MARGIN must be between 0 and 3600 seconds")
    if config.session_store != "cookie":
        _check_redis_url("PKCE_SESSION_STORE", config.session_store, "cookie")
    if config.revocation_store != "memory":
        _check_redis_url("PKCE_REVOCATION_STORE", config.revocation_store, "memory")
        if config.session_store != "cookie":
            raise ConfigError("PKCE_REVOCATION_STORE is for cookie sessions; Redis sessions are revoked in Redis")
    if not 0 <= config.clock_leeway <= 300:
        raise ConfigError("PKCE_CLOCK_LEEWAY must be between 0 and 300 seconds")
    if not 0 < config.http_timeout <= 120:
        raise ConfigError("PKCE_HTTP_TIMEOUT must be more than 0 and at most 120 seconds")
    if config.token_endpoint_auth_method not in (None, "client_secret_basic", "client_secret_post", "none"):
        raise ConfigError("PKCE_TOKEN_ENDPOINT_AUTH_METHOD must be client_secret_basic, client_secret_post or none")
    if config.token_endpoint_auth_method not in (None, "none") and config.client_secret is None:
        raise ConfigError("PKCE_TOKEN_ENDPOINT_AUTH_METHOD needs PKCE_CLIENT_SECRET")
    if config.resource is not None:
        _check_url("PKCE_RESOURCE", config.resource)
        if urlsplit(config.resource).query:
            raise ConfigError("PKCE_RESOURCE must not have a query (RFC 8707 section 2)")
        if any(not 0x21 <= ord(ch) < 0x7F or ch in '"\\<>^`{|}' for ch in config.resource):
            # It is quoted in every 401's `WWW-Authenticate`, which must stay one valid header.
            raise ConfigError(
                "PKCE_RESOURCE must be an ASCII URI (RFC 3986): percent-encode the path, "
                "and write a domain in its xn-- form"
            )
    elif config.bearer_paths:
        raise ConfigError("PKCE_RESOURCE is required when PKCE_BEARER_PATHS is set (the audience tokens must name)")
    scopes = config.bearer_required_scopes
    if any(not scope or any(ch.isspace() or ch in '"\\' for ch in scope) for scope in scopes):
        raise ConfigError("PKCE_BEARER_REQUIRED_SCOPES must hold scope names without spaces or quotes")
    if not 0 <= config.introspection_cache_ttl <= 3600:
        raise ConfigError("PKCE_INTROSPECTION_CACHE_TTL must be between 0 and 3600 seconds")
