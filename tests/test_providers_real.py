"""The whole login against three independent OpenID Providers, over real HTTP.

* oidc-provider (panva, Node.js; ``tests.support.oidc_provider.LocalProvider``);
* django-oauth-toolkit in OIDC mode and django-oidc-provider (both Python, run by the Django
  project of ``tests.support.django_op``; ``tests.support.django_providers``).

Each provider is started once for this module, with its clients, and the example Starlette app is
served in front of it once per client configuration (``tests.support.servers``). At
django-oauth-toolkit the app is also served as the client of a plain OAuth 2.0 provider
(``PKCE_AUTHORIZATION_ENDPOINT``...: no ``openid``, no ID token), the user read from the
GitHub-like profile endpoint that ``tests.support.django_op`` adds to it (``GET /api/user``). A browser
(``httpx`` with ``BROWSER_HEADERS``) walks the provider's real login, consent and logout forms.
Access tokens live ``TTL`` seconds and the apps refresh them only once expired
(``PKCE_REFRESH_MARGIN=0``), so a request after that refreshes.

What differs between the providers is asserted, not skipped; each test's docstring says how.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from pkce_middleware.testing import BROWSER_HEADERS
from tests.support.django_providers import DjangoOAuthToolkitProvider, DjangoOIDCProvider, DjangoProvider
from tests.support.oauth_clients import authorization_code_with_forms
from tests.support.oidc_provider import LocalProvider, login_with_forms, logout_with_forms
from tests.support.processes import free_port
from tests.support.servers import AppServer, serve_all

pytestmark = [pytest.mark.node, pytest.mark.servers]

PROVIDERS = ("oidc-provider", "django-oauth-toolkit", "django-oidc-provider")
#: Seconds an access token lives: short, so that the refresh tests wait little.
TTL = 2
#: The users of the Django providers (oidc-provider signs in any name); one or two per test, so no
#: test's logins touch another's sessions. The last ones sign in only at the plain OAuth 2.0 apps,
#: with a name of their own, which the profile endpoint answers.
USERS: tuple[str | dict[str, str], ...] = (
    *("ada", "bea", "cyd", "dan", "eve", "fay", "gus", "hal", "ivy"),
    {"username": "jon", "name": "Jon Plain", "email": "jon@example.test"},
    {"username": "kim", "name": "Kim Plain", "email": "kim@example.test"},
    {"username": "lou", "name": "Lou Plain", "email": "lou@example.test"},
    {"username": "max", "name": "Max Plain", "email": "max@example.test"},
    {"username": "ned", "name": "Ned Plain", "email": "ned@example.test"},
)
#: The provider whose project has the plain OAuth 2.0 profile endpoint (``tests.support.django_op.dot_plain``).
PLAIN_PROVIDER = "django-oauth-toolkit"
#: Characters that client_secret_basic must form-encode (RFC 6749 section 2.3.1).
ENCODED_SECRET = "s3cr3t+/=:%&?"
#: Where the plain OAuth 2.0 client's browser is sent back: nothing listens there, the walk stops first.
PLAIN_REDIRECT_URI = "http://127.0.0.1:9/plain/callback"


class Provider(Protocol):
    """What the tests use of ``LocalProvider`` and ``DjangoProvider`` alike."""

    @property
    def issuer(self) -> str: ...

    metadata: dict[str, Any]

    def grant_count(self, grant_type: str, outcome: str = "ok", client_id: str | None = None) -> int: ...


@dataclasses.dataclass(frozen=True)
class Client:
    """One client of every provider, and the app in front of each (unless ``app`` is false)."""

    name: str
    #: ``None``: a public client (token endpoint auth method ``none``).
    secret: str | None
    auth_method: str = "client_secret_basic"
    #: The secret the app is configured with, when it is not ``secret`` (a wrong one).
    app_secret: str | None = None
    app: bool = True
    #: A plain OAuth 2.0 client of ``PLAIN_PROVIDER`` only (its app in plain mode, see ``_plain_env``).
    plain_app: bool = False
    #: Whether the provider sends RFC 9207 ``iss`` in its authorization responses to this client
    #: (django-oauth-toolkit: ``"authorization_response_iss"``; as configured here it does by default).
    iss: bool = True


CLIENTS = (
    Client("confidential", f"secret-{secrets.token_hex(8)}"),
    Client("public", None, "none"),
    Client("wrong-secret", f"secret-{secrets.token_hex(8)}", app_secret=f"not-the-secret-{secrets.token_hex(8)}"),
    Client("encoded-basic", ENCODED_SECRET + secrets.token_hex(4)),
    Client("encoded-post", ENCODED_SECRET + secrets.token_hex(4), "client_secret_post"),
    Client("plain", f"secret-{secrets.token_hex(8)}", app=False),
    # GitHub sends no `iss`: these two are plain OAuth 2.0 clients whose responses carry none either.
    Client("plain-app", f"secret-{secrets.token_hex(8)}", plain_app=True, iss=False),
    Client(
        "plain-wrong-secret",
        f"secret-{secrets.token_hex(8)}",
        app_secret=f"not-the-secret-{secrets.token_hex(8)}",
        plain_app=True,
        iss=False,
    ),
    # django-oauth-toolkit as configured: RFC 9207 `iss` in every authorization response.
    Client("plain-iss", f"secret-{secrets.token_hex(8)}", plain_app=True),
)


def _clients(provider: str) -> list[Client]:
    """The clients registered at ``provider``: the plain apps' only at ``PLAIN_PROVIDER``."""
    return [client for client in CLIENTS if provider == PLAIN_PROVIDER or not client.plain_app]


@dataclasses.dataclass
class Deployment:
    name: str
    provider: Provider
    #: Base URL of the app in front of each client (by client name).
    apps: dict[str, str]
    #: ``sub`` of a user name's ID tokens.
    sub: Callable[[str], str]
    #: Path prefix of the provider's login page.
    login_path: str

    @property
    def is_django(self) -> bool:
        return isinstance(self.provider, DjangoProvider)

    def login_form_shown(self, visited: list[str]) -> bool:
        return any(urlsplit(url).path.startswith(self.login_path) for url in visited)

    def grants(self, grant_type: str, client: str, outcome: str = "ok") -> int:
        return self.provider.grant_count(grant_type, outcome, client_id=client)


def _redirects(port: int) -> dict[str, list[str]]:
    base = f"http://127.0.0.1:{port}"
    return {"redirect_uris": [f"{base}/auth/callback"], "post_logout_redirect_uris": [f"{base}/auth/logout"]}


def _panva_client(client: Client, port: int | None) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "client_id": client.name,
        "grant_types": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_method": client.auth_method,
        **(_redirects(port) if port is not None else {"redirect_uris": [PLAIN_REDIRECT_URI]}),
    }
    if client.secret is not None:
        metadata["client_secret"] = client.secret
    if not client.app:
        metadata["require_auth_time"] = False  # oidc-provider's condition for requests without openid
    return metadata


def _django_client(client: Client, port: int | None) -> dict[str, Any]:
    return {
        "client_id": client.name,
        "client_secret": client.secret,
        **(_redirects(port) if port is not None else {"redirect_uris": [PLAIN_REDIRECT_URI]}),
        # django-oauth-toolkit: the plain clients are plain OAuth 2.0 clients (no signing algorithm).
        "openid": client.app and not client.plain_app,
        "authorization_response_iss": client.iss,
    }


def _start_provider(name: str, ports: dict[str, int]) -> LocalProvider | DjangoProvider:
    if name == "oidc-provider":
        return LocalProvider(
            [_panva_client(client, ports.get(client.name)) for client in _clients(name)], ttl={"AccessToken": TTL}
        )
    kind = DjangoOAuthToolkitProvider if name == "django-oauth-toolkit" else DjangoOIDCProvider
    return kind(
        [_django_client(client, ports.get(client.name)) for client in _clients(name)],
        users=USERS,
        access_token_ttl=TTL,
    )


def _env(provider: Provider, client: Client, port: int) -> dict[str, str]:
    env = {
        **(_plain_env(provider) if client.plain_app else {}),
        # A plain provider that sends RFC 9207 `iss` is given the issuer it names (no discovery).
        **({"PKCE_ISSUER": provider.issuer} if not client.plain_app or client.iss else {}),
        "PKCE_CLIENT_ID": client.name,
        "PKCE_SECRET_KEY": secrets.token_urlsafe(32),
        "PKCE_REDIRECT_URI": f"http://127.0.0.1:{port}/auth/callback",
        "PKCE_COOKIE_SECURE": "false",  # plain http on loopback
        "PKCE_REFRESH_MARGIN": "0",  # refresh once the access token has expired, not before
    }
    secret = client.app_secret or client.secret
    if secret is not None:
        env["PKCE_CLIENT_SECRET"] = secret
    if client.auth_method != "client_secret_basic":
        env["PKCE_TOKEN_ENDPOINT_AUTH_METHOD"] = client.auth_method
    return env


def _plain_env(provider: Provider) -> dict[str, str]:
    """django-oauth-toolkit as a plain OAuth 2.0 provider, configured the way GitHub is (README,
    Recipes): its endpoints instead of an issuer, and the profile's number ``id`` as the user."""
    origin = urlsplit(provider.issuer)._replace(path="").geturl()
    return {
        "PKCE_AUTHORIZATION_ENDPOINT": f"{provider.issuer}/authorize/",
        "PKCE_TOKEN_ENDPOINT": f"{provider.issuer}/token/",
        "PKCE_USERINFO_ENDPOINT": f"{origin}/api/user",
        "PKCE_USER_ID_CLAIM": "id",
        "PKCE_SCOPES": "read",
    }


@pytest.fixture(scope="module", params=PROVIDERS)
def deployment(request: pytest.FixtureRequest) -> Iterator[Deployment]:
    name: str = request.param
    ports = {client.name: free_port() for client in _clients(name) if client.app}
    with _start_provider(name, ports) as provider, contextlib.ExitStack() as stack:
        servers = [
            AppServer(
                "uvicorn", "examples.starlette_app:app", ports[client.name], _env(provider, client, ports[client.name])
            )
            for client in _clients(name)
            if client.app
        ]
        stack.enter_context(serve_all(servers))
        sub: Callable[[str], str]
        if isinstance(provider, DjangoProvider):
            sub, login_path = provider.subject, "/accounts/login/"
        else:
            sub, login_path = (lambda user: user), "/interaction/"  # oidc-provider: sub is the name typed
        yield Deployment(
            name, provider, {client: f"http://127.0.0.1:{port}" for client, port in ports.items()}, sub, login_path
        )


def _browser() -> httpx.Client:
    return httpx.Client(headers=BROWSER_HEADERS, timeout=10.0)


def _login(deployment: Deployment, browser: httpx.Client, client: str, user: str) -> tuple[httpx.Response, list[str]]:
    page, visited = login_with_forms(browser, f"{deployment.apps[client]}/", user)
    assert page.status_code == 200, f"{deployment.name}: {page.status_code} at {page.url}\n{page.text[:1000]}"
    assert page.text.startswith("<!doctype html><title>pkce_middleware demo</title>")
    assert f"<p>hello {deployment.sub(user)}</p>" in page.text
    return page, visited


def _signed_out(deployment: Deployment, browser: httpx.Client, client: str) -> None:
    """No session: a page load is sent to the provider again."""
    response = browser.get(f"{deployment.apps[client]}/")
    assert response.status_code == 302
    assert response.headers["location"].startswith(deployment.provider.metadata["authorization_endpoint"])


def _callback_of(deployment: Deployment, browser: httpx.Client, client: str, user: str) -> str:
    """The provider's redirect back to the app after login and consent, not yet followed."""
    callback = f"{deployment.apps[client]}/auth/callback"
    final, _ = login_with_forms(browser, f"{deployment.apps[client]}/", user, stop_at=callback)
    assert final.status_code in (302, 303), f"{deployment.name}: {final.status_code}\n{final.text[:1000]}"
    location: str = final.headers["location"]
    assert location.startswith(callback + "?")
    return location


def _with_param(url: str, name: str, change: Callable[[str], str]) -> str:
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    query[name] = [change(query[name][0])]
    return urlunsplit(parts._replace(query=urlencode(query, doseq=True)))


def _assert_error_page(response: httpx.Response, status: int, reason: str) -> None:
    assert response.status_code == status, response.text[:1000]
    assert response.headers["content-type"].startswith("text/html")
    assert f"<code>reason: {reason}</code>" in response.text


def _jwt_claims(token: str) -> Any:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


# -- login ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("client", ["confidential", "public"])
def test_login_through_the_providers_forms(deployment: Deployment, client: str) -> None:
    """Login, consent and the callback land on the app's page as the user, with PKCE (S256).

    Confidential clients use client_secret_basic, public ones none. RFC 9207's ``iss`` comes back
    exactly when discovery promises it: oidc-provider and django-oauth-toolkit (with
    ``COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS``) send it, django-oidc-provider neither promises
    nor sends it. ``sub`` is the user name at oidc-provider, the user's primary key at the Django ones.
    """
    user = {"confidential": "ada", "public": "bea"}[client]
    codes = deployment.grants("authorization_code", client)
    with _browser() as browser:
        first = browser.get(f"{deployment.apps[client]}/me")
        assert first.status_code == 302
        authorize = urlsplit(first.headers["location"])
        assert first.headers["location"].startswith(deployment.provider.metadata["authorization_endpoint"])
        query = parse_qs(authorize.query)
        assert query["code_challenge_method"] == ["S256"] and query["response_type"] == ["code"]

        _, visited = _login(deployment, browser, client, user)
        assert deployment.login_form_shown(visited)
        app = deployment.apps[client]
        callbacks = [parse_qs(urlsplit(url).query) for url in visited if url.startswith(f"{app}/auth/")]
        assert len(callbacks) == 1 and "code" in callbacks[0]
        iss_promised = deployment.provider.metadata.get("authorization_response_iss_parameter_supported") is True
        assert iss_promised == (deployment.name != "django-oidc-provider")
        assert callbacks[0].get("iss") == ([deployment.provider.issuer] if iss_promised else None)
        assert deployment.grants("authorization_code", client) == codes + 1

        me = browser.get(f"{deployment.apps[client]}/me")
        assert me.status_code == 200
        claims = me.json()["claims"]
        assert me.json()["sub"] == deployment.sub(user)
        assert claims["iss"] == deployment.provider.issuer and claims["aud"] == client
        assert claims["preferred_username"] == user


# -- refresh --------------------------------------------------------------------------------------


def test_a_request_after_the_access_token_expired_refreshes_it(deployment: Deployment) -> None:
    """All three issue refresh tokens with the authorization code (oidc-provider because the client
    has the refresh_token grant, the Django ones always) and answer the refresh_token grant with a
    new access token and ID token; the session goes on as the same user."""
    with _browser() as browser:
        _login(deployment, browser, "confidential", "cyd")
        before = browser.get(f"{deployment.apps['confidential']}/me").json()["claims"]
        refreshes = deployment.grants("refresh_token", "confidential")
        time.sleep(TTL + 0.3)
        me = browser.get(f"{deployment.apps['confidential']}/me")
        refreshed_at = time.monotonic()
        assert me.status_code == 200 and me.json()["sub"] == deployment.sub("cyd")
        assert deployment.grants("refresh_token", "confidential") == refreshes + 1
        after = me.json()["claims"]
        assert after["iat"] > before["iat"] and after["auth_time"] == before["auth_time"]
        # The refreshed session was kept (a rotated refresh token used twice would end it), and
        # while its new access token lives the next request refreshes nothing.
        assert browser.get(f"{deployment.apps['confidential']}/").status_code == 200
        if time.monotonic() - refreshed_at < TTL - 1:
            assert deployment.grants("refresh_token", "confidential") == refreshes + 1


def test_a_second_login_of_the_same_user_and_the_first_sessions_next_refresh(deployment: Deployment) -> None:
    """Two browsers, one user: what the first session's refresh brings after the second login.

    oidc-provider keeps each login's ``auth_time`` in its refreshed ID tokens, so both sessions go
    on. django-oauth-toolkit and django-oidc-provider take ``auth_time`` from the user's
    ``last_login``, so the first session's refreshed ID token carries the second login's time,
    against OIDC Core 1.0 section 12.2 ("the time of the original authentication"). The
    middleware tolerates a later ``auth_time`` (never an earlier one) and keeps the session's own,
    so at all three providers both sessions go on, each with its original login time.
    """
    app = deployment.apps["confidential"]
    with _browser() as first, _browser() as second:
        _login(deployment, first, "confidential", "dan")
        first_auth_time = first.get(f"{app}/me").json()["claims"]["auth_time"]
        time.sleep(1.05 - time.time() % 1)  # the second login in a later second: auth_time counts seconds
        _login(deployment, second, "confidential", "dan")
        assert second.get(f"{app}/me").json()["claims"]["auth_time"] > first_auth_time
        refreshes = deployment.grants("refresh_token", "confidential")
        time.sleep(TTL + 0.3)

        again = first.get(f"{app}/me")
        assert deployment.grants("refresh_token", "confidential") == refreshes + 1
        assert second.get(f"{app}/").status_code == 200
        assert deployment.grants("refresh_token", "confidential") == refreshes + 2
        assert again.status_code == 200 and again.json()["claims"]["auth_time"] == first_auth_time


# -- logout ---------------------------------------------------------------------------------------


def test_rp_initiated_logout_ends_both_sessions(deployment: Deployment) -> None:
    """All three offer RP-initiated logout (``end_session_endpoint``); the middleware sends
    ``id_token_hint``, ``client_id``, ``post_logout_redirect_uri`` and ``state``.

    oidc-provider and django-oauth-toolkit ask the user to confirm (a form); django-oidc-provider
    logs out at once when the hint's client registered that ``post_logout_redirect_uri``. Each then
    sends the browser back to the app's logout page, which says the user is signed out. The provider
    session is over too: the next login shows the provider's login form again.
    """
    app = deployment.apps["confidential"]
    end_session = deployment.provider.metadata["end_session_endpoint"]
    with _browser() as browser:
        _login(deployment, browser, "confidential", "eve")
        landing, visited = logout_with_forms(browser, f"{app}/auth/logout", app)
        at_provider = [url for url in visited if url.startswith(urlsplit(end_session)._replace(path="").geturl())]
        assert at_provider[0].startswith(end_session + "?")
        assert "id_token_hint" in parse_qs(urlsplit(at_provider[0]).query)
        confirmed = len(at_provider) > 1  # a confirmation form was submitted
        assert confirmed == (deployment.name != "django-oidc-provider")
        assert landing.status_code == 200 and "You are signed out" in landing.text
        assert urlsplit(str(landing.url)).path == "/auth/logout"
        _signed_out(deployment, browser, "confidential")

        _, visited = _login(deployment, browser, "confidential", "eve")
        assert deployment.login_form_shown(visited)


# -- refusals -------------------------------------------------------------------------------------


def test_a_wrong_client_secret_ends_in_the_error_page(deployment: Deployment) -> None:
    """The provider refuses the code redemption with ``invalid_client`` (401 at oidc-provider and
    django-oauth-toolkit, 400 at django-oidc-provider); the middleware shows its error page
    (``client_rejected``: a setting to fix, not a bad link) and starts no session."""
    with _browser() as browser:
        page, _ = login_with_forms(browser, f"{deployment.apps['wrong-secret']}/", "fay")
        _assert_error_page(page, 502, "client_rejected")
        assert deployment.grants("authorization_code", "wrong-secret", "invalid_client") == 1
        assert deployment.grants("authorization_code", "wrong-secret") == 0
        _signed_out(deployment, browser, "wrong-secret")


def test_a_tampered_state_ends_in_the_error_page(deployment: Deployment) -> None:
    """A callback whose ``state`` was changed has no flow of this browser (``flow_missing``): the
    code is never redeemed, no session starts, and the untouched callback still works afterwards."""
    with _browser() as browser:
        callback = _callback_of(deployment, browser, "confidential", "gus")
        codes = deployment.grants("authorization_code", "confidential")
        tampered = browser.get(
            _with_param(callback, "state", lambda state: state[:-1] + ("A" if state[-1] != "A" else "B"))
        )
        _assert_error_page(tampered, 400, "flow_missing")
        _signed_out(deployment, browser, "confidential")
        assert deployment.grants("authorization_code", "confidential") == codes

        genuine = browser.get(callback)
        assert genuine.status_code == 303
        assert f"hello {deployment.sub('gus')}" in browser.get(f"{deployment.apps['confidential']}/").text


def test_a_tampered_code_ends_in_the_error_page(deployment: Deployment) -> None:
    """The provider refuses an unknown code (``invalid_grant``); the middleware shows its error page
    (``code_rejected``) and starts no session."""
    with _browser() as browser:
        callback = _callback_of(deployment, browser, "confidential", "hal")
        refused = deployment.grants("authorization_code", "confidential", "invalid_grant")
        tampered = browser.get(
            _with_param(callback, "code", lambda code: code[:-2] + ("xy" if code[-2:] != "xy" else "yz"))
        )
        _assert_error_page(tampered, 400, "code_rejected")
        assert deployment.grants("authorization_code", "confidential", "invalid_grant") == refused + 1
        _signed_out(deployment, browser, "confidential")


# -- client authentication, plain OAuth 2.0 -------------------------------------------------------


def test_client_secrets_that_need_form_encoding(deployment: Deployment) -> None:
    """A secret with ``+/=:%&?`` works with client_secret_post everywhere; with client_secret_basic
    (the middleware's default) only where the provider decodes the credentials as RFC 6749 section
    2.3.1 says. oidc-provider and django-oauth-toolkit do; django-oidc-provider compares the
    still-encoded secret and answers ``invalid_client``, so its clients with such secrets need
    ``PKCE_TOKEN_ENDPOINT_AUTH_METHOD=client_secret_post``."""
    with _browser() as browser:
        _login(deployment, browser, "encoded-post", "ivy")
    with _browser() as browser:
        if deployment.name == "django-oidc-provider":
            page, _ = login_with_forms(browser, f"{deployment.apps['encoded-basic']}/", "ivy")
            _assert_error_page(page, 502, "client_rejected")
            assert deployment.grants("authorization_code", "encoded-basic", "invalid_client") == 1
        else:
            _login(deployment, browser, "encoded-basic", "ivy")
            assert deployment.grants("authorization_code", "encoded-basic") == 1


def test_a_plain_oauth2_authorization_without_openid(deployment: Deployment) -> None:
    """No ``openid`` scope, so no OpenID Connect: a plain OAuth 2.0 authorization code grant (PKCE).

    django-oauth-toolkit (a client without a signing algorithm, scope ``read``) and oidc-provider
    (a client with ``require_auth_time: false``, scope ``profile``) answer with an access token and
    a refresh token and no ID token. django-oidc-provider answers with an ``id_token`` all the same:
    a signed JWT with no claims at all. (The middleware asks for ``openid`` unless it is configured
    for a plain OAuth 2.0 provider: the tests below.)
    """
    scope = "read" if deployment.name == "django-oauth-toolkit" else "profile"
    client = next(client for client in CLIENTS if client.name == "plain")
    assert client.secret is not None
    with httpx.Client(timeout=10.0) as browser:
        token = authorization_code_with_forms(
            browser,
            deployment.provider.issuer,
            client.name,
            PLAIN_REDIRECT_URI,
            "ada",
            resource=None,
            scope=scope,
            client_secret=client.secret,
        )
    assert token["access_token"] and token["refresh_token"] and token["token_type"].lower() == "bearer"
    if deployment.name == "django-oidc-provider":
        assert _jwt_claims(token["id_token"]) == {}
    else:
        assert "id_token" not in token


# -- a plain OAuth 2.0 provider (django-oauth-toolkit with a GitHub-like profile endpoint) ---------

#: These tests need the profile endpoint, which only django-oauth-toolkit's project has: they take
#: the module's django-oauth-toolkit deployment (the same provider process as its other tests).
plain_provider_only = pytest.mark.parametrize("deployment", [PLAIN_PROVIDER], indirect=True)


def _plain_provider(deployment: Deployment) -> DjangoOAuthToolkitProvider:
    assert isinstance(deployment.provider, DjangoOAuthToolkitProvider)
    return deployment.provider


def _profile_reads(provider: DjangoProvider, client: str) -> list[tuple[str, str]]:
    """``(user name, token fingerprint)`` of each answer of the profile endpoint to ``client``'s tokens."""
    provider.sync_log()
    return [
        (fields[3], fields[4])
        for fields in (line.split() for line in provider.log_lines)
        if len(fields) == 5 and fields[:3] == ["DJOP", "profile", client]
    ]


def _issued(provider: DjangoProvider, client: str) -> list[tuple[str, str]]:
    """``(grant type, token fingerprint)`` of each access token the token endpoint issued to ``client``."""
    provider.sync_log()
    return [
        (fields[2], fields[4])
        for fields in (line.split() for line in provider.log_lines)
        if len(fields) == 5 and fields[:2] == ["DJOP", "issued"] and fields[3] == client
    ]


def _name(user: str) -> str:
    """The ``name`` of one of ``USERS`` (the profile endpoint's ``name``)."""
    return next(entry["name"] for entry in USERS if isinstance(entry, dict) and entry["username"] == user)


def _plain_login(deployment: Deployment, browser: httpx.Client, client: str, user: str) -> list[str]:
    """Sign in at a plain app: its page shows the user's number ``id`` (as a string) and name."""
    page, visited = login_with_forms(browser, f"{deployment.apps[client]}/", user)
    assert page.status_code == 200, f"{page.status_code} at {page.url}\n{page.text[:1000]}"
    assert f"<p>hello {_plain_provider(deployment).subject(user)}</p>" in page.text
    assert f"Signed in as <b>{_name(user)}</b> with scopes <code>read</code>" in page.text
    return visited


@plain_provider_only
def test_a_plain_oauth2_login_takes_the_user_from_the_profile_endpoint(deployment: Deployment) -> None:
    """With ``PKCE_AUTHORIZATION_ENDPOINT``, ``PKCE_TOKEN_ENDPOINT`` and ``PKCE_USERINFO_ENDPOINT``
    instead of ``PKCE_ISSUER`` (GitHub's recipe): no ``openid`` and no nonce, PKCE (S256) all the
    same; django-oauth-toolkit answers the code grant with an access token and no ID token, and the
    middleware reads ``GET /api/user`` with that very token (its fingerprint in the provider's log).
    The user is the profile's number ``id`` (the user's primary key), as a string, and ``/me``
    shows the profile as the user's claims.
    """
    provider = _plain_provider(deployment)
    app = deployment.apps["plain-app"]
    codes = deployment.grants("authorization_code", "plain-app")
    with _browser() as browser:
        first = browser.get(f"{app}/")
        assert first.status_code == 302
        assert first.headers["location"].startswith(f"{provider.issuer}/authorize/?")
        query = parse_qs(urlsplit(first.headers["location"]).query)
        assert query["scope"] == ["read"] and "nonce" not in query
        assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
        assert query["response_type"] == ["code"] and query["client_id"] == ["plain-app"]

        visited = _plain_login(deployment, browser, "plain-app", "jon")
        assert deployment.login_form_shown(visited)
        callbacks = [parse_qs(urlsplit(url).query) for url in visited if url.startswith(f"{app}/auth/")]
        assert len(callbacks) == 1 and "code" in callbacks[0] and "iss" not in callbacks[0]
        assert deployment.grants("authorization_code", "plain-app") == codes + 1
        grant, token = _issued(provider, "plain-app")[-1]
        assert grant == "authorization_code"
        assert [read for read in _profile_reads(provider, "plain-app") if read[0] == "jon"] == [("jon", token)]

        me = browser.get(f"{app}/me").json()
        assert me["sub"] == me["claims"]["sub"] == str(me["claims"]["id"])  # the profile's number id
        assert me["claims"]["login"] == "jon"

    # The profile endpoint is django-oauth-toolkit's token check's: nothing without a valid token.
    profile = _plain_env(provider)["PKCE_USERINFO_ENDPOINT"]
    assert httpx.get(profile, timeout=10.0).status_code == 403
    assert httpx.get(profile, headers={"Authorization": "Bearer nonsense"}, timeout=10.0).status_code == 403


@plain_provider_only
def test_a_plain_oauth2_session_refreshes_and_reads_the_profile_again(deployment: Deployment) -> None:
    """A request after the access token expired redeems the refresh token (django-oauth-toolkit
    issues one with every code grant, and rotates it) and reads the profile again with the new
    access token; it names the same user, so the session goes on as that user."""
    provider = _plain_provider(deployment)
    app = deployment.apps["plain-app"]
    with _browser() as browser:
        _plain_login(deployment, browser, "plain-app", "kim")
        login_token = _issued(provider, "plain-app")[-1][1]
        refreshes = deployment.grants("refresh_token", "plain-app")
        time.sleep(TTL + 0.3)

        page = browser.get(f"{app}/")
        refreshed_at = time.monotonic()
        assert page.status_code == 200
        assert f"<p>hello {provider.subject('kim')}</p>" in page.text and f"<b>{_name('kim')}</b>" in page.text
        assert deployment.grants("refresh_token", "plain-app") == refreshes + 1
        grant, token = _issued(provider, "plain-app")[-1]
        assert grant == "refresh_token" and token != login_token
        assert [read for read in _profile_reads(provider, "plain-app") if read[0] == "kim"] == [
            ("kim", login_token),
            ("kim", token),
        ]
        # The refreshed session was kept, and while its access token lives nothing is read again.
        assert browser.get(f"{app}/").status_code == 200
        if time.monotonic() - refreshed_at < TTL - 1:
            assert deployment.grants("refresh_token", "plain-app") == refreshes + 1
            assert len([read for read in _profile_reads(provider, "plain-app") if read[0] == "kim"]) == 2


@plain_provider_only
def test_signing_out_of_a_plain_oauth2_session_is_local(deployment: Deployment) -> None:
    """No end-session endpoint: the sign-out form ends the app's session (303 to ``/``) and sends
    nothing to the provider; the next page load goes to the authorization endpoint again, and the
    provider's own session lives on (the login after it shows no login form, only consent)."""
    provider = _plain_provider(deployment)
    app = deployment.apps["plain-app"]
    with _browser() as browser:
        _plain_login(deployment, browser, "plain-app", "lou")
        provider.sync_log()
        seen = len(provider.log_lines)
        out = browser.post(f"{app}/auth/logout", headers={"Origin": app})
        assert out.status_code == 303 and out.headers["location"] == "/"
        provider.sync_log()
        assert [line for line in provider.log_lines[seen:] if "/__djop_sync/" not in line] == []
        _signed_out(deployment, browser, "plain-app")

        visited = _plain_login(deployment, browser, "plain-app", "lou")
        assert not deployment.login_form_shown(visited)


@plain_provider_only
def test_a_wrong_client_secret_at_a_plain_oauth2_provider_ends_in_the_error_page(deployment: Deployment) -> None:
    """django-oauth-toolkit refuses the code redemption (``invalid_client``); the middleware shows
    its error page (``client_rejected``), reads no profile and starts no session."""
    provider = _plain_provider(deployment)
    with _browser() as browser:
        page, _ = login_with_forms(browser, f"{deployment.apps['plain-wrong-secret']}/", "max")
        _assert_error_page(page, 502, "client_rejected")
        assert deployment.grants("authorization_code", "plain-wrong-secret", "invalid_client") == 1
        assert deployment.grants("authorization_code", "plain-wrong-secret") == 0
        assert _issued(provider, "plain-wrong-secret") == [] and _profile_reads(provider, "plain-wrong-secret") == []
        _signed_out(deployment, browser, "plain-wrong-secret")


@plain_provider_only
def test_a_plain_oauth2_provider_that_sends_iss_is_held_to_it(deployment: Deployment) -> None:
    """django-oauth-toolkit as configured here sends RFC 9207 ``iss`` (its issuer) in every
    authorization response, plain OAuth 2.0 clients' included. With ``PKCE_ISSUER`` beside the
    endpoints (no discovery: only the issuer ``iss`` must name), the login goes through."""
    provider = _plain_provider(deployment)
    app = deployment.apps["plain-iss"]
    with _browser() as browser:
        page, visited = login_with_forms(browser, f"{app}/", "ned")
        callbacks = [parse_qs(urlsplit(url).query) for url in visited if url.startswith(f"{app}/auth/")]
        assert len(callbacks) == 1 and callbacks[0]["iss"] == [provider.issuer]
        assert page.status_code == 200 and "hello" in page.text
        assert len(_issued(provider, "plain-iss")) == 1 and len(_profile_reads(provider, "plain-iss")) == 1
