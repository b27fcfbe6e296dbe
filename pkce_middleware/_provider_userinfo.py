"""The userinfo endpoint: the user's claims as the provider tells them now, at login and at refresh.

An ID token says who signed in; with `PKCE_USERINFO` the session's other claims (groups, email)
come from this endpoint instead, read again at every refresh so that they follow the provider. A
plain OAuth 2.0 provider has no ID token at all, and its profile endpoint is all it says of its
user. The answer may be JSON or a JWT signed with the provider's keys (`_provider_keys`); what it
must contain is `_tokens`'s to decide.

References:
    OpenID Connect Core 1.0 sections 5.3 (userinfo) and 12.2 (claims after a refresh).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from ._config import PKCEConfig
from ._discovery import ProviderMetadata
from ._exceptions import IDTokenError, ProviderError, Reason
from ._provider_http import USERINFO, ProviderClient
from ._provider_keys import ProviderKeys
from ._tokens import PROTOCOL_CLAIMS, TokenValidator, check_userinfo, merged_claims, plain_profile

__all__: list[str] = []

logger = logging.getLogger("pkce_middleware")


class Userinfo:
    """One provider's userinfo endpoint, asked with an access token.

    `validator` is `None` for a plain OAuth 2.0 provider, which has no keys to sign a profile with.
    """

    def __init__(self, config: PKCEConfig, http: ProviderClient, keys: ProviderKeys) -> None:
        self._config = config
        self._http = http
        self._keys = keys

    async def fetch(
        self, metadata: ProviderMetadata, validator: TokenValidator | None, access_token: str, *, sub: str | None
    ) -> dict[str, Any]:
        """OIDC Core 5.3: the userinfo answer (JSON, or a JWT signed with the provider's keys), whose
        `sub` must be `sub`. For a plain OAuth 2.0 provider its profile, with `sub` taken from
        `PKCE_USER_ID_CLAIM` (`sub=None`: whoever it is, at login)."""
        assert metadata.userinfo_endpoint is not None  # discovery, or the configuration, checked it
        response, body = await self._http.call_raw(
            "GET", metadata.userinfo_endpoint, USERINFO, headers={"Authorization": f"Bearer {access_token}"}
        )
        if response.status_code != 200:
            raise ProviderError(f"userinfo answered HTTP {response.status_code}", error=Reason.USERINFO_FAILED)
        media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type == "application/jwt":
            raw = body.decode("ascii", "replace").strip()
            if raw.count(".") == 4:
                raise ProviderError("encrypted userinfo (JWE) is not supported", error=Reason.USERINFO_INVALID)
            if validator is None:
                raise ProviderError("a signed profile from a provider without keys", error=Reason.USERINFO_INVALID)
            data: Any = await self._keys.verify(
                metadata, lambda keys: validator.validate_userinfo(raw, keys), error=Reason.USERINFO_INVALID
            )
        else:
            try:
                data = json.loads(body)
            except (ValueError, RecursionError):
                raise ProviderError("userinfo answer is not JSON", error=Reason.USERINFO_INVALID) from None
        try:
            if self._config.plain_oauth:
                return plain_profile(data, id_claim=self._config.user_id_claim, sub=sub)
            assert sub is not None
            return check_userinfo(data, sub=sub)
        except IDTokenError as exc:
            if exc.error == Reason.USERINFO_SUB_MISMATCH:
                # A verdict, not an outage: this access token is another user's (at refresh: the session ends).
                raise
            raise ProviderError(exc.detail, error=exc.error) from None

    async def after_refresh(
        self,
        metadata: ProviderMetadata,
        validator: TokenValidator | None,
        access_token: str,
        id_claims: dict[str, Any] | None,
        previous_claims: Mapping[str, Any],
    ) -> dict[str, Any] | None:
        """The claims after a refresh with `PKCE_USERINFO`: userinfo read again, so the user's claims
        (groups, email) follow the provider, not the first login.

        The refresh grant has already happened: its tokens (a rotated refresh token is the only one
        left) must reach the session even when userinfo fails, so an outage keeps the session's user
        claims over the new ID token's protocol claims (or `None`, all of them, without a new ID
        token). A userinfo answer for another `sub`, or a signed one that does not verify, is an
        `IDTokenError`: the session ends, as it does for such an ID token.
        """
        try:
            info = await self.fetch(metadata, validator, access_token, sub=str(previous_claims.get("sub", "")))
        except IDTokenError:
            raise
        except ProviderError as exc:
            logger.warning(
                "userinfo failed at refresh; keeping the session's claims: reason=%s detail=%s", exc.error, exc.detail
            )
            return None if id_claims is None else merged_claims(id_claims, previous_claims)
        if self._config.plain_oauth:
            return info  # the profile is all a plain provider says of its user
        if id_claims is None:
            id_claims = {k: v for k, v in previous_claims.items() if k in PROTOCOL_CLAIMS}
        return merged_claims(id_claims, info)
