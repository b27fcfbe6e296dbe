"""The client registration and the environment of an example app in front of a real provider.

The end-to-end tests run an example app (`tests.support.servers`) configured through `PKCE_*`
variables against `LocalProvider` (or another provider with an `issuer`); these build the two
halves that must agree, the provider's client and the app's environment:

    client = app_client("billing", port, secret=secrets.token_urlsafe(24))
    with LocalProvider([client]) as provider, app_server(APP, port, app_env(provider, client, port)) as url:
        ...
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

__all__ = ["HasIssuer", "app_client", "app_env"]


class HasIssuer(Protocol):
    @property
    def issuer(self) -> str: ...


def app_client(
    client_id: str,
    port: int,
    *,
    secret: str,
    host: str = "127.0.0.1",
    auth_method: str | None = "client_secret_basic",
    grant_types: Sequence[str] = ("authorization_code",),
    logout: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    """Client metadata for an app at `http://<host>:<port>`: its callback, and (`logout`) its logout page.

    `auth_method=None` leaves `token_endpoint_auth_method` to the provider's default; `extra` is
    merged last (e.g. `backchannel_logout_uri`).
    """
    base = f"http://{host}:{port}"
    client: dict[str, Any] = {"client_id": client_id, "client_secret": secret}
    if auth_method is not None:
        client["token_endpoint_auth_method"] = auth_method
    client["redirect_uris"] = [f"{base}/auth/callback"]
    if logout:
        client["post_logout_redirect_uris"] = [f"{base}/auth/logout"]
    client["grant_types"] = list(grant_types)
    client.update(extra)
    return client


def app_env(
    provider: HasIssuer, client: Mapping[str, Any], port: int, *, host: str = "127.0.0.1", **extra: str
) -> dict[str, str]:
    """The `PKCE_*` environment of an app at `http://<host>:<port>` signing in as `client`, then `extra`.

    A fresh `PKCE_SECRET_KEY` each call, and `PKCE_COOKIE_SECURE=false` (plain http on loopback).
    """
    return {
        "PKCE_ISSUER": provider.issuer,
        "PKCE_CLIENT_ID": str(client["client_id"]),
        "PKCE_CLIENT_SECRET": str(client["client_secret"]),
        "PKCE_SECRET_KEY": secrets.token_urlsafe(32),
        "PKCE_REDIRECT_URI": f"http://{host}:{port}/auth/callback",
        "PKCE_COOKIE_SECURE": "false",  # plain http on loopback
        **extra,
    }
