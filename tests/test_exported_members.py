from __future__ import annotations

import types

import pkce_middleware


def test_all_lists_every_public_name() -> None:
    # Submodules (`testing`, `fastapi`) become attributes once imported, and pytest's assertion
    # rewriting (the package ships a pytest plugin) adds `@py_builtins`-style names: neither is API.
    public = sorted(
        (
            name
            for name, value in vars(pkce_middleware).items()
            if name.isidentifier()
            and not name.startswith("_")
            and name != "annotations"
            and not isinstance(value, types.ModuleType)
        ),
        key=str.casefold,
    )
    assert sorted(pkce_middleware.__all__, key=str.casefold) == public  # ruff (RUF022) keeps the order


def test_public_names_report_the_package_as_their_module() -> None:
    for name in pkce_middleware.__all__:
        assert getattr(pkce_middleware, name).__module__ == "pkce_middleware"
