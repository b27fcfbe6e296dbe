"""`PKCEConfig`: every option of the middleware, read from `PKCE_*` environment variables or
given in code, and checked once, when the middleware is built.

Each option is a dataclass field whose metadata names its environment variable, its parser and
its help text; `from_environ` and the README's option table (`scripts/update_readme.py`) are both
made from that metadata, so they cannot drift apart. A wrong value raises `ConfigError` naming
the variable, at startup, never per request.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal, cast
from urllib.parse import urlsplit

from starlette.datastructures import Secret

from ._config_checks import check_limits, check_provider
from ._config_environ import option_rows, values_from_environ
from ._config_values import (
    _MAKE_A_KEY,
    LOOPBACK_HOSTS,
    _check_path,
    _check_secret_keys,
    _check_url,
)
from ._exceptions import ConfigError
from ._origins import normalise_origin
from ._providers_config import ProviderConfig, per_provider
from ._rules import Require

# ProviderConfig and LOOPBACK_HOSTS live in _providers_config.py and _config_values.py; re-exported here.
__all__ = ["DEFAULT_ID_TOKEN_ALGORITHMS", "LOOPBACK_HOSTS", "PKCEConfig", "ProviderConfig"]

TokenEndpointAuthMethod = Literal["client_secret_basic", "client_secret_post", "none"]

#: Asymmetric algorithms only: an HS* ID token would be keyed with the client secret, and
#: accepting it next to public keys is how "HMAC with the public key" attacks start.
DEFAULT_ID_TOKEN_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
_ALLOWED_ID_TOKEN_ALGORITHMS = frozenset(DEFAULT_ID_TOKEN_ALGORITHMS)


def _option(env: str, help: str, parse: str = "str", *, hint: str = "", **kwargs: Any) -> Any:
    # The metadata drives `from_environ` and the README's option table, so the two cannot drift apart.
    return dataclasses.field(metadata={"env": env, "help": help, "parse": parse, "hint": hint}, **kwargs)


@dataclasses.dataclass(frozen=True, kw_only=True, repr=False)
class PKCEConfig:
    """Everything `PKCEMiddleware` needs, checked once when it is built.

    Build it in code (`PKCEConfig(issuer=..., client_id=..., secret_key=...)`) or from the
    environment (`PKCEConfig.from_environ()`, reading the `PKCE_*` variables). A wrong value raises
    `ConfigError` naming the variable. Secrets are kept in `starlette.datastructures.Secret`, so the
    repr shows `**********`.
    """

    issuer: str = _option(
        "PKCE_ISSUER",
        "Issuer URL; metadata is read from `<issuer>/.well-known/openid-configuration`. Required, unless the "
        "provider is plain OAuth 2.0 (`PKCE_AUTHORIZATION_ENDPOINT`): there it is optional, and only the `iss` "
        "its answers carry (RFC 9207).",
        default="",
    )
    client_id: str = _option(
        "PKCE_CLIENT_ID",
        "OAuth client id registered at the provider. Required, unless `PKCE_PROVIDERS` is set.",
        default="",
    )
    secret_key: str | Secret | Sequence[str | Secret] = _option(
        "PKCE_SECRET_KEY",
        "Cookie key(s), comma-separated, each at least 32 characters of random text: the first seals, all open.",
        "secrets",
        hint=f"make one with: {_MAKE_A_KEY}",
    )
    client_secret: str | Secret | None = _option(
        "PKCE_CLIENT_SECRET", "Client secret; unset means a public client (auth method `none`).", "secret", default=None
    )
    authorization_endpoint: str | None = _option(
        "PKCE_AUTHORIZATION_ENDPOINT",
        "A plain OAuth 2.0 provider (no discovery, no ID token; GitHub): its authorization endpoint, "
        "instead of `PKCE_ISSUER`; needs `PKCE_TOKEN_ENDPOINT` and `PKCE_USERINFO_ENDPOINT`.",
        default=None,
    )
    token_endpoint: str | None = _option(
        "PKCE_TOKEN_ENDPOINT", "A plain OAuth 2.0 provider's token endpoint.", default=None
    )
    userinfo_endpoint: str | None = _option(
        "PKCE_USERINFO_ENDPOINT",
        "A plain OAuth 2.0 provider's profile endpoint (GitHub: `https://api.github.com/user`): the user's claims.",
        default=None,
    )
    user_id_claim: str = _option(
        "PKCE_USER_ID_CLAIM",
        "With a plain OAuth 2.0 provider: the profile member that identifies the user (GitHub: `id`, a number).",
        default="sub",
    )
    providers: tuple[ProviderConfig, ...] = _option(
        "PKCE_PROVIDERS",
        "Several providers: comma-separated short lower-case names (`corp,partner`), each configured by "
        "`PKCE_PROVIDER_<NAME>_<OPTION>` (`_ISSUER`, `_CLIENT_ID`, `_CLIENT_SECRET`, `_SCOPES`, `_USERINFO`, "
        "`_DISPLAY_NAME`, ...) instead of the single-provider options; the others stay global.",
        "providers",
        default=(),
    )
    redirect_uri: str | None = _option(
        "PKCE_REDIRECT_URI",
        "Absolute callback URL registered at the provider; its path is the callback path. "
        "Default: `<request origin>/auth/callback`.",
        default=None,
    )
    scopes: tuple[str, ...] = _option(
        "PKCE_SCOPES",
        "Space-separated scopes; `openid` is always included.",
        "scopes",
        default=("openid", "profile", "email"),
    )
    public_paths: tuple[str, ...] = _option(
        "PKCE_PUBLIC_PATHS",
        "Comma-separated path prefixes served without login (`/static` matches `/static/...`).",
        "list",
        default=(),
    )
    cookie_secure: bool = _option(
        "PKCE_COOKIE_SECURE",
        "`Secure` cookies with `__Host-` names. Turn off only for plain-http development.",
        "bool",
        default=True,
    )
    logout_path: str = _option(
        "PKCE_LOGOUT_PATH", "Local and RP-initiated logout (POST; GET shows a button).", default="/auth/logout"
    )
    login_path: str = _option(
        "PKCE_LOGIN_PATH",
        "Starts a login explicitly: `GET <path>?next=/where/to/go` (for single-page apps).",
        default="/auth/login",
    )
    post_logout_redirect_uri: str | None = _option(
        "PKCE_POST_LOGOUT_REDIRECT_URI",
        "Where the provider sends the browser after logout (register it there). "
        "Default: `<request origin><PKCE_LOGOUT_PATH>`, which then says the user is signed out.",
        default=None,
    )
    session_max_age: int = _option(
        "PKCE_SESSION_MAX_AGE",
        "Absolute session lifetime in seconds, enforced inside the sealed cookie.",
        "int",
        default=86400,
    )
    session_idle_timeout: int = _option(
        "PKCE_SESSION_IDLE_TIMEOUT",
        "Seconds without a request after which the session ends (sliding: the cookie is re-issued once half of "
        "it has passed, so a session ends after between half and all of it without requests).",
        "int",
        default=3600,
    )
    session_store: str = _option(
        "PKCE_SESSION_STORE",
        "`cookie` (sessions sealed in the browser) or a Redis URL such as `redis://127.0.0.1:6379/0` "
        "(server-side sessions, shared by every process, each process keeping the ones it read in a "
        "cache that every write invalidates); also `rediss://`, `redis+sentinel://`, `redis+cluster://` "
        "(README, Redis deployments).",
        default="cookie",
    )
    revocation_store: str = _option(
        "PKCE_REVOCATION_STORE",
        "With cookie sessions: `memory` (logouts known to the process that got them) or a Redis URL "
        "(shared by every process within about a second).",
        default="memory",
    )
    session_id_token: bool = _option(
        "PKCE_SESSION_ID_TOKEN",
        "Keep the raw ID token in the session (`request.auth.id_token`, `id_token_hint` at logout); "
        "`false` makes the cookie smaller.",
        "bool",
        default=True,
    )
    refresh_margin: int = _option(
        "PKCE_REFRESH_MARGIN",
        "Refresh the access token this many seconds before it expires (when the provider issued a refresh "
        "token; some only do for the `offline_access` scope).",
        "int",
        default=60,
    )
    backchannel_logout_path: str = _option(
        "PKCE_BACKCHANNEL_LOGOUT_PATH",
        "Where the provider POSTs back-channel logout tokens (register it as `backchannel_logout_uri`).",
        default="/auth/backchannel-logout",
    )
    response_mode: str = _option(
        "PKCE_RESPONSE_MODE",
        "`query` (the code comes back in the callback's URL) or `form_post` (the provider's page POSTs it; "
        "the flow cookie is then `SameSite=None; Secure`, for providers that require form_post).",
        default="query",
    )
    frontchannel_logout_path: str | None = _option(
        "PKCE_FRONTCHANNEL_LOGOUT_PATH",
        "Where the provider loads OpenID Connect Front-Channel Logout (`GET ?iss=...&sid=...`, in an iframe); "
        "register it as `frontchannel_logout_uri`. Unset: off (anyone who knows a `sid` could end it).",
        default=None,
    )
    token_endpoint_auth_method: TokenEndpointAuthMethod | None = _option(
        "PKCE_TOKEN_ENDPOINT_AUTH_METHOD",
        "`client_secret_basic`, `client_secret_post` or `none`. Default: `none` without a secret, otherwise the "
        "first of basic/post that the provider supports.",
        default=None,
    )
    id_token_algorithms: tuple[str, ...] = _option(
        "PKCE_ID_TOKEN_ALGORITHMS",
        "Comma-separated asymmetric ID token signing algorithms accepted; intersected with the provider's list.",
        "list",
        default=DEFAULT_ID_TOKEN_ALGORITHMS,
    )
    clock_leeway: int = _option(
        "PKCE_CLOCK_LEEWAY", "Seconds of clock skew tolerated on `exp`/`iat` (0-300).", "int", default=60
    )
    http_timeout: float = _option(
        "PKCE_HTTP_TIMEOUT", "Seconds allowed for each call to the provider, start to finish.", "float", default=10.0
    )
    websocket_origins: tuple[str, ...] = _option(
        "PKCE_WEBSOCKET_ORIGINS",
        "Comma-separated origins (`https://other.example`) whose pages may open WebSockets here, besides "
        "this app's own; a handshake from any other `Origin` gets a 403.",
        "list",
        default=(),
    )
    allowed_email_domains: tuple[str, ...] = _option(
        "PKCE_ALLOWED_EMAIL_DOMAINS",
        "Comma-separated email domains allowed in (`example.com`; `*.example.com` for its subdomains); "
        "the address must also be verified (`email_verified`).",
        "list",
        default=(),
    )
    allowed_emails: tuple[str, ...] = _option(
        "PKCE_ALLOWED_EMAILS",
        "Comma-separated email addresses allowed in (case-insensitive, verified); with "
        "`PKCE_ALLOWED_EMAIL_DOMAINS` a user matching either list passes.",
        "list",
        default=(),
    )
    allowed_groups: tuple[str, ...] = _option(
        "PKCE_ALLOWED_GROUPS",
        "Comma-separated groups; the user must be in at least one (read from `PKCE_GROUPS_CLAIM`).",
        "list",
        default=(),
    )
    groups_claim: str = _option(
        "PKCE_GROUPS_CLAIM",
        "The claim holding the user's groups: a name, or a dotted path such as `realm_access.roles`; "
        "a list or a single string.",
        default="groups",
    )
    acr_values: tuple[str, ...] = _option(
        "PKCE_ACR_VALUES",
        "Comma-separated `acr` values sent with every login; an ID token whose `acr` is not one of them "
        "gives no session.",
        "list",
        default=(),
    )
    userinfo: bool = _option(
        "PKCE_USERINFO",
        "At login (and refresh), read the userinfo endpoint and merge its claims into the user's; "
        "its `sub` must be the ID token's, whose protocol claims (`iss`, `aud`, `acr`, ...) win.",
        "bool",
        default=False,
    )
    bearer_paths: tuple[str, ...] = _option(
        "PKCE_BEARER_PATHS",
        "Comma-separated path prefixes that take `Authorization: Bearer <token>` (RFC 6750) instead of a "
        "session: never a redirect, a 401 pointing at the resource metadata.",
        "list",
        default=(),
    )
    resource: str | None = _option(
        "PKCE_RESOURCE",
        "This API's resource identifier (a URL, RFC 8707): access tokens must name it in `aud`. "
        "Required with `PKCE_BEARER_PATHS`.",
        default=None,
    )
    bearer_required_scopes: tuple[str, ...] = _option(
        "PKCE_BEARER_REQUIRED_SCOPES",
        "Comma-separated scopes every access token must carry (403 `insufficient_scope` otherwise).",
        "list",
        default=(),
    )
    introspection_cache_ttl: int = _option(
        "PKCE_INTROSPECTION_CACHE_TTL",
        "Seconds an opaque token's introspection answer is reused (never past the token's `exp`; 0-3600). "
        "A revoked token is refused at most this long after.",
        "int",
        default=60,
    )
    dpop: bool = _option(
        "PKCE_DPOP",
        "Accept DPoP-bound access tokens with their proofs (RFC 9449) and advertise it. A bound token is "
        "never accepted as a plain bearer token.",
        "bool",
        default=True,
    )

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise once here so the rest of the code can trust the values
        set_(self, "secret_key", _check_secret_keys(self.secret_key))
        if isinstance(self.client_secret, str):
            set_(self, "client_secret", Secret(self.client_secret) if self.client_secret else None)
        if self.providers:
            set_(self, "providers", tuple(self.providers))
        check_provider(self)
        if self.redirect_uri is not None:
            _check_url("PKCE_REDIRECT_URI", self.redirect_uri)
            if urlsplit(self.redirect_uri).path in ("", "/") or urlsplit(self.redirect_uri).query:
                raise ConfigError("PKCE_REDIRECT_URI needs a path of its own (e.g. /auth/callback) and no query")
        if self.post_logout_redirect_uri is not None:
            _check_url("PKCE_POST_LOGOUT_REDIRECT_URI", self.post_logout_redirect_uri)
        # `openid` makes it OpenID Connect; a plain OAuth 2.0 provider may not know the scope at all.
        first = () if self.plain_oauth else ("openid",)
        scopes = tuple(dict.fromkeys((*first, *(s for s in self.scopes if not (self.plain_oauth and s == "openid")))))
        set_(self, "scopes", scopes)
        set_(self, "public_paths", tuple(_check_path("PKCE_PUBLIC_PATHS", p) for p in self.public_paths))
        for name, path in (
            ("PKCE_LOGOUT_PATH", self.logout_path),
            ("PKCE_LOGIN_PATH", self.login_path),
            ("PKCE_BACKCHANNEL_LOGOUT_PATH", self.backchannel_logout_path),
            ("PKCE_FRONTCHANNEL_LOGOUT_PATH", self.frontchannel_logout_path or "/"),
        ):
            _check_path(name, path)
        routes = [
            self.callback_path or "/auth/callback",
            self.login_path,
            self.logout_path,
            self.backchannel_logout_path,
            *([self.frontchannel_logout_path] if self.frontchannel_logout_path else []),
        ]
        if len(set(routes)) != len(routes):
            raise ConfigError(
                "PKCE_REDIRECT_URI's path, PKCE_LOGIN_PATH, PKCE_LOGOUT_PATH, PKCE_BACKCHANNEL_LOGOUT_PATH "
                "and PKCE_FRONTCHANNEL_LOGOUT_PATH must all differ"
            )
        check_limits(self)
        bad = [alg for alg in self.id_token_algorithms if alg not in _ALLOWED_ID_TOKEN_ALGORITHMS]
        if bad or not self.id_token_algorithms:
            raise ConfigError(
                "PKCE_ID_TOKEN_ALGORITHMS may only name asymmetric ones: " + ", ".join(DEFAULT_ID_TOKEN_ALGORITHMS)
            )
        set_(self, "id_token_algorithms", tuple(self.id_token_algorithms))
        origins = tuple(self.websocket_origins)
        if any(normalise_origin(origin) is None for origin in origins):
            raise ConfigError("PKCE_WEBSOCKET_ORIGINS must hold origins such as https://app.example (no path)")
        set_(self, "websocket_origins", origins)
        set_(self, "_per_provider", per_provider(self, self.providers))
        set_(self, "bearer_paths", tuple(_check_path("PKCE_BEARER_PATHS", p) for p in self.bearer_paths))
        set_(self, "bearer_required_scopes", tuple(self.bearer_required_scopes))
        for name, field, kind in _RULE_OPTIONS:
            try:
                checked = getattr(Require(**{kind: getattr(self, field)}), kind)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{name}: {exc}") from None
            set_(self, field, checked if isinstance(checked, str) else tuple(checked))

    @property
    def each_provider(self) -> tuple[tuple[str, str, PKCEConfig], ...]:
        """`(name, display name, configuration)` per provider: the configuration is this one with the
        provider's own options. One provider without `PKCE_PROVIDERS`, named ""."""
        return cast(tuple[tuple[str, str, PKCEConfig], ...], self._per_provider)  # type: ignore[attr-defined]

    @property
    def binding(self) -> str:
        """The provider and client cookies are bound to (`_components.bound_purpose`); with several,
        each session is bound to its own inside the sealed payload (`provider_bindings`), so adding
        or removing a provider ends only the sessions of the one removed."""
        if self.providers:
            return "several providers"
        return f"{self.provider_id} {self.client_id}"

    @property
    def provider_bindings(self) -> dict[str, str] | None:
        """With several providers: name -> the provider and client a session of it is bound to."""
        if not self.providers:
            return None
        return {name: f"{own.provider_id} {own.client_id}" for name, _, own in self.each_provider}

    @property
    def plain_oauth(self) -> bool:
        """A plain OAuth 2.0 provider: endpoints from the configuration, identity from its profile."""
        return self.authorization_endpoint is not None

    @property
    def provider_id(self) -> str:
        """What names the provider in sealed cookies and flows: its issuer, or its authorization endpoint."""
        return self.issuer or self.authorization_endpoint or ""

    @property
    def require(self) -> Require:
        """The global authorization rule (the `PKCE_ALLOWED_*` and `PKCE_ACR_VALUES` options)."""
        return Require(
            email_domains=self.allowed_email_domains or None,
            emails=self.allowed_emails or None,
            groups=self.allowed_groups or None,
            groups_claim=self.groups_claim,
            acr_values=self.acr_values or None,
        )

    @property
    def secret_keys(self) -> tuple[Secret, ...]:
        """The cookie keys, newest (the one that seals) first."""
        return cast(tuple[Secret, ...], self.secret_key)

    @property
    def client_secret_value(self) -> str | None:
        return None if self.client_secret is None else str(self.client_secret)

    @property
    def callback_path(self) -> str | None:
        """The path the provider redirects back to; `None` means the default `/auth/callback`."""
        return urlsplit(self.redirect_uri).path if self.redirect_uri else None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> PKCEConfig:
        """Read the `PKCE_*` variables (from `os.environ` unless given)."""
        return cls(**values_from_environ(dataclasses.fields(cls), os.environ if environ is None else environ))

    @classmethod
    def options(cls) -> list[tuple[str, str, str]]:
        """`(variable, default, description)` for each option, in declaration order (the README table)."""
        return option_rows(dataclasses.fields(cls))

    def __repr__(self) -> str:
        shown = (f"{field.name}={getattr(self, field.name)!r}" for field in dataclasses.fields(self))
        return f"PKCEConfig({', '.join(shown)})"


#: (variable, PKCEConfig field, Require field) of the global authorization rule's options.
_RULE_OPTIONS = (
    ("PKCE_ALLOWED_EMAIL_DOMAINS", "allowed_email_domains", "email_domains"),
    ("PKCE_ALLOWED_EMAILS", "allowed_emails", "emails"),
    ("PKCE_ALLOWED_GROUPS", "allowed_groups", "groups"),
    ("PKCE_GROUPS_CLAIM", "groups_claim", "groups_claim"),
    ("PKCE_ACR_VALUES", "acr_values", "acr_values"),
)
