"""The checks of `PKCEConfig` that only say yes or no: ranges, choices, the stores' URLs, the
bearer options. `PKCEConfig.__post_init__` runs them once the values are normalised; those that
also normalise a value (keys, scopes, paths, algorithms, rules, providers) stay with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ._config_values import _check_url
from ._exceptions import ConfigError

if TYPE_CHECKING:
    from ._config import PKCEConfig

__all__: list[str] = []

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


def check_limits(config: PKCEConfig) -> None:
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
