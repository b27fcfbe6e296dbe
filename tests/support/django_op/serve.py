"""Migrate, seed and serve the provider of `DJOP_CONFIG` (see the package docstring).

DJOP_CONFIG='{"kind": "dot", "port": 9000, "data_dir": "/tmp/x", ...}' python -m tests.support.django_op.serve
"""

from __future__ import annotations

import json
import os
import sys
from importlib.metadata import version
from typing import Any

PACKAGES = {"dot": "django-oauth-toolkit", "dop": "django-oidc-provider"}
MOUNTS = {"dot": "/o", "dop": "/openid"}


def main() -> None:
    config: dict[str, Any] = json.loads(os.environ["DJOP_CONFIG"])
    kind = config["kind"]
    if kind not in PACKAGES:
        sys.exit(f"DJOP CONFIG ERROR: kind must be one of {sorted(PACKAGES)}, not {kind!r}")
    os.environ["DJANGO_SETTINGS_MODULE"] = f"tests.support.django_op.settings_{kind}"

    import django
    import uvicorn
    from django.core.asgi import get_asgi_application
    from django.core.management import call_command

    from tests.support.django_op.log import say

    django.setup()
    say("VERSION", PACKAGES[kind], version(PACKAGES[kind]), "django", django.__version__)
    call_command("migrate", verbosity=0, interactive=False)
    _create_users(config.get("users", []))
    (_create_dot_clients if kind == "dot" else _create_dop_clients)(config.get("clients", []))
    application = get_asgi_application()
    issuer = f"http://127.0.0.1:{config['port']}{MOUNTS[kind]}"
    say("READY", issuer)  # the launcher waits for discovery to answer as well
    uvicorn.run(application, host="127.0.0.1", port=int(config["port"]), lifespan="off", log_level="warning")


def _create_users(users: list[dict[str, Any]]) -> None:
    from django.contrib.auth import get_user_model

    from tests.support.django_op.log import say

    model = get_user_model()
    for user in users:
        created = model.objects.create_user(
            username=user["username"],
            email=user.get("email", f"{user['username']}@example.test"),
            password=user["password"],
            first_name=user.get("name", user["username"]),
        )
        say("USER", created.username, created.pk)


def _wants(client: dict[str, Any], grant: str) -> bool:
    return grant in client.get("grant_types", ["authorization_code", "refresh_token"])


def _create_dot_clients(clients: list[dict[str, Any]]) -> None:
    from oauth2_provider.models import get_application_model

    application = get_application_model()
    for client in clients:
        secret = client.get("client_secret")
        application.objects.create(
            client_id=client["client_id"],
            name=client["client_id"],
            client_type=application.CLIENT_PUBLIC if secret is None else application.CLIENT_CONFIDENTIAL,
            client_secret=secret or "",
            hash_client_secret=True,
            authorization_grant_type=application.GRANT_AUTHORIZATION_CODE
            if _wants(client, "authorization_code")
            else application.GRANT_CLIENT_CREDENTIALS,
            redirect_uris=" ".join(client.get("redirect_uris", [])),
            post_logout_redirect_uris=" ".join(client.get("post_logout_redirect_uris", [])),
            skip_authorization=bool(client.get("skip_consent", False)),
            algorithm=application.RS256_ALGORITHM if client.get("openid", True) else application.NO_ALGORITHM,
        )


def _create_dop_clients(clients: list[dict[str, Any]]) -> None:
    from oidc_provider.models import Client, ResponseType, RSAKey

    from tests.support.django_op.common import RSA_PRIVATE_KEY_PEM

    RSAKey.objects.create(key=RSA_PRIVATE_KEY_PEM)
    code = ResponseType.objects.get(value="code")
    for client in clients:
        secret = client.get("client_secret")
        created = Client.objects.create(
            name=client["client_id"],
            client_id=client["client_id"],
            client_type="public" if secret is None else "confidential",
            client_secret=secret or "",
            jwt_alg="RS256",
            require_consent=not client.get("skip_consent", False),
            reuse_consent=False,
            _redirect_uris="\n".join(client.get("redirect_uris", [])),
            _post_logout_redirect_uris="\n".join(client.get("post_logout_redirect_uris", [])),
        )
        created.response_types.add(code)


if __name__ == "__main__":
    main()
