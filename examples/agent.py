"""An agent that finds its own way to a token: `python -m examples.agent http://127.0.0.1:8000/mcp`.

What an MCP client does with a protected remote server (MCP authorization, RFC 9728, RFC 8707):

1. call the API without a token: 401, and `WWW-Authenticate: Bearer resource_metadata="..."`;
2. fetch that metadata: the `resource` to ask a token for and its `authorization_servers`;
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
import threading
import webbrowser
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx


def discover(api_url: str, client: httpx.Client) -> tuple[str, str]:
    """Steps 1-2: the resource and its authorization server, from the API's own 401."""
    first = client.post(api_url, json={})
    if first.status_code != 401:
        raise SystemExit(f"expected a 401 from {api_url}, got {first.status_code}")
    challenge = first.headers.get("www-authenticate", "")
    found = re.search(r'resource_metadata="([^"]+)"', challenge)
    if found is None:
        raise SystemExit(f"no resource_metadata in the challenge: {challenge!r}")
    metadata = client.get(found.group(1)).raise_for_status().json()
    return str(metadata["resource"]), str(metadata["authorization_servers"][0])


def authorization_url(
    issuer: str, client_id: str, redirect_uri: str, resource: str, client: httpx.Client
) -> tuple[str, str, str, str]:
    """Steps 3-4a: where to send the user, with a fresh state and PKCE verifier."""
    discovery = client.get(f"{issuer.rstrip('/')}/.well-known/openid-configuration").raise_for_status().json()
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    state = secrets.token_urlsafe(24)
    query = urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": "openid",
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


def _wait_for_code(port: int, state: str) -> str:
    """The loopback listener: one request to /callback, its `code` once `state` matches."""
    received: dict[str, str] = {}

    class Callback(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = parse_qs(urlsplit(self.path).query)
            if query.get("state") == [state] and "code" in query:
                received["code"] = query["code"][0]
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"You can close this tab and return to the agent.")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", port), Callback)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    thread.join(timeout=300)
    server.server_close()
    if "code" not in received:
        raise SystemExit("no authorization code came back within 5 minutes")
    return received["code"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("api_url")
    parser.add_argument("--client-id", default="agent")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    redirect_uri = f"http://127.0.0.1:{args.port}/callback"
    with httpx.Client(timeout=10) as client:
        resource, issuer = discover(args.api_url, client)
        url, token_endpoint, state, verifier = authorization_url(issuer, args.client_id, redirect_uri, resource, client)
        print(f"Sign in here: {url}")
        webbrowser.open(url)
        code = _wait_for_code(args.port, state)
        token = redeem(
            token_endpoint,
            code,
            client_id=args.client_id,
            redirect_uri=redirect_uri,
            verifier=verifier,
            resource=resource,
            client=client,
        )
        answer = client.post(args.api_url, json={}, headers={"Authorization": f"Bearer {token['access_token']}"})
        print(answer.status_code, answer.json())


if __name__ == "__main__":
    main()
