"""What django-oauth-toolkit's plain OAuth 2.0 clients (`"openid": false`) get besides the standard
endpoints: a GitHub-like profile endpoint, and optionally authorization responses without `iss`.

`user` answers `GET /api/user` (`urls_dot`). django-oauth-toolkit's OIDC userinfo answers only
tokens with the `openid` scope; a plain client reads who signed in here instead, as GitHub's
clients read `https://api.github.com/user`. The token check is django-oauth-toolkit's own
(`protected_resource`, scope `read`: a bare 403 without a valid bearer token carrying it). The
answer has GitHub's shape: `id` is the user's primary key as a number, `login` the user name.
Each answer is logged as `DJOP profile <client_id> <username> <token>`, `<token>` being the
bearer token's fingerprint (`log.token_fingerprint`), which `log.RequestLog` also logs for every
access token the token endpoint issues (`DJOP issued ...`), so a test can tell which token the
profile was read with.

`OAuthLibCore` is the project's `OAUTH2_BACKEND_CLASS`: for a client configured with
`"authorization_response_iss": false` it removes the RFC 9207 `iss` parameter from the
authorization response, as django-oauth-toolkit itself does for every client with
`COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS` off (its default before 4.0), and as GitHub does.
Everything else is django-oauth-toolkit's own behaviour.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from django.http import HttpRequest, JsonResponse
from oauth2_provider import oauth2_backends
from oauth2_provider.decorators import protected_resource
from oauth2_provider.models import get_access_token_model

from tests.support.django_op.common import CONFIG
from tests.support.django_op.log import say, token_fingerprint

#: The clients whose authorization responses carry no `iss`.
NO_ISS_CLIENTS = frozenset(
    client["client_id"] for client in CONFIG.get("clients", []) if client.get("authorization_response_iss") is False
)


def _profile(request: HttpRequest) -> JsonResponse:
    owner = request.resource_owner  # the token's user, set by protected_resource
    # protected_resource took the token from `Authorization: Bearer` (RFC 9700's gate refuses query tokens).
    bearer = request.headers["Authorization"].split(" ", 1)[1].strip()
    say("profile", _client_of(bearer), owner.username, token_fingerprint(bearer))
    return JsonResponse(
        {"id": owner.pk, "login": owner.username, "name": owner.first_name or owner.username, "email": owner.email}
    )


#: `GET /api/user` (django-oauth-toolkit's decorator, applied by hand: it ships no types).
user: Callable[[HttpRequest], JsonResponse] = protected_resource(scopes=["read"])(_profile)


def _client_of(bearer: str) -> str:
    """The client the token was issued to, looked up as django-oauth-toolkit does (by its SHA-256)."""
    checksum = hashlib.sha256(bearer.encode("utf-8")).hexdigest()
    token = get_access_token_model().objects.select_related("application").get(token_checksum=checksum)
    return str(token.application.client_id) if token.application is not None else "-"


class OAuthLibCore(oauth2_backends.OAuthLibCore):  # type: ignore[misc]  # django-oauth-toolkit ships no types
    def create_authorization_response(
        self, request: HttpRequest, scopes: Any, credentials: dict[str, Any], allow: bool
    ) -> tuple[Any, ...]:
        uri, headers, body, status = super().create_authorization_response(request, scopes, credentials, allow)
        if uri is not None and credentials.get("client_id") in NO_ISS_CLIENTS:
            uri = _without_iss(uri)
            headers["Location"] = uri
        return uri, headers, body, status


def _without_iss(uri: str) -> str:
    parts = urlsplit(uri)
    query = [(name, value) for name, value in parse_qsl(parts.query, keep_blank_values=True) if name != "iss"]
    return urlunsplit(parts._replace(query=urlencode(query)))
