"""A real OpenID Provider for tests: panva's oidc-provider run by ``provider/server.mjs``.

``LocalProvider`` starts and stops the Node process; ``login_with_forms`` and
``logout_with_forms`` play a browser against it (and against the app in front of it) over
real HTTP with a synchronous ``httpx.Client``. Every request of theirs is a navigation, as a
browser's address bar, redirects and form submissions are: it carries ``BROWSER_HEADERS``.

Needs ``node`` on PATH and ``provider/node_modules`` (``npm ci --prefix provider``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from pkce_middleware.testing import BROWSER_HEADERS
from tests.support.django_forms import answer_django_form
from tests.support.processes import REPO_ROOT, Process, ProviderLauncher

__all__ = [
    "PROVIDER_DIR",
    "LocalProvider",
    "login_with_forms",
    "logout_with_forms",
]

PROVIDER_DIR = REPO_ROOT / "provider"
SERVER_SCRIPT = "server.mjs"

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: The title of oidc-provider's form_post pages, which post themselves with a script.
_AUTO_SUBMIT = "<title>Submitting Callback</title>"


class LocalProvider(ProviderLauncher):
    """oidc-provider on 127.0.0.1, configured through ``OP_CONFIG`` (see provider/server.mjs).

    ``clients`` are oidc-provider client metadata dicts, ``ttl`` maps token kinds
    (AccessToken, ClientCredentials, IdToken, RefreshToken, AuthorizationCode, Session,
    Interaction, Grant) to seconds, and ``extra`` is merged last into OP_CONFIG for the remaining keys
    (``issuer``, ``conformIdTokenClaims``, ``backchannelLogout``, ``refreshTokens``,
    ``rotateRefreshToken``, ``accounts``, ``acrValues``, ``resourceServers``, ``dpopNonces``).
    Use as a context manager, or call ``start()``/``stop()`` (``ProviderLauncher``, which also has
    ``sync_log()``, ``grant_count()`` and ``wait_for_log()``).

    Claims and ACR of a login, for authorization tests:

    * ``accounts`` maps a user name (typed into the login form) to claim overrides, merged key by
      key over the defaults (sub, preferred_username, name, email ``<id>@example.test``,
      email_verified true); ``None`` removes a claim, ``sub`` cannot be overridden. E.g.
      ``{"gina": {"groups": ["admins"], "realm_access": {"roles": ["admin"]}},
      "nomail": {"email": None, "email_verified": None}}``. Scope ``groups`` releases
      ``groups``, ``realm_access`` and ``resource_access``.
    * The override key ``acr`` is the ACR of that user's logins (``None``: no acr), not a claim.
      Other users get the first of ``acrValues`` (also discovery's ``acr_values_supported``), or
      no acr when it is empty. The ID token carries the login's acr whether or not acr_values
      was sent.
    * ID tokens always carry ``auth_time``: clients without ``require_auth_time`` default to true.
      The flip side: oidc-provider refuses an authorization request without ``openid`` for such a
      client, so a pure OAuth client (scope ``api:read`` alone) must say
      ``"require_auth_time": False``.

    The provider is also the authorization server of protected APIs (``tests.support.oauth_clients``
    acts as their clients):

    * ``extra={"resourceServers": {indicator: {...}}}`` lists the APIs by resource indicator (an
      absolute URL, matched exactly): ``scope`` (their scopes, space separated),
      ``accessTokenFormat`` ``"jwt"`` (default; RFC 9068, ``typ`` at+jwt, ``aud`` = indicator,
      signed with ``jwtAlg`` RS256 or ES256 by a key in the JWKS) or ``"opaque"`` (introspect it),
      and ``accessTokenTTL`` (seconds). ``resource`` works on the authorization request, the code
      and refresh token redemptions and client_credentials; an unlisted one is ``invalid_target``.
      JWT ``sub`` is the user, or the client id for client_credentials tokens.
    * Always on: the client_credentials grant (client metadata ``grant_types:
      ["client_credentials"], response_types: [], redirect_uris: []``), introspection (a
      confidential client may introspect any client's opaque token; JWTs are refused with
      ``unsupported_token_type``), revocation (own tokens only) and DPoP (a ``DPoP`` proof on the
      token request binds the token: ``token_type`` DPoP, ``cnf.jkt``).
    * DPoP nonces are off unless ``extra={"dpopNonces": True}``.
    * ``introspections()`` and ``revocations()`` count those requests from the log.

    ``startup_timeout`` defaults to the launcher's (``tests.support.processes.startup_timeout``).
    A ``port`` given and taken ends in ``PortTaken``; a port picked here is picked again.
    """

    log_tag = "OPLOG"
    sync_path = "/__oplog_sync/"

    def __init__(
        self,
        clients: list[dict[str, Any]],
        *,
        port: int | None = None,
        ttl: dict[str, int] | None = None,
        extra: dict[str, Any] | None = None,
        startup_timeout: float | None = None,
    ) -> None:
        super().__init__(port=port, startup_timeout=startup_timeout)
        self._clients = clients
        self._ttl = ttl
        self._extra = dict(extra or {})
        self._node = ""

    @property
    def issuer(self) -> str:
        issuer = self._extra.get("issuer")
        return str(issuer) if issuer is not None else f"http://127.0.0.1:{self.port}"

    @property
    def config(self) -> dict[str, Any]:
        """The OP_CONFIG object the process gets."""
        config: dict[str, Any] = {"port": self.port, "clients": self._clients}
        if self._ttl is not None:
            config["ttl"] = self._ttl
        config.update(self._extra)
        return config

    def _prepare(self) -> None:
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node is not on PATH; the test provider needs Node.js")
        if not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
            raise RuntimeError(
                f"{PROVIDER_DIR / 'node_modules'} is missing oidc-provider; "
                "run `npm ci --prefix provider` in the repository root first"
            )
        self._node = node

    def _port_attempts(self) -> int:
        # A configured issuer holds the port: another one would not match it.
        return 1 if "issuer" in self._extra else super()._port_attempts()

    def _launch(self) -> None:
        self.metadata = {}
        self._process = Process(
            [self._node, SERVER_SCRIPT],
            name=f"oidc-provider on port {self.port}",
            cwd=PROVIDER_DIR,
            env={
                "OP_CONFIG": json.dumps(self.config),
                "DEBUG": None,  # oidc-provider's debug output would drown the OPLOG lines
                "NO_COLOR": "1",
                # We hold node's stdin open; if this process dies without stop(), node sees EOF and exits.
                "OP_EXIT_ON_STDIN_EOF": "1",
            },
            stdin_pipe=True,
            ready_pattern=r"^OP READY ",
            ready_check=self._discovery_answers,
            startup_timeout=self._startup_timeout,
            stop_timeout=5.0,
        )
        self._process.start_and_wait()

    def events(self, name: str) -> list[list[str]]:
        """Fields after the name of each ``OPLOG event <name> ...`` line so far (after ``sync_log()``)."""
        self.sync_log()
        found: list[list[str]] = []
        for line in self.log_lines:
            fields = line.split()
            if fields[:3] == ["OPLOG", "event", name]:
                found.append(fields[3:])
        return found

    def authorizations(self) -> list[dict[str, str]]:
        """Each request to the authorization endpoint so far (after ``sync_log()``), in order.

        One dict per ``OPLOG authorize`` line, keys ``client_id``, ``prompt``, ``max_age`` and
        ``acr_values``: the values as the request sent them, ``"-"`` when absent or empty, and
        whitespace turned into ``_`` (``prompt=login consent`` reads ``"login_consent"``).
        """
        self.sync_log()
        found: list[dict[str, str]] = []
        for line in self.log_lines:
            fields = line.split()
            if len(fields) != 6 or fields[:2] != ["OPLOG", "authorize"]:
                continue
            entry = {"client_id": fields[2]}
            for field in fields[3:]:
                name, _, value = field.partition("=")
                entry[name] = value
            found.append(entry)
        return found

    def introspections(self, *, client_id: str | None = None, outcome: str | None = None) -> int:
        """Count introspection requests so far (``OPLOG introspection <client> <outcome>`` lines).

        ``outcome`` is ``"true"``/``"false"`` (the answer's ``active``) or the error code of a
        refused request (``"invalid_client"``, ``"unsupported_token_type"``, ...); ``None`` counts
        all. A resource server that caches introspection answers shows here how often it asked.
        Calls ``sync_log()`` first, like the other readers.
        """
        return self._count_requests("introspection", client_id, outcome)

    def revocations(self, *, client_id: str | None = None, outcome: str | None = None) -> int:
        """Count revocation requests so far (``OPLOG revocation <client> <ok|error code>``)."""
        return self._count_requests("revocation", client_id, outcome)

    def _count_requests(self, kind: str, client_id: str | None, outcome: str | None) -> int:
        self.sync_log()
        count = 0
        for line in self.log_lines:
            fields = line.split()
            if len(fields) != 4 or fields[:2] != ["OPLOG", kind]:
                continue
            if client_id is not None and fields[2] != client_id:
                continue
            if outcome is not None and fields[3] != outcome:
                continue
            count += 1
        return count


class _Form:
    def __init__(self, action: str, method: str, form_id: str | None) -> None:
        self.action = action
        self.method = method
        self.form_id = form_id
        self.fields: dict[str, str] = {}


class _FormParser(HTMLParser):
    """Collects forms and their hidden inputs.

    An input may sit outside its form and name it with ``form="<id>"``, so inputs are attached
    to forms after parsing. Typed fields and buttons are left out: their values are the caller's.
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[_Form] = []
        self.hidden_inputs: list[tuple[str | None, _Form | None, dict[str, str]]] = []
        self._current: _Form | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {key: value or "" for key, value in attrs}
        if tag == "form":
            self._current = _Form(
                attributes.get("action", ""),
                attributes.get("method", "get").lower(),
                attributes.get("id"),
            )
            self.forms.append(self._current)
        elif tag == "input" and attributes.get("type", "").lower() == "hidden" and "name" in attributes:
            self.hidden_inputs.append((attributes.get("form"), self._current, attributes))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


def _parse_forms(html: str) -> list[_Form]:
    parser = _FormParser()
    parser.feed(html)
    parser.close()
    by_id = {form.form_id: form for form in parser.forms if form.form_id}
    for form_ref, enclosing, attributes in parser.hidden_inputs:
        form = by_id.get(form_ref) if form_ref else enclosing
        if form is not None:
            form.fields[attributes["name"]] = attributes.get("value", "")
    return parser.forms


# A form handler looks at a non-redirect response and returns (method, url, data) to submit,
# or None when the response is not a page it knows how to answer (the walk then ends there).
_FormHandler = Callable[[httpx.Response], tuple[str, str, dict[str, str]] | None]


def _walk(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    data: Mapping[str, str] | None,
    headers: Mapping[str, str] | None,
    answer_form: _FormHandler,
    max_hops: int,
    stop_at: str | None = None,
    page_headers: Mapping[str, str] = BROWSER_HEADERS,
) -> tuple[httpx.Response, list[str]]:
    """Request ``url``, then follow redirects and submit forms like a browser.

    Every request carries ``page_headers`` (a browser's navigation: the first request, each
    redirect it follows, each form it submits); ``headers`` are added to the first one only.
    """
    visited: list[str] = []
    body: Mapping[str, str] | None = data
    request_headers: Mapping[str, str] = {**page_headers, **(headers or {})}
    for _ in range(max_hops + 1):
        visited.append(url)
        # follow_redirects per request, so a client built with it on still shows every hop.
        response = client.request(method, url, data=body, headers=request_headers, follow_redirects=False)
        if response.status_code in _REDIRECT_STATUSES:
            location = response.headers.get("location")
            if not location:
                raise AssertionError(f"{response.status_code} from {url} without Location")
            url = urljoin(str(response.url), location)
            if stop_at is not None and _same_endpoint(url, stop_at):
                return response, visited
            # Like browsers: 307/308 repeat the request, the others turn it into a GET.
            if response.status_code not in (307, 308):
                method, body = "GET", None
            request_headers = page_headers
            continue
        submission = answer_form(response)
        if submission is None or (stop_at is not None and _same_endpoint(submission[1], stop_at)):
            return response, visited
        method, url, body = submission
        request_headers = page_headers
    raise AssertionError(f"more than {max_hops} hops; visited:\n" + "\n".join(visited))


def _same_endpoint(url: str, endpoint: str) -> bool:
    """Whether ``url`` goes to ``endpoint``: same scheme, host, port and path; query ignored."""
    target, wanted = urlsplit(url), urlsplit(endpoint)
    return (target.scheme, target.netloc, target.path) == (wanted.scheme, wanted.netloc, wanted.path)


def _is_html(response: httpx.Response) -> bool:
    content_type: str = response.headers.get("content-type", "")
    return content_type.startswith("text/html")


def login_with_forms(
    client: httpx.Client,
    start_url: str,
    username: str,
    *,
    password: str = "anything",
    max_hops: int = 20,
    stop_at: str | None = None,
    headers: Mapping[str, str] = BROWSER_HEADERS,
) -> tuple[httpx.Response, list[str]]:
    """Log in like a browser: GET ``start_url`` and walk every redirect and provider form.

    The provider's devInteractions login form is answered with ``username``/``password`` and
    its consent form with "Continue"; forms are found by their hidden ``prompt`` input on
    ``/interaction/<uid>`` pages, so no uid is assumed. The Django providers' login and consent
    forms (``tests.support.django_providers``) are answered too (``tests.support.django_forms``).
    Cookies persist in ``client``'s jar;
    redirects are followed by hand whatever ``client.follow_redirects`` says.

    Returns ``(final_response, visited_urls)``: the first response that is neither a redirect
    nor a provider form (normally the app page after its callback), and every absolute URL
    requested, in order, starting with ``start_url`` (form POST targets included).
    Raises AssertionError when more than ``max_hops`` redirects and form posts follow the first
    request.

    ``stop_at`` (a redirect_uri) ends the walk at the first redirect to that endpoint (scheme,
    host, port and path; any query) without requesting it, for clients with no server behind
    their redirect_uri: the final response is then that redirect, its ``Location`` holds the code
    or the error, and ``visited`` leaves it out (with ``response_mode=form_post`` it is the
    self-submitting page whose form would post there).

    ``headers`` go with every request: by default ``BROWSER_HEADERS``, a page load, the only
    request the app answers without a session by sending the browser to the provider.
    """

    def answer(response: httpx.Response) -> tuple[str, str, dict[str, str]] | None:
        if response.status_code == 200 and _is_html(response) and _AUTO_SUBMIT in response.text:
            # oidc-provider's self-submitting form (a new account over another one's provider
            # session ends that session first): a browser's script posts it at once.
            form = _parse_forms(response.text)[0]
            return "POST", urljoin(str(response.url), form.action or str(response.url)), dict(form.fields)
        if not (
            response.status_code == 200
            and _is_html(response)
            and urlsplit(str(response.url)).path.startswith("/interaction/")
        ):
            # The Django providers' login and consent forms (tests.support.django_op), else None.
            return answer_django_form(response, username, password)
        for form in _parse_forms(response.text):
            prompt = form.fields.get("prompt")
            action = urljoin(str(response.url), form.action or str(response.url))
            if prompt == "login":
                return "POST", action, {**form.fields, "login": username, "password": password}
            if prompt == "consent":
                return "POST", action, dict(form.fields)
        raise AssertionError(
            f"provider interaction page {response.url} has no login or consent form:\n{response.text[:2000]}"
        )

    return _walk(
        client,
        "GET",
        start_url,
        data=None,
        headers=None,
        answer_form=answer,
        max_hops=max_hops,
        stop_at=stop_at,
        page_headers=headers,
    )


def logout_with_forms(
    client: httpx.Client,
    app_logout_url: str,
    origin: str,
    *,
    method: str = "POST",
    max_hops: int = 20,
) -> tuple[httpx.Response, list[str]]:
    """Log out like a browser: POST ``app_logout_url`` with ``Origin: origin`` and walk on.

    Every request carries ``BROWSER_HEADERS``, as a browser's form submission and redirects do.

    ``method="GET"`` starts at a page instead, e.g. the provider's own end_session endpoint.

    The app is expected to redirect to the provider's end_session endpoint; its confirm page
    (the form carrying a hidden ``xsrf``) is submitted with ``logout=yes``, which ends the
    provider session and redirects to the client's post_logout_redirect_uri. The Django
    providers' logout confirmations are submitted with their ``allow`` button.

    Returns ``(final_response, visited_urls)`` like ``login_with_forms``: the first response
    that is neither a redirect nor the confirm page, and every URL requested, in order.
    """

    def answer(response: httpx.Response) -> tuple[str, str, dict[str, str]] | None:
        if not (response.status_code == 200 and _is_html(response)):
            return None
        for form in _parse_forms(response.text):
            if "xsrf" in form.fields:
                action = urljoin(str(response.url), form.action or str(response.url))
                return "POST", action, {**form.fields, "logout": "yes"}
        # The Django providers' logout confirmations (tests.support.django_op), else None.
        return answer_django_form(response, None, None)

    return _walk(
        client,
        method,
        app_logout_url,
        data=None,
        headers={"Origin": origin},
        answer_form=answer,
        max_hops=max_hops,
    )
