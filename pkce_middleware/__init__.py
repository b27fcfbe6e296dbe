"""OpenID Connect login (Authorization Code + PKCE) as a pure ASGI middleware."""

from __future__ import annotations

from ._config import PKCEConfig
from ._exceptions import (
    CallbackError,
    ConfigError,
    DiscoveryMismatch,
    IDTokenError,
    LoginError,
    LoginRequired,
    LogoutError,
    PKCEMiddlewareError,
    ProviderError,
    ProviderRefused,
    ProviderTimeout,
    Reason,
    RefreshBusy,
    SessionEnded,
    SessionError,
    SessionTooLarge,
    SessionUnavailable,
    StoreUnavailable,
    UnknownKeyId,
)
from ._hooks import OnError, OnLogin, OnLogout
from ._middleware import PKCEMiddleware
from ._responses import wants_html
from ._scope import get_credentials, get_user
from ._session import OIDCCredentials, OIDCUser

__version__ = "0.1.0"

__all__ = [
    "CallbackError",
    "ConfigError",
    "DiscoveryMismatch",
    "IDTokenError",
    "LoginError",
    "LoginRequired",
    "LogoutError",
    "OIDCCredentials",
    "OIDCUser",
    "OnError",
    "OnLogin",
    "OnLogout",
    "PKCEConfig",
    "PKCEMiddleware",
    "PKCEMiddlewareError",
    "ProviderError",
    "ProviderRefused",
    "ProviderTimeout",
    "Reason",
    "RefreshBusy",
    "SessionEnded",
    "SessionError",
    "SessionTooLarge",
    "SessionUnavailable",
    "StoreUnavailable",
    "UnknownKeyId",
    "get_credentials",
    "get_user",
    "wants_html",
]

# Reprs and tracebacks show `pkce_middleware.PKCEMiddleware`, not the private module.
__locals = locals()
for __name in __all__:
    __locals[__name].__module__ = "pkce_middleware"
