"""django-oidc-provider's `OIDC_USERINFO` hook: the user's standard claims.

django-oidc-provider releases them per scope (profile, email) in userinfo and, with
`OIDC_IDTOKEN_INCLUDE_CLAIMS`, in the ID token.
"""

from __future__ import annotations

from typing import Any


def userinfo(claims: dict[str, Any], user: Any) -> dict[str, Any]:
    claims["preferred_username"] = user.username
    claims["name"] = user.first_name or user.username
    claims["email"] = user.email
    claims["email_verified"] = True
    return claims
