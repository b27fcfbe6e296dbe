"""OpenID Connect login (Authorization Code + PKCE) as a pure ASGI middleware."""

from __future__ import annotations

from ._config import PKCEConfig
from ._exceptions import (
    CallbackError,
    ConfigError,
    IDTokenError,
    LoginError,
    PKCEMiddlewareError,
    ProviderError,
    ProviderTimeout,
)
from ._middleware import PKCEMiddleware
from ._scope import get_credentials, get_user
from ._session import OIDCCredentials, OIDCUser

__version__ = "0.1.0"

__all__ = [
    "CallbackError",
    "ConfigError",
    "IDTokenError",
    "LoginError",
    "OIDCCredentials",
    "OIDCUser",
    "PKCEConfig",
    "PKCEMiddleware",
    "PKCEMiddlewareError",
    "ProviderError",
    "ProviderTimeout",
    "get_credentials",
    "get_user",
]

# Reprs and tracebacks show `pkce_middleware.PKCEMiddleware`, not the private module.
__locals = locals()
for __name in __all__:
    __locals[__name].__module__ = "pkce_middleware"
