"""OpenID Connect login (Authorization Code + PKCE) as a pure ASGI middleware."""

from __future__ import annotations

from ._config import PKCEConfig, ProviderConfig
from ._exceptions import (
    AccessDenied,
    BearerError,
    BearerUnavailable,
    CallbackError,
    ChooseProvider,
    ConfigError,
    DiscoveryMismatch,
    IDTokenError,
    InsufficientScope,
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
    StepUpRequired,
    StoreUnavailable,
    UnknownKeyId,
)
from ._guards import restrict
from ._hooks import OnError, OnLogin, OnLogout
from ._middleware import PKCEMiddleware
from ._resource import TokenCredentials, TokenUser
from ._responses import wants_html
from ._rules import Require
from ._scope import get_credentials, get_user
from ._session import OIDCCredentials, OIDCUser

__version__ = "0.1.0"

__all__ = [
    "AccessDenied",
    "BearerError",
    "BearerUnavailable",
    "CallbackError",
    "ChooseProvider",
    "ConfigError",
    "DiscoveryMismatch",
    "IDTokenError",
    "InsufficientScope",
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
    "ProviderConfig",
    "ProviderError",
    "ProviderRefused",
    "ProviderTimeout",
    "Reason",
    "RefreshBusy",
    "Require",
    "SessionEnded",
    "SessionError",
    "SessionTooLarge",
    "SessionUnavailable",
    "StepUpRequired",
    "StoreUnavailable",
    "TokenCredentials",
    "TokenUser",
    "UnknownKeyId",
    "get_credentials",
    "get_user",
    "restrict",
    "wants_html",
]

# Reprs and tracebacks show `pkce_middleware.PKCEMiddleware`, not the private module.
__locals = locals()
for __name in __all__:
    __locals[__name].__module__ = "pkce_middleware"
