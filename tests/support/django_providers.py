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
import secrets
import sys
import tempfile
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, ClassVar, Self

import httpx

from tests.support.processes import REPO_ROOT, PortTaken, Process, free_port

__all__ = ["DjangoOAuthToolkitProvider", "DjangoOIDCProvider", "DjangoProvider"]

DEFAULT_PASSWORD = "anything"


class DjangoProvider:
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

    def __init__(
        self,
        clients: list[dict[str, Any]],
        *,
        users: Sequence[str | Mapping[str, str]] = (),
        port: int | None = None,
        access_token_ttl: int | None = None,
        startup_timeout: float | None = None,
    ) -> None:
        self._clients = clients
        self._users = [
            {"password": DEFAULT_PASSWORD, **({"username": user} if isinstance(user, str) else user)} for user in users
        ]
        self._access_token_ttl = access_token_ttl
        self._fixed_port = port
        self._startup_timeout = startup_timeout
        self.port: int = port if port is not None else free_port()
        self.metadata: dict[str, Any] = {}
        self._process: Process | None = None
        self._data_dir: tempfile.TemporaryDirectory[str] | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(port={self.port})"

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
    def log_lines(self) -> list[str]:
        """Every line the provider printed so far (of its last start; kept after ``stop()``)."""
        return [] if self._process is None else self._process.lines

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

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Self:
        """Start the process and return once discovery answers 200; RuntimeError otherwise."""
        if self.running:
            raise RuntimeError(f"{self!r} already started")
        attempts = 3 if self._fixed_port is None else 1
        for attempt in range(attempts):
            try:
                self._launch()
            except PortTaken:
                if attempt == attempts - 1:
                    raise
                self.port = free_port()
            else:
                return self
        raise AssertionError("unreachable")

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

    def _discovery_answers(self) -> str | None:
        discovery = f"{self.issuer}/.well-known/openid-configuration"
        try:
            response = httpx.get(discovery, timeout=2.0)
        except httpx.TransportError as exc:
            return f"{discovery}: {exc!r}"
        if response.status_code != 200:
            return f"{discovery}: HTTP {response.status_code}"
        self.metadata = response.json()
        return None

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the process, kill it if it is still alive after ``timeout`` seconds; drop its database."""
        if self._process is not None:
            self._process.stop(timeout)
        self._cleanup()

    def _cleanup(self) -> None:
        if self._data_dir is not None:
            self._data_dir.cleanup()
            self._data_dir = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running

    def sync_log(self, timeout: float = 5.0) -> None:
        """Wait until ``log_lines`` holds everything logged before this call (see ``LocalProvider.sync_log``)."""
        if not self.running:
            return
        marker = f"/__djop_sync/{secrets.token_hex(8)}"
        try:
            httpx.get(f"http://127.0.0.1:{self.port}{marker}", timeout=timeout)
        except httpx.TransportError as exc:
            raise RuntimeError(f"provider did not answer the log sync request: {exc!r}") from exc
        assert self._process is not None
        self._process.wait_for_line(lambda line: line.startswith(f"DJOP GET {marker} "), timeout=timeout)

    def grant_count(self, grant_type: str, outcome: str = "ok", client_id: str | None = None) -> int:
        """Count token endpoint requests (``DJOP grant <type> <client> <ok|error>`` lines), after ``sync_log()``."""
        self.sync_log()
        count = 0
        for line in self.log_lines:
            fields = line.split()
            if len(fields) != 5 or fields[:2] != ["DJOP", "grant"]:
                continue
            if fields[2] != grant_type or fields[4] != outcome:
                continue
            if client_id is not None and fields[3] != client_id:
                continue
            count += 1
        return count


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
