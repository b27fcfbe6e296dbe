"""Two more real OpenID Providers for tests, both Python: django-oauth-toolkit and django-oidc-provider.

``DjangoOAuthToolkitProvider`` and ``DjangoOIDCProvider`` start the Django project of
``tests.support.django_op`` (one process: migrations on a fresh sqlite database in a temporary
directory, then users, clients and keys from the configuration, then uvicorn on 127.0.0.1) and
stop it again; they have the shape of ``tests.support.oidc_provider.LocalProvider`` (context
manager, ``start()``/``stop()``, ``issuer``, ``metadata``, ``log_lines``, ``grant_count``), so a test
can be parametrized over all three. ``login_with_forms`` and ``logout_with_forms`` of that module
answer these providers' forms too (``tests.support.django_forms``).

Unlike oidc-provider's devInteractions, the login form checks passwords: only the configured
``users`` can sign in (each with ``password``, ``"anything"`` by default, as ``login_with_forms``
types), and ``sub`` is the user's primary key (``subject(username)``), not the user name.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from tests.support.processes import REPO_ROOT, Process, ProviderLauncher

__all__ = ["DjangoOAuthToolkitProvider", "DjangoOIDCProvider", "DjangoProvider"]

DEFAULT_PASSWORD = "anything"


class DjangoProvider(ProviderLauncher):
    """One of the Django providers on 127.0.0.1 (see the subclasses), configured through ``DJOP_CONFIG``.

    ``clients`` are dicts as ``tests.support.django_op`` describes them (``client_id``,
    ``client_secret`` or none for a public client, ``redirect_uris``, ``post_logout_redirect_uris``,
    ``grant_types``, ``skip_consent``, ``openid``, ``authorization_response_iss``); ``users`` are
    user names, or dicts with ``username``, ``password``, ``email``, ``name``. ``access_token_ttl``
    is the access tokens' ``expires_in`` in seconds. ``startup_timeout`` defaults to the launcher's
    (``tests.support.processes.startup_timeout``). A ``port`` given and taken ends in
    ``PortTaken``; a port picked here is picked again.
    """

    #: ``kind`` in DJOP_CONFIG, the PyPI package, and where the project mounts it (the issuer's path).
    kind: ClassVar[str]
    package: ClassVar[str]
    mount: ClassVar[str]
    log_tag = "DJOP"
    sync_path = "/__djop_sync/"

    def __init__(
        self,
        clients: list[dict[str, Any]],
        *,
        users: Sequence[str | Mapping[str, str]] = (),
        port: int | None = None,
        access_token_ttl: int | None = None,
        startup_timeout: float | None = None,
    ) -> None:
        super().__init__(port=port, startup_timeout=startup_timeout)
        self._clients = clients
        self._users = [
            {"password": DEFAULT_PASSWORD, **({"username": user} if isinstance(user, str) else user)} for user in users
        ]
        self._access_token_ttl = access_token_ttl
        self._data_dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.mount}"

    def config(self, data_dir: str) -> dict[str, Any]:
        """The DJOP_CONFIG object the process gets."""
        config: dict[str, Any] = {
            "kind": self.kind,
            "port": self.port,
            "data_dir": data_dir,
            "users": self._users,
            "clients": self._clients,
        }
        if self._access_token_ttl is not None:
            config["access_token_ttl"] = self._access_token_ttl
        return config

    @property
    def version(self) -> str:
        """``"<package> <version> (Django <version>)"``, as the running process reported it."""
        for line in self.log_lines:
            fields = line.split()
            if fields[:2] == ["DJOP", "VERSION"] and len(fields) == 6:
                return f"{fields[2]} {fields[3]} (Django {fields[5]})"
        raise RuntimeError(f"{self!r} has not reported its version (not started?)")

    def subject(self, username: str) -> str:
        """The ``sub`` of ``username``'s ID tokens (the user's primary key)."""
        for line in self.log_lines:
            fields = line.split()
            if fields[:2] == ["DJOP", "USER"] and len(fields) == 4 and fields[2] == username:
                return fields[3]
        raise KeyError(f"{username!r} is not a user of {self!r}")

    def _launch(self) -> None:
        self.metadata = {}
        self._cleanup()
        self._data_dir = tempfile.TemporaryDirectory(prefix=f"djop-{self.kind}-")
        self._process = Process(
            [sys.executable, "-m", "tests.support.django_op.serve"],
            name=f"{self.package} on port {self.port}",
            cwd=REPO_ROOT,
            env={"DJOP_CONFIG": json.dumps(self.config(self._data_dir.name)), "PYTHONUNBUFFERED": "1"},
            ready_pattern=r"^DJOP READY ",
            ready_check=self._discovery_answers,
            startup_timeout=self._startup_timeout,
            stop_timeout=5.0,
        )
        try:
            self._process.start_and_wait()
        except BaseException:
            self._cleanup()
            raise

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM the process, kill it if it is still alive after ``timeout`` seconds; drop its database."""
        super().stop(timeout)
        self._cleanup()

    def _cleanup(self) -> None:
        if self._data_dir is not None:
            self._data_dir.cleanup()
            self._data_dir = None


class DjangoOAuthToolkitProvider(DjangoProvider):
    """django-oauth-toolkit in OIDC mode at ``/o`` (see ``tests.support.django_op``)."""

    kind = "dot"
    package = "django-oauth-toolkit"
    mount = "/o"


class DjangoOIDCProvider(DjangoProvider):
    """django-oidc-provider at ``/openid`` (see ``tests.support.django_op``)."""

    kind = "dop"
    package = "django-oidc-provider"
    mount = "/openid"
