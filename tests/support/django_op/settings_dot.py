"""django-oauth-toolkit in OIDC mode (see the package docstring)."""

from __future__ import annotations

from tests.support.django_op import common

# Django reads its settings from this module alone: the shared ones come in with the star import.
from tests.support.django_op.common import *  # noqa: F403
from tests.support.django_op.common import ACCESS_TOKEN_TTL, CORE_APPS, ID_TOKEN_TTL, RSA_PRIVATE_KEY_PEM

__all__ = [*common.__all__, "INSTALLED_APPS", "OAUTH2_PROVIDER", "ROOT_URLCONF"]

INSTALLED_APPS = [*CORE_APPS, "oauth2_provider"]
ROOT_URLCONF = "tests.support.django_op.urls_dot"

OAUTH2_PROVIDER = {
    "OIDC_ENABLED": True,
    "OIDC_RSA_PRIVATE_KEY": RSA_PRIVATE_KEY_PEM,
    "OIDC_RP_INITIATED_LOGOUT_ENABLED": True,
    # Defaults, spelled out: the logout confirmation form is always shown, and a logout revokes the
    # user's tokens.
    "OIDC_RP_INITIATED_LOGOUT_ALWAYS_PROMPT": True,
    "OIDC_RP_INITIATED_LOGOUT_DELETE_TOKENS": True,
    "OIDC_RESPONSE_TYPES_SUPPORTED": ["code"],
    "PKCE_REQUIRED": True,
    "ROTATE_REFRESH_TOKEN": True,
    "ACCESS_TOKEN_EXPIRE_SECONDS": ACCESS_TOKEN_TTL,
    "ID_TOKEN_EXPIRE_SECONDS": ID_TOKEN_TTL,
    "SCOPES": {
        "openid": "OpenID Connect",
        "profile": "Your name and user name",
        "email": "Your email address",
        "read": "Read access (plain OAuth 2.0)",
    },
    "DEFAULT_SCOPES": ["openid"],
    "OAUTH2_VALIDATOR_CLASS": "tests.support.django_op.dot_claims.ClaimsValidator",
    # django-oauth-toolkit's own, but for clients configured without RFC 9207 `iss` (see dot_plain).
    "OAUTH2_BACKEND_CLASS": "tests.support.django_op.dot_plain.OAuthLibCore",
    # RFC 9700's gates, all on (the defaults of django-oauth-toolkit 4.0): S256 only, the RFC 9207
    # `iss` parameter in authorization responses, no implicit or password grant, no access token in
    # a query string, tokens stored hashed.
    "COMPLIANT_BCP_RFC9700_IMPLICIT_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PASSWORD_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PKCE_METHOD": True,
    "COMPLIANT_BCP_RFC9700_ACCESS_TOKEN_TRANSPORT": True,
    "COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS": True,
    "COMPLIANT_BCP_RFC9700_TOKEN_STORAGE": True,
}
