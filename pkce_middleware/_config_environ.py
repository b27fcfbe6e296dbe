"""`PKCEConfig`'s options read from the environment and listed for the README, both from the same
field metadata (environment variable, parser, help text), so the two cannot drift apart.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from starlette.config import Config

from ._config_values import _PARSERS, _show
from ._exceptions import ConfigError
from ._providers_config import _providers_from

__all__: list[str] = []


def values_from_environ(fields: Iterable[dataclasses.Field[Any]], environ: Mapping[str, str]) -> dict[str, Any]:
    """The constructor's arguments for the options set in `environ`, parsed (unset ones keep their default)."""
    fields = tuple(fields)
    config = Config(environ=environ)
    values: dict[str, Any] = {}
    for field in fields:
        env = field.metadata["env"]
        required = field.default is dataclasses.MISSING
        raw = config(env, default=None)
        if field.metadata["parse"] == "providers":
            if raw is not None and raw.strip():
                values[field.name] = _providers_from(config, raw, parsers={f.name: f.metadata["parse"] for f in fields})
            continue
        if raw is None or (raw.strip() == "" and not required):
            if required:
                hint = field.metadata["hint"]
                raise ConfigError(f"{env} is required but not set" + (f"; {hint}" if hint else "")) from None
            continue
        try:
            values[field.name] = _PARSERS[field.metadata["parse"]](raw)
        except ValueError:
            # The value itself is left out: it may be a secret.
            raise ConfigError(f"{env} is not a valid {field.metadata['parse']}") from None
    return values


def option_rows(fields: Iterable[dataclasses.Field[Any]]) -> list[tuple[str, str, str]]:
    """`(variable, default, description)` for each option, in declaration order."""
    rows = []
    for field in fields:
        if field.default is dataclasses.MISSING:
            default = "required"
        elif field.default is None:
            default = "unset"
        else:
            default = _show(field.default, field.metadata["parse"])
        rows.append((field.metadata["env"], default, field.metadata["help"]))
    return rows
