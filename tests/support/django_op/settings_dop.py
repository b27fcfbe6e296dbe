"""django-oidc-provider (see the package docstring)."""

from __future__ import annotations

from tests.support.django_op.common import (
    ACCESS_TOKEN_TTL,
    ALLOWED_HOSTS,
    CORE_APPS,
    CSRF_COOKIE_NAME,
    DATABASES,
    DEBUG,
    DEFAULT_AUTO_FIELD,
    ID_TOKEN_TTL,
    LOGGING,
    LOGIN_URL,
    MIDDLEWARE,
    PASSWORD_HASHERS,
    SECRET_KEY,
    SESSION_COOKIE_NAME,
    TEMPLATES,
    TIME_ZONE,
    USE_TZ,
)

__all__ = [
    "ALLOWED_HOSTS",
    "CSRF_COOKIE_NAME",
    "DATABASES",
    "DEBUG",
    "DEFAULT_AUTO_FIELD",
    "INSTALLED_APPS",
    "LOGGING",
    "LOGIN_URL",
    "MIDDLEWARE",
    "OIDC_IDTOKEN_EXPIRE",
    "OIDC_IDTOKEN_INCLUDE_CLAIMS",
    "OIDC_TOKEN_EXPIRE",
    "OIDC_USERINFO",
    "PASSWORD_HASHERS",
    "ROOT_URLCONF",
    "SECRET_KEY",
    "SESSION_COOKIE_NAME",
    "TEMPLATES",
    "TIME_ZONE",
    "USE_TZ",
]

INSTALLED_APPS = [*CORE_APPS, "oidc_provider"]
ROOT_URLCONF = "tests.support.django_op.urls_dop"

OIDC_TOKEN_EXPIRE = ACCESS_TOKEN_TTL
OIDC_IDTOKEN_EXPIRE = ID_TOKEN_TTL
# The ID token carries the claims of the granted scopes (name, email, ...), not only `sub`.
OIDC_IDTOKEN_INCLUDE_CLAIMS = True
OIDC_USERINFO = "tests.support.django_op.dop_claims.userinfo"
