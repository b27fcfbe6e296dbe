"""An agent that finds its own way to a token: `python -m examples.agent http://127.0.0.1:8000/mcp`.

What an MCP client does with a protected remote server (MCP authorization, RFC 9728, RFC 8707):

1. call the API without a token: 401, and `WWW-Authenticate: Bearer resource_metadata="..."`;
2. fetch that metadata: the `resource` to ask a token for (it must be the URL called, RFC 9728
   section 3.3), its `authorization_servers` and the scopes to ask for (`scopes_supported`);
3. read the authorization server's discovery document;
4. authorization code + PKCE (S256) with `resource=<the API>` as a public client
   (`--client-id`, registered at the provider with redirect URI `http://127.0.0.1:<port>/callback`):
   the user signs in in their browser, the code comes back to a loopback listener (RFC 8252);
5. call the API with the access token.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.server
import re
import secrets
import time
import webbrowser
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx


class Protected(NamedTuple):
    """What the API's 401 and metadata say: the token to get, and where."""

    resource: str
    authorization_server: str
    #: Space-separated scopes to ask for: the challenge's `scope`, else the metadata's `scopes_supported`.
    scope: str


def discover(api_url: str, client: httpx.Client) -> Protected:
    """Steps 1-2: the resource, its authorization server and scopes, from the API's own 401."""
    first = client.post(api_url, json={})
    if first.status_code != 401:
        raise SystemExit(f"expected a 401 from {api_url}, got {first.status_code}")
    challenge = first.headers.get("www-authenticate", "")
    found = re.search(r'resource_metadata="([^"]+)"', challenge)
    if found is None:
        raise SystemExit(f"no resource_metadata in the challenge: {challenge!r}")
    metadata = client.get(found.group(1)).raise_for_status().json()
    # RFC 9728 section 3.3: metadata named by a 401 must describe the URL that answered it, or a
    # server could send the agent (and the user's token) to anyone's authorization server.
    if metadata.get("resource") != api_url:
        raise SystemExit(f"the metadata is for {metadata.get('resource')!r}, not {api_url!r}")
    servers = metadata.get("authorization_servers")
    if not isinstance(servers, list) or not servers or not isinstance(servers[0], str):
        raise SystemExit("the metadata names no authorization server")
    asked = re.search(r'scope="([^"]*)"', challenge)
    scopes = asked.group(1).split() if asked else metadata.get("scopes_supported", [])
    return Protected(str(metadata["resource"]), servers[0], " ".join(str(scope) for scope in scopes))


def authorization_url(
    issuer: str, client_id: str, redirect_uri: str, resource: str, client: httpx.Client, *, scope: str = ""
) -> tuple[str, str, str, str]:
    """Steps 3-4a: where to send the user, with a fresh state and PKCE verifier; also the token endpoint.

    `scope` is what the API wants (`Protected.scope`); `openid` is added, so the sign-in is an
    OpenID Connect one, which every provider accepts.
    """
    discovery = client.get(f"{issuer.rstrip('/')}/.well-known/openid-configuration").raise_for_status().json()
    if discovery.get("issuer") != issuer:  # RFC 8414 section 3.3 / OpenID Discovery section 4.3
        raise SystemExit(f"the discovery document is for {discovery.get('issuer')!r}, not {issuer!r}")
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    state = secrets.token_urlsafe(24)
    query = urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": " ".join(["openid", *(name for name in scope.split() if name != "openid")]),
            "resource": resource,
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    return f"{discovery['authorization_endpoint']}?{query}", str(discovery["token_endpoint"]), state, verifier


def redeem(
    token_endpoint: str,
    code: str,
    *,
    client_id: str,
    redirect_uri: str,
    verifier: str,
    resource: str,
    client: httpx.Client,
) -> dict[str, Any]:
    """Step 4b: the code for an access token for `resource`."""
    answer = client.post(
        token_endpoint,
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": client_id,
            "code_verifier": verifier,
            "resource": resource,
        },
    )
    return dict(answer.raise_for_status().json())


class CallbackListener:
    """Step 4's loopback listener (RFC 8252 section 7.3) on 127.0.0.1:`port`: bound as soon as it is
    made, before the browser is sent anywhere, so a quick redirect cannot find the port closed."""

    def __init__(self, port: int) -> None:
        callbacks: list[dict[str, str]] = []

        class Callback(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                target = urlsplit(self.path)
                if target.path == "/callback":
                    callbacks.append({name: values[0] for name, values in parse_qs(target.query).items()})
                self.send_response(200 if target.path == "/callback" else 404)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"You can close this tab and return to the agent.")

            def log_message(self, *args: object) -> None:
                pass

        self._callbacks = callbacks
        self._server = http.server.HTTPServer(("127.0.0.1", port), Callback)
        self.redirect_uri = f"http://127.0.0.1:{self._server.server_port}/callback"

    def __enter__(self) -> CallbackListener:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.server_close()

    def wait_for_code(self, state: str, *, timeout: float = 300.0) -> str:
        """The `code` of the first callback that carries `state` (the provider's `error` is a
        `SystemExit`); other requests (a favicon, a stale tab) are answered and ignored."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            self._server.timeout = remaining
            self._server.handle_request()
            for callback in self._callbacks:
                if callback.get("state") != state:
                    continue
                if "code" in callback:
                    return callback["code"]
                error = f"{callback.get('error', 'no code')} {callback.get('error_description', '')}"
                raise SystemExit(f"the sign-in failed: {error.rstrip()}")
        raise SystemExit(f"no authorization code came back within {timeout:.0f} seconds")


def main() -> None:
    parser = argparse.ArgumentParser(description="An MCP-style agent: find the API's provider, get a token, call.")
    parser.add_argument("api_url")
    parser.add_argument("--client-id", default="agent")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    with httpx.Client(timeout=10) as client, CallbackListener(args.port) as listener:
        protected = discover(args.api_url, client)
        url, token_endpoint, state, verifier = authorization_url(
            protected.authorization_server,
            args.client_id,
            listener.redirect_uri,
            protected.resource,
            client,
            scope=protected.scope,
        )
        print(f"Sign in here: {url}")
        webbrowser.open(url)
        code = listener.wait_for_code(state)
        token = redeem(
            token_endpoint,
            code,
            client_id=args.client_id,
            redirect_uri=listener.redirect_uri,
            verifier=verifier,
            resource=protected.resource,
            client=client,
        )
        answer = client.post(args.api_url, json={}, headers={"Authorization": f"Bearer {token['access_token']}"})
        print(answer.status_code, answer.json())


if __name__ == "__main__":
    main()
