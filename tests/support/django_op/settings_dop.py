"""django-oidc-provider (see the package docstring)."""

from __future__ import annotations

from tests.support.django_op import common

# Django reads its settings from this module alone: the shared ones come in with the star import.
from tests.support.django_op.common import *  # noqa: F403
from tests.support.django_op.common import ACCESS_TOKEN_TTL, CORE_APPS, ID_TOKEN_TTL

__all__ = [
    *common.__all__,
    "INSTALLED_APPS",
    "OIDC_IDTOKEN_EXPIRE",
    "OIDC_IDTOKEN_INCLUDE_CLAIMS",
    "OIDC_TOKEN_EXPIRE",
    "OIDC_USERINFO",
    "ROOT_URLCONF",
]

INSTALLED_APPS = [*CORE_APPS, "oidc_provider"]
ROOT_URLCONF = "tests.support.django_op.urls_dop"

OIDC_TOKEN_EXPIRE = ACCESS_TOKEN_TTL
OIDC_IDTOKEN_EXPIRE = ID_TOKEN_TTL
# The ID token carries the claims of the granted scopes (name, email, ...), not only `sub`.
OIDC_IDTOKEN_INCLUDE_CLAIMS = True
OIDC_USERINFO = "tests.support.django_op.dop_claims.userinfo"
