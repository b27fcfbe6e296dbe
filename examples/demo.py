"""`make demo` (or `python -m examples.demo` from the repository root): the Starlette example behind
PKCEMiddleware, against a local OpenID Provider.

Starts panva's oidc-provider (provider/server.mjs, the one the tests use) and the app on
127.0.0.1, prints the URL, and runs until Ctrl-C. Any user name and password log in at the
provider's dev login form.

Ports, from the environment:

    DEMO_PROVIDER_PORT   the provider's port (default 4000)
    DEMO_APP_PORT        the app's port (default 8000)

e.g. `DEMO_APP_PORT=8080 make demo`. A port that is taken ends the demo with a one-line message
naming the variable to set.

It also prints the provider's issuer, client id and client secret (new on every start), as the
PKCE_* variables an app of your own would need to log in at the same provider. The provider
accepts only the redirect URI it registered for the demo app, `http://127.0.0.1:<DEMO_APP_PORT>/auth/callback`.
"""

from __future__ import annotations

import os
import secrets
import sys

import uvicorn

from tests.support.oidc_provider import LocalProvider
from tests.support.processes import PortTaken, port_is_free

PROVIDER_PORT = "DEMO_PROVIDER_PORT"
APP_PORT = "DEMO_APP_PORT"
CLIENT_ID = "demo"


def _port(variable: str, default: int) -> int:
    raw = os.environ.get(variable, "").strip() or str(default)
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        sys.exit(f"{variable}={raw!r} is not a port number (1-65535)")
    return int(raw)


def _taken(port: int, variable: str, other: str) -> str:
    return f"port {port} is taken; set {variable}=<a free port> (or {other} for the other server)"


def main() -> None:
    app_port = _port(APP_PORT, 8000)
    provider_port = _port(PROVIDER_PORT, 4000)
    if app_port == provider_port:
        sys.exit(f"{APP_PORT} and {PROVIDER_PORT} are both {app_port}; give them different ports")
    # Checked before anything starts, so a taken port is one line, not a traceback.
    for port, variable, other in ((provider_port, PROVIDER_PORT, APP_PORT), (app_port, APP_PORT, PROVIDER_PORT)):
        if not port_is_free(port):
            sys.exit(_taken(port, variable, other))

    app_url = f"http://127.0.0.1:{app_port}"
    redirect_uri = f"{app_url}/auth/callback"
    client_secret = secrets.token_urlsafe(24)
    client = {
        "client_id": CLIENT_ID,
        "client_secret": client_secret,
        "redirect_uris": [redirect_uri],
        "post_logout_redirect_uris": [f"{app_url}/auth/logout"],
        "grant_types": ["authorization_code", "refresh_token"],
    }
    provider = LocalProvider([client], port=provider_port)
    try:
        provider.start()
    except PortTaken:  # taken between the check above and node's listen()
        sys.exit(_taken(provider_port, PROVIDER_PORT, APP_PORT))
    try:
        os.environ.update(
            {
                "PKCE_ISSUER": provider.issuer,
                "PKCE_CLIENT_ID": CLIENT_ID,
                "PKCE_CLIENT_SECRET": client_secret,
                "PKCE_SECRET_KEY": secrets.token_urlsafe(32),
                "PKCE_REDIRECT_URI": redirect_uri,
                "PKCE_PUBLIC_PATHS": "/health",
                # Plain http on loopback only; never turn this off in production.
                "PKCE_COOKIE_SECURE": "false",
            }
        )
        print(
            f"\n  Provider: {provider.issuer}\n"
            f"  Open {app_url}/ in a browser.\n"
            f"  Log in with ANY user name and ANY password, then press Continue on the consent page.\n"
            f"  Ctrl-C stops both. Other ports: {PROVIDER_PORT}=... {APP_PORT}=... make demo\n"
            f"\n"
            f"  To log in at this provider from an app of your own, configure it with\n"
            f"    PKCE_ISSUER={provider.issuer} PKCE_CLIENT_ID={CLIENT_ID} PKCE_CLIENT_SECRET={client_secret}\n"
            f"  (the secret is new on every start; the only redirect URI accepted is {redirect_uri}).\n",
            flush=True,
        )
        uvicorn.run("examples.starlette_app:app", host="127.0.0.1", port=app_port, log_level="info")
    finally:
        provider.stop()


if __name__ == "__main__":
    main()
