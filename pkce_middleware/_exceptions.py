"""
Every exception this package raises. The reason codes they carry, `Reason`, live in `_reasons.py`
and are re-exported from here.

* PKCEMiddlewareError
  + ConfigError                 (also a ValueError; raised at startup, never per request)
  + LoginRequired               (401: no session, and this request is not a page load to redirect)
  + AccessDenied                (403: signed in, but the authorization rules do not let this user in)
  + StepUpRequired              (401: this page needs a stronger or more recent login; browsers are redirected)
  + BearerError                 (401: an access token refused, RFC 6750 section 3.1; 400 for a malformed header)
    - InsufficientScope         (403: a valid token without a scope this resource requires)
    - BearerUnavailable         (503: the provider cannot say whether a token is valid right now)
  + LoginError                  (a sign-in or sign-out request that cannot be served)
    - CallbackError             (400: the browser brought back something we will not accept)
    - ProviderRefused           (400: the provider sent the browser back with `error=...`)
    - LogoutError               (403/405/400: a sign-out or back-channel logout request refused)
    - ProviderError             (502: the identity provider answered badly)
      . IDTokenError            (502: a token failed validation; OIDC Core 3.1.3.7, Back-Channel Logout 2.6)
        UnknownKeyId            (a `kid` not in the cached JWKS: refetched once, then an IDTokenError)
      . DiscoveryMismatch       (502, and a startup failure: metadata contradicts the configuration)
      . SessionTooLarge         (502: the tokens do not fit in a browser's cookies)
      . ProviderTimeout         (504: the identity provider did not answer in time)
  + SessionError                (a session that cannot be used right now)
    - SessionEnded              (401: the provider says this login is over; never shown, the user signs in again)
    - SessionUnavailable        (503: the session needs the provider, which is not answering)
    - RefreshBusy               (503: another process is renewing this session)
  + StoreUnavailable            (503: the session store, Redis, is not answering)

Every class carries `error`, a `Reason` (a reason code from one enumerable set) that goes into the
log line and the JSON body, `status_code`, and `title`/`message` for the page a person sees. The
`detail` is for the log only and never holds a token, code or secret.

    try:
        ...
    except pkce_middleware.PKCEMiddlewareError as exc:
        log.warning("refused: %s (%s)", exc.error, exc.detail)
"""

from __future__ import annotations

from ._reasons import Reason

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
    "StepUpRequired",
    "StoreUnavailable",
    "UnknownKeyId",
]


class PKCEMiddlewareError(Exception):
    """Base class of every error this package raises."""

    error: Reason = Reason.INTERNAL_ERROR
    status_code = 500
    #: The heading of the page a person sees.
    title = "Something went wrong"
    #: What a person reading the error page is told; never includes input from the request.
    message = "Something went wrong while signing you in."

    def __init__(self, detail: str = "", *, error: Reason | None = None, status_code: int | None = None) -> None:
        if error is not None:
            self.error = error
        if status_code is not None:
            self.status_code = status_code
        self.detail = detail
        super().__init__(f"{self.error}: {detail}" if detail else str(self.error))


class ConfigError(PKCEMiddlewareError, ValueError):
    """The configuration is wrong; the message names the setting (e.g. `PKCE_ISSUER`)."""

    error = Reason.CONFIG_ERROR

    def __str__(self) -> str:
        # One line a person acts on, as a server prints it when the startup fails.
        return self.detail


class LoginRequired(PKCEMiddlewareError):
    """No session, and the request is not a page load that could be redirected to the provider.

    `login_url` is where a script can send the person to sign in (`<login path>?next=...`).
    """

    error = Reason.LOGIN_REQUIRED
    status_code = 401
    title = "Sign-in required"
    message = "Sign in to use this resource."

    def __init__(self, detail: str = "", *, login_url: str) -> None:
        super().__init__(detail)
        self.login_url = login_url


class AccessDenied(PKCEMiddlewareError):
    """Signed in, but the authorization rules do not let this user in (a 403, never a redirect).

    `who` names the signed-in user on the page (their display name); `switch_url` starts a new
    login that makes the provider ask who is signing in (`prompt=login`).
    """

    status_code = 403
    title = "Access denied"
    message = "Your account may not use this page."

    def __init__(self, detail: str = "", *, error: Reason, who: str = "", switch_url: str = "") -> None:
        super().__init__(detail, error=error)
        self.message = _DENIED_MESSAGES.get(error, self.message)
        self.who = who
        self.switch_url = switch_url


_DENIED_MESSAGES = {
    Reason.EMAIL_NOT_ALLOWED: "This site is open to certain email addresses only, and yours is not one of them.",
    Reason.EMAIL_UNVERIFIED: "The sign-in service does not say that your account's email address is verified.",
    Reason.GROUP_NOT_ALLOWED: "Your account is not in a group that may use this page.",
    Reason.ACR_NOT_ALLOWED: "This page needs a stronger kind of sign-in than the sign-in service gave.",
    Reason.LOGIN_TOO_OLD: "This page needs a recent sign-in, and the sign-in service did not give one.",
}


class StepUpRequired(PKCEMiddlewareError):
    """The login is not strong (`acr`) or recent (`max_age`) enough for this page.

    A browser loading a page is sent to the provider again with `acr_values`/`max_age` (the
    session is kept, and replaced by the new login); anything else gets this 401 with the
    RFC 9470 challenge. `login_url` is where a script can send the person to sign in again.
    """

    status_code = 401
    title = "Sign in again"
    message = "This page needs you to sign in again."

    def __init__(
        self, detail: str = "", *, error: Reason, acr_values: tuple[str, ...], max_age: int | None, login_url: str = ""
    ) -> None:
        super().__init__(detail, error=error)
        self.acr_values = acr_values
        self.max_age = max_age
        self.login_url = login_url


class BearerError(PKCEMiddlewareError):
    """An access token refused (RFC 6750 section 3.1). Answered as JSON with `WWW-Authenticate`
    challenges that name the RFC 9728 metadata document (`challenges`, set by the middleware)."""

    error = Reason.BEARER_INVALID
    status_code = 401
    title = "Access token refused"
    message = "The access token is not valid for this resource."

    def __init__(self, detail: str = "", *, error: Reason | None = None, status_code: int | None = None) -> None:
        super().__init__(detail, error=error, status_code=status_code)
        self.message = _BEARER_MESSAGES.get(self.error, self.message)
        #: The `WWW-Authenticate` values of the answer.
        self.challenges: list[str] = []

    @property
    def oauth_error(self) -> str | None:
        """The RFC 6750 / RFC 9449 error code of the challenge (`None`: no token was sent)."""
        if self.error in (Reason.BEARER_MISSING, Reason.INTROSPECTION_UNAVAILABLE) or self.status_code >= 500:
            return None
        if self.status_code == 400:
            return "invalid_request"
        if self.status_code == 403:
            return "insufficient_scope"
        if self.error in (Reason.DPOP_INVALID, Reason.DPOP_REPLAYED):
            return "invalid_dpop_proof"
        return "invalid_token"


_BEARER_MESSAGES = {
    Reason.BEARER_MISSING: "This resource needs an access token.",
    Reason.BEARER_MALFORMED: "The Authorization header is malformed.",
    Reason.BEARER_EXPIRED: "The access token expired.",
    Reason.BEARER_AUDIENCE: "The access token was issued for another resource.",
    Reason.BEARER_INACTIVE: "The access token is not active.",
    Reason.DPOP_REQUIRED: "The access token is bound to a key: send it with a DPoP proof.",
    Reason.DPOP_INVALID: "The DPoP proof is not valid for this request.",
    Reason.DPOP_REPLAYED: "The DPoP proof was used before.",
    Reason.INSUFFICIENT_SCOPE: "The access token lacks a scope this resource requires.",
    Reason.INTROSPECTION_UNAVAILABLE: "The token could not be checked right now. Please try again shortly.",
}


class InsufficientScope(BearerError):
    """A valid access token that lacks a scope the resource requires (RFC 6750 section 3.1: 403)."""

    error = Reason.INSUFFICIENT_SCOPE
    status_code = 403

    def __init__(self, detail: str = "", *, scopes: tuple[str, ...]) -> None:
        super().__init__(detail)
        #: The scopes the resource requires, all of them (the challenge's `scope`, RFC 6750 section 3).
        self.scopes = scopes


class BearerUnavailable(BearerError):
    """The provider (its keys, or introspection) cannot say now whether the token is valid: a 503,
    never a 401, so that clients retry rather than throw their token away."""

    error = Reason.INTROSPECTION_UNAVAILABLE
    status_code = 503


class ChooseProvider(PKCEMiddlewareError):
    """Not a failure: with several providers (`PKCE_PROVIDERS`), the login path's page that asks
    which one. It goes through `on_error` so that the app can render its own (status 200);
    `providers` are `(name, display name)` pairs, and each choice is
    `GET <login_path>?provider=<name>&next=<next_path>`."""

    error = Reason.CHOOSE_PROVIDER
    status_code = 200
    title = "Sign in"
    message = "Choose how to sign in."

    def __init__(self, *, login_path: str, providers: tuple[tuple[str, str], ...], next_path: str) -> None:
        super().__init__("several providers")
        self.login_path = login_path
        self.providers = providers
        self.next_path = next_path


class LoginError(PKCEMiddlewareError):
    """A login attempt failed; the user is shown a short page and may start again."""

    error = Reason.LOGIN_FAILED
    status_code = 400
    title = "Sign-in problem"
    message = "The sign-in could not be completed. Please try again."

    def __init__(
        self, detail: str = "", *, error: Reason | None = None, status_code: int | None = None, retry_url: str = "/"
    ) -> None:
        super().__init__(detail, error=error, status_code=status_code)
        #: Where "Start again" leads: the page the person wanted when the login started.
        self.retry_url = retry_url


class CallbackError(LoginError):
    """The callback request is missing, repeating or contradicting what this browser started."""

    error = Reason.BAD_CALLBACK
    message = "This sign-in link is not valid (it may be old, used already, or from another browser)."


class ProviderRefused(LoginError):
    """The provider sent the browser back with `error=` (RFC 6749 section 4.1.2.1).

    `provider_error` and `provider_description` are the provider's words, shown escaped; the
    description only when the answer belongs to a login this browser started (RFC 9207 section 2.4:
    anyone can link to the callback with `error=...`).
    """

    error = Reason.PROVIDER_ERROR
    title = "Sign-in did not complete"
    message = "The sign-in service did not sign you in."

    def __init__(self, detail: str = "", *, provider_error: str, provider_description: str | None) -> None:
        super().__init__(detail)
        self.provider_error = provider_error
        self.provider_description = provider_description


class LogoutError(LoginError):
    """A sign-out (or a provider's back-channel logout) request that is refused."""

    error = Reason.CROSS_ORIGIN_LOGOUT
    status_code = 403
    title = "Sign-out refused"
    message = "This sign-out request did not come from this site, so you are still signed in."


class ProviderError(LoginError):
    """The identity provider's answer was unusable (error status, garbage, wrong metadata)."""

    error = Reason.PROVIDER_ERROR
    status_code = 502
    title = "Sign-in service problem"
    message = "The sign-in service gave an answer we could not use. Please try again later."


class IDTokenError(ProviderError):
    """A token failed validation (OpenID Connect Core 1.0 section 3.1.3.7; Back-Channel Logout 2.6)."""

    error = Reason.ID_TOKEN_INVALID


class UnknownKeyId(IDTokenError):
    """The token names a `kid` the cached JWKS does not have: the JWKS is refetched (at most once
    per interval) and the token checked again; it leaves the package only as an `IDTokenError`."""

    def __init__(self, kid: str) -> None:
        super().__init__(f"kid {kid!r} not in the cached JWKS")
        self.kid = kid


class DiscoveryMismatch(ProviderError):
    """The provider's metadata contradicts the configuration (its issuer, or no common algorithm).

    Per request a 502 like any bad answer; at startup it fails the lifespan as a `ConfigError`,
    since no retry can fix a wrong setting.
    """

    error = Reason.DISCOVERY_MISMATCH


class SessionTooLarge(ProviderError):
    """The tokens do not fit in the cookies a browser keeps."""

    error = Reason.SESSION_TOO_LARGE
    message = "The sign-in service sent more data than fits in this browser's cookies."


class ProviderTimeout(ProviderError):
    """The identity provider did not answer in time."""

    error = Reason.PROVIDER_TIMEOUT
    status_code = 504
    message = "The sign-in service did not answer in time. Please try again later."


class SessionError(PKCEMiddlewareError):
    """A session that cannot be used right now."""

    error = Reason.SESSION_UNAVAILABLE
    status_code = 503
    title = "Session unavailable"
    message = "Your session cannot be used right now. Please try again shortly."


class SessionEnded(SessionError):
    """The provider's answer means this login is over: the refresh token is spent or refused, or
    the refreshed ID token is for someone else. The session is dropped; the user signs in again."""

    error = Reason.SESSION_ENDED
    status_code = 401
    title = "Session ended"
    message = "Your session has ended. Please sign in again."


class SessionUnavailable(SessionError):
    """The session needs the provider (an expired access token) and the provider is not answering."""

    error = Reason.SESSION_UNAVAILABLE
    message = "Your session needs the sign-in service, which is not answering. Please try again shortly."


class RefreshBusy(SessionError):
    """Another process has held the refresh lock of this session for longer than we wait.

    Like a slow provider: the request is still served while its access token is valid (a 503
    otherwise); redeeming the refresh token without the lock could redeem a rotated token twice.
    """

    error = Reason.REFRESH_IN_PROGRESS
    message = "Your session is being renewed. Please try again shortly."


class StoreUnavailable(PKCEMiddlewareError):
    """The session store (Redis) did not answer; sessions are intact and work again once it does."""

    error = Reason.SESSION_STORE_UNAVAILABLE
    status_code = 503
    title = "Sessions unavailable"
    message = "Sessions are temporarily unavailable. Please try again shortly."
