"""django-oauth-toolkit's validator with the user's standard claims (its documented extension point).

`get_additional_claims` adds claims to the ID token and userinfo; django-oauth-toolkit releases each
only for its scope (`oidc_claim_scope`): profile for the names, email for the address.
"""

from __future__ import annotations

from typing import Any

from oauth2_provider.oauth2_validators import OAuth2Validator


class ClaimsValidator(OAuth2Validator):  # type: ignore[misc]  # django-oauth-toolkit ships no types
    def get_additional_claims(self, request: Any) -> dict[str, Any]:
        user = request.user
        return {
            "preferred_username": user.username,
            "name": user.first_name or user.username,
            "email": user.email,
            "email_verified": True,
        }
