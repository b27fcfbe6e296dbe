"""Several providers (`PKCE_PROVIDERS`): `ProviderConfig`, the options one provider may set for
itself (`PROVIDER_OPTIONS`), and reading them from `PKCE_PROVIDER_<NAME>_<OPTION>` variables.

`PKCEConfig` (in `_config.py`) checks the providers and makes one configuration per provider; this
module does not import it, so the field parsers are passed in.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.config import Config

from ._config_values import _PARSERS
from ._exceptions import ConfigError

if TYPE_CHECKING:  # typeshed's protocol of dataclass instances, not a module of this package
    from _typeshed import DataclassInstance

__all__ = ["PROVIDER_OPTIONS", "ProviderConfig"]


#: What one provider of several sets for itself: `PKCE_PROVIDER_<NAME>_<OPTION>`, OPTION being the
#: single-provider variable without `PKCE_`.
_Config = TypeVar("_Config", bound="DataclassInstance")

PROVIDER_OPTIONS = (
    "issuer",
    "client_id",
    "client_secret",
    "scopes",
    "token_endpoint_auth_method",
    "userinfo",
    "id_token_algorithms",
    "authorization_endpoint",
    "token_endpoint",
    "userinfo_endpoint",
    "user_id_claim",
)
_PROVIDER_NAME = re.compile(r"[a-z][a-z0-9]{0,31}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProviderConfig:
    """One of several providers (`PKCE_PROVIDERS`): its name (in `?provider=` and logs), the name
    people see on the choice page, and its own options (`PKCEConfig` field names of `PROVIDER_OPTIONS`)."""

    name: str
    display_name: str = ""
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def _providers_from(config: Config, raw: str, *, parsers: Mapping[str, str]) -> tuple[ProviderConfig, ...]:
    """Read `PKCE_PROVIDER_<NAME>_<OPTION>` for each name in `raw`; `parsers` maps each `PKCEConfig`
    field name to its parser's name (the field metadata's `parse`)."""
    providers = []
    for name in (item.strip() for item in raw.split(",")):
        if not name:
            continue
        prefix = f"PKCE_PROVIDER_{name.upper()}_"
        options: dict[str, Any] = {}
        for option in PROVIDER_OPTIONS:
            value = config(prefix + option.upper(), default=None)
            if value is None or not value.strip():
                continue
            parse = parsers[option]
            try:
                options[option] = _PARSERS[parse](value)
            except ValueError:
                raise ConfigError(f"{prefix}{option.upper()} is not a valid {parse}") from None
        display = config(prefix + "DISPLAY_NAME", default=None)
        providers.append(ProviderConfig(name=name, display_name=(display or "").strip(), options=options))
    return tuple(providers)


def per_provider(config: _Config, providers: Sequence[ProviderConfig]) -> tuple[tuple[str, str, _Config], ...]:
    """`(name, display name, configuration)` per provider: `config` with the provider's own options
    (`dataclasses.replace`, so each is checked as a whole configuration is). One, named "", without
    `PKCE_PROVIDERS`."""
    if not providers:
        return (("", "", config),)
    names = [provider.name for provider in providers]
    if len(set(names)) != len(names):
        raise ConfigError("PKCE_PROVIDERS names a provider twice")
    configs = []
    for provider in providers:
        if not _PROVIDER_NAME.fullmatch(provider.name):
            raise ConfigError(f"PKCE_PROVIDERS: {provider.name!r} is not a short lower-case name (a-z, 0-9)")
        unknown = set(provider.options) - set(PROVIDER_OPTIONS)
        if unknown:
            raise ConfigError(f"provider {provider.name!r}: no such per-provider option {sorted(unknown)}")
        try:
            # Bearer tokens come from the first provider only: the others need not be OpenID ones.
            overrides: dict[str, Any] = {"providers": (), **provider.options}
            if provider is not providers[0]:
                overrides.update(resource=None, bearer_paths=())
            own = dataclasses.replace(config, **overrides)
        except ConfigError as exc:
            # Name the variable this provider's value came from.
            detail = exc.detail
            for option in PROVIDER_OPTIONS:
                detail = re.sub(
                    rf"\bPKCE_{option.upper()}\b", f"PKCE_PROVIDER_{provider.name.upper()}_{option.upper()}", detail
                )
            raise ConfigError(detail) from None
        configs.append((provider.name, provider.display_name or provider.name, own))
    return tuple(configs)
