"""`make demo`: the Starlette example behind PKCEMiddleware, against a local OpenID Provider.

Starts panva's oidc-provider (provider/server.mjs) and the app on 127.0.0.1, prints the URL,
and runs until Ctrl-C. Any user name and password log in at the provider's dev login form.
Ports: DEMO_APP_PORT (8000) and DEMO_OP_PORT (4000).
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

import uvicorn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the provider launcher is shared with the test suite
sys.path.insert(0, str(ROOT))

from oidc_provider import LocalProvider  # noqa: E402


def main() -> None:
    app_port = int(os.environ.get("DEMO_APP_PORT", "8000"))
    op_port = int(os.environ.get("DEMO_OP_PORT", "4000"))
    app_url = f"http://127.0.0.1:{app_port}"
    client_secret = secrets.token_urlsafe(24)
    client = {
        "client_id": "demo",
        "client_secret": client_secret,
        "redirect_uris": [f"{app_url}/auth/callback"],
        "post_logout_redirect_uris": [f"{app_url}/auth/logout"],
        "grant_types": ["authorization_code", "refresh_token"],
    }
    with LocalProvider([client], port=op_port) as provider:
        os.environ.update(
            {
                "PKCE_ISSUER": provider.issuer,
                "PKCE_CLIENT_ID": "demo",
                "PKCE_CLIENT_SECRET": client_secret,
                "PKCE_SECRET_KEY": secrets.token_urlsafe(32),
                "PKCE_REDIRECT_URI": f"{app_url}/auth/callback",
                "PKCE_PUBLIC_PATHS": "/health",
                # Plain http on loopback only; never turn this off in production.
                "PKCE_COOKIE_SECURE": "false",
            }
        )
        print(
            f"\n  Provider: {provider.issuer}\n"
            f"  Open {app_url}/ in a browser.\n"
            f"  Log in with ANY user name and ANY password, then press Continue on the consent page.\n"
            f"  Ctrl-C stops both.\n",
            flush=True,
        )
        uvicorn.run("examples.starlette_app:app", host="127.0.0.1", port=app_port, log_level="info")


if __name__ == "__main__":
    main()
