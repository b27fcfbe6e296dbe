"""
Our exception hierarchy:

* PKCEMiddlewareError
  + ConfigError                 (also a ValueError; raised at startup, never per request)
  + LoginError                  (a login attempt that cannot finish; the user sees a 4xx/5xx page)
    - CallbackError             (400: the browser brought back something we will not accept)
    - ProviderError             (502: the identity provider answered badly)
      . IDTokenError            (502: the ID token failed OIDC Core 3.1.3.7 validation)
      . ProviderTimeout         (504: the identity provider did not answer in time)

Every class carries `error`, a short reason code that goes into the log line and the JSON body,
and `status_code`. The `detail` is for the log only and never holds a token, code or secret.
"""

from __future__ import annotations

__all__ = [
    "CallbackError",
    "ConfigError",
    "IDTokenError",
    "LoginError",
    "PKCEMiddlewareError",
    "ProviderError",
    "ProviderTimeout",
]


class PKCEMiddlewareError(Exception):
    """Base class of every error this package raises."""

    error = "pkce_middleware_error"
    status_code = 500
    #: What a person reading the error page is told; never includes input from the request.
    message = "Something went wrong while signing you in."

    def __init__(self, detail: str = "", *, error: str | None = None, status_code: int | None = None) -> None:
        if error is not None:
            self.error = error
        if status_code is not None:
            self.status_code = status_code
        self.detail = detail
        super().__init__(f"{self.error}: {detail}" if detail else self.error)


class ConfigError(PKCEMiddlewareError, ValueError):
    """The configuration is wrong; the message names the setting (e.g. `PKCE_ISSUER`)."""

    error = "config_error"


class LoginError(PKCEMiddlewareError):
    """A login attempt failed; the user is shown a short page and may start again."""

    error = "login_failed"
    status_code = 400
    message = "The sign-in could not be completed. Please try again."


class CallbackError(LoginError):
    """The callback request is missing, repeating or contradicting what this browser started."""

    error = "bad_callback"
    status_code = 400
    message = "This sign-in link is not valid (it may be old, used already, or from another browser)."


class ProviderError(LoginError):
    """The identity provider's answer was unusable (error status, garbage, wrong metadata)."""

    error = "provider_error"
    status_code = 502
    message = "The sign-in service gave an answer we could not use. Please try again later."


class IDTokenError(ProviderError):
    """The ID token failed validation (OpenID Connect Core 1.0, section 3.1.3.7)."""

    error = "id_token_invalid"


class ProviderTimeout(ProviderError):
    """The identity provider did not answer in time."""

    error = "provider_timeout"
    status_code = 504
    message = "The sign-in service did not answer in time. Please try again later."
