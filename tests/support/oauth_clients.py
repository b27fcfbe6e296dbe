"""OAuth 2.0 clients against ``LocalProvider``: real access tokens for resource-server tests.

The middleware's resource-server side (bearer tokens, RFC 9068 JWT access tokens, RFC 7662
introspection, RFC 9449 DPoP, RFC 8707 resource indicators) is only worth testing against tokens
a real authorization server minted. These helpers obtain them from panva's oidc-provider
(``provider/server.mjs`` with ``resourceServers`` in its OP_CONFIG) the way a client would:

* ``client_credentials``: a token for a machine client;
* ``authorization_code_with_forms``: a token for a user, through PKCE and the provider's login and
  consent forms, with no server behind the redirect_uri;
* ``introspect`` and ``revoke``: what a resource server (or the client) asks afterwards;
* ``dpop_key`` and ``dpop_proof``: proof-of-possession keys and proofs (RFC 9449 section 4.2), for
  the token endpoint here and for requests to the API in the tests.

Synchronous ``httpx`` throughout, like ``tests.support.oidc_provider``; endpoints come from the
provider's discovery document. Errors of the provider arrive as ``OAuthError``, so a test can
assert the error code it expects.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey

from tests.support.oidc_provider import login_with_forms

__all__ = [
    "OAuthError",
    "authorization_code_with_forms",
    "client_credentials",
    "discovery",
    "dpop_key",
    "dpop_proof",
    "introspect",
    "revoke",
]

_TIMEOUT = 10.0

#: Discovery documents by issuer: a module-scoped provider answers the same all along, and
#: tests call these helpers many times. A restarted provider gets a new port, hence a new issuer.
_discovered: dict[str, dict[str, Any]] = {}


class OAuthError(Exception):
    """The provider refused: ``error`` and ``error_description`` from its answer (RFC 6749 5.2).

    ``status`` is the HTTP status of a token/introspection/revocation answer, or 0 when the error
    came back in the redirect of an authorization request.
    """

    def __init__(self, error: str, description: str | None, status: int) -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error
        self.description = description
        self.status = status


def discovery(provider_metadata_or_issuer: Mapping[str, Any] | str) -> Mapping[str, Any]:
    """The provider's metadata: given as is (``LocalProvider.metadata``), or fetched for an issuer.

    Accepting both lets tests pass ``provider.metadata`` (no request at all) or a bare issuer.
    """
    if not isinstance(provider_metadata_or_issuer, str):
        return provider_metadata_or_issuer
    issuer = provider_metadata_or_issuer.rstrip("/")
    if issuer not in _discovered:
        response = httpx.get(f"{issuer}/.well-known/openid-configuration", timeout=_TIMEOUT)
        response.raise_for_status()
        metadata: dict[str, Any] = response.json()
        _discovered[issuer] = metadata
    return _discovered[issuer]


def _endpoint(provider_metadata_or_issuer: Mapping[str, Any] | str, name: str) -> str:
    metadata = discovery(provider_metadata_or_issuer)
    endpoint = metadata.get(name)
    if not isinstance(endpoint, str):
        raise AssertionError(f"the provider's discovery document has no {name}")
    return endpoint


def dpop_key() -> ECKey:
    """A fresh P-256 key pair for DPoP (ES256 is the one alg every DPoP server supports)."""
    return ECKey.generate_key("P-256", private=True)


def _b64url_sha256(value: str) -> str:
    digest = hashlib.sha256(value.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def dpop_proof(
    key: ECKey,
    method: str,
    url: str,
    *,
    access_token: str | None = None,
    nonce: str | None = None,
    iat: int | None = None,
    jti: str | None = None,
    typ: str = "dpop+jwt",
    alg: str = "ES256",
) -> str:
    """A DPoP proof JWT (RFC 9449 section 4.2) for one request.

    Header: ``typ``, ``alg`` and the public ``jwk``. Claims: ``jti`` (random unless given), ``htm``
    (``method``), ``htu`` (``url`` without query and fragment, section 4.3), ``iat`` (now unless
    given), ``ath`` (base64url SHA-256 of ``access_token``) when a token is given, and ``nonce``
    when given. ``typ``, ``alg``, ``iat`` and ``jti`` are parameters so tests can build the bad
    proofs a resource server must refuse (wrong type, stale, replayed); a ``alg`` that does not
    fit ``key`` fails in joserfc.
    """
    parts = urlsplit(url)
    claims: dict[str, Any] = {
        "jti": jti if jti is not None else secrets.token_urlsafe(16),
        "htm": method.upper(),
        "htu": f"{parts.scheme}://{parts.netloc}{parts.path}",
        "iat": iat if iat is not None else int(time.time()),
    }
    if access_token is not None:
        claims["ath"] = _b64url_sha256(access_token)
    if nonce is not None:
        claims["nonce"] = nonce
    header = {"typ": typ, "alg": alg, "jwk": key.as_dict(private=False)}
    return jwt.encode(header, claims, key, algorithms=[alg])


def _error_of(response: httpx.Response) -> OAuthError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        description = body.get("error_description")
        return OAuthError(body["error"], description if isinstance(description, str) else None, response.status_code)
    return OAuthError(f"http_{response.status_code}", response.text[:500], response.status_code)


def _token_request(
    token_endpoint: str,
    form: dict[str, str],
    *,
    auth: tuple[str, str] | None,
    dpop: ECKey | None,
) -> dict[str, Any]:
    """POST to the token endpoint, with a fresh DPoP proof per attempt when ``dpop`` is given.

    A server that wants DPoP nonces answers the first attempt with ``use_dpop_nonce`` and a
    ``DPoP-Nonce`` header (RFC 9449 section 8); one retry with that nonce follows, as a client
    library would do. Anything but 200 is an ``OAuthError``.
    """
    nonce: str | None = None
    for _ in range(2):
        headers = {}
        if dpop is not None:
            headers["DPoP"] = dpop_proof(dpop, "POST", token_endpoint, nonce=nonce)
        response = httpx.post(token_endpoint, data=form, auth=auth, headers=headers, timeout=_TIMEOUT)
        if response.status_code == 200:
            body: dict[str, Any] = response.json()
            return body
        error = _error_of(response)
        offered = response.headers.get("dpop-nonce")
        if dpop is None or error.error != "use_dpop_nonce" or not offered or nonce is not None:
            raise error
        nonce = offered
    raise AssertionError("unreachable")


def client_credentials(
    provider_metadata_or_issuer: Mapping[str, Any] | str,
    client_id: str,
    client_secret: str,
    *,
    resource: str | None,
    scope: str,
    dpop: ECKey | None = None,
) -> dict[str, Any]:
    """The token answer of a client_credentials grant (client_secret_basic) for ``resource``.

    ``resource=None`` sends none (the token then has no audience and is opaque). With ``dpop``
    the request carries a proof of that key and the token comes back bound to it
    (``token_type`` DPoP). Raises ``OAuthError`` on refusal, e.g. ``invalid_target`` for a
    resource the provider does not know.
    """
    form = {"grant_type": "client_credentials", "scope": scope}
    if resource is not None:
        form["resource"] = resource
    token_endpoint = _endpoint(provider_metadata_or_issuer, "token_endpoint")
    return _token_request(token_endpoint, form, auth=(client_id, client_secret), dpop=dpop)


def authorization_code_with_forms(
    browser: httpx.Client,
    issuer: Mapping[str, Any] | str,
    client_id: str,
    redirect_uri: str,
    username: str,
    *,
    resource: str | None,
    scope: str,
    dpop: ECKey | None = None,
    client_secret: str | None = None,
) -> dict[str, Any]:
    """A user's token answer: PKCE (S256) authorization code flow with ``resource``, through forms.

    ``browser`` keeps the provider session (cookies) across calls; the provider's login form is
    answered with ``username``, its consent form accepted, and the walk stops at the redirect to
    ``redirect_uri`` without requesting it, so no server needs to listen there. The code is then
    redeemed with the verifier and ``resource`` (``None`` leaves it out of both requests), as a
    confidential client (client_secret_basic) when ``client_secret`` is given, else as a public
    one (``client_id`` in the form), and with a DPoP proof when ``dpop`` is given.

    ``issuer`` may also be the provider's metadata. A scope without ``openid`` needs a client
    with ``require_auth_time: false`` (see ``LocalProvider``). Raises ``OAuthError`` when the
    authorization response or the token endpoint carries an error (``status`` 0 for the former).
    """
    authorization_endpoint = _endpoint(issuer, "authorization_endpoint")
    token_endpoint = _endpoint(issuer, "token_endpoint")
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()
    state = secrets.token_urlsafe(16)
    query = {
        "client_id": client_id,
        "response_type": "code",
        "redirect_uri": redirect_uri,
        "scope": scope,
        "state": state,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    if resource is not None:
        query["resource"] = resource
    final, _ = login_with_forms(browser, f"{authorization_endpoint}?{urlencode(query)}", username, stop_at=redirect_uri)
    location = final.headers.get("location")
    if final.status_code not in (302, 303) or not location:
        raise AssertionError(
            f"the authorization request did not come back to {redirect_uri}: "
            f"HTTP {final.status_code} at {final.url}\n{final.text[:2000]}"
        )
    answer = dict(parse_qsl(urlsplit(location).query))
    if "error" in answer:
        raise OAuthError(answer["error"], answer.get("error_description"), 0)
    if answer.get("state") != state:
        raise AssertionError(f"state mismatch in the authorization response {location}")

    form = {
        "grant_type": "authorization_code",
        "code": answer["code"],
        "redirect_uri": redirect_uri,
        "code_verifier": verifier,
    }
    if resource is not None:
        form["resource"] = resource
    auth: tuple[str, str] | None = None
    if client_secret is not None:
        auth = (client_id, client_secret)
    else:
        form["client_id"] = client_id
    return _token_request(token_endpoint, form, auth=auth, dpop=dpop)


def _token_endpoint_post(
    provider_metadata_or_issuer: Mapping[str, Any] | str,
    endpoint_name: str,
    client_id: str,
    client_secret: str,
    token: str,
) -> httpx.Response:
    endpoint = _endpoint(provider_metadata_or_issuer, endpoint_name)
    response = httpx.post(endpoint, data={"token": token}, auth=(client_id, client_secret), timeout=_TIMEOUT)
    if response.status_code != 200:
        raise _error_of(response)
    return response


def revoke(issuer: Mapping[str, Any] | str, client_id: str, client_secret: str, token: str) -> None:
    """Revoke ``token`` (RFC 7009) as the client that holds it (oidc-provider allows no other).

    oidc-provider keeps no JWT access tokens, so those cannot be revoked:
    ``OAuthError("unsupported_token_type")``.
    """
    _token_endpoint_post(issuer, "revocation_endpoint", client_id, client_secret, token)


def introspect(issuer: Mapping[str, Any] | str, client_id: str, client_secret: str, token: str) -> dict[str, Any]:
    """The introspection answer (RFC 7662) for ``token``, asked as a confidential client.

    ``{"active": False}`` for an unknown, expired or revoked token. JWT access tokens are refused
    by oidc-provider (``OAuthError("unsupported_token_type")``): resource servers verify those
    themselves.
    """
    body: dict[str, Any] = _token_endpoint_post(
        issuer, "introspection_endpoint", client_id, client_secret, token
    ).json()
    return body
